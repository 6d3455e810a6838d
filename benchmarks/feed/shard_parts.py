"""The map side of training (``tfos.feed.sharding.shard_rows``) timed alone, in one process, against
what it replaced: MNIST-shaped rows (784 Python ints + label, made fresh as a cached RDD's read
gives them) cut into 4,096-row chunks, Arrow-encoded and split into 2 shards by rotation.

* ``iter_chunks + encode``: each chunk gathered, then encoded, with the garbage collector running
  as it does by default (``shard_rows`` before it used ``encoded_chunks``);
* ``shard_rows``: as now, each chunk gathered and encoded with the collector paused.

CPU microseconds per row (making the row included; printed alone too), alternating, every repeat.

    .venv/bin/python -m benchmarks.feed.shard_parts [--rows 40000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator

import numpy as np

from tfos.feed import arrow_codec as codec
from tfos.feed import sharding
from tfos.feed.chunking import ChunkSizer, iter_chunks
from tfos.feed.plans import ShardPlan


def make_rows(n: int) -> Callable[[], Iterator[tuple[list[int], int]]]:
    base = np.random.default_rng(0).integers(0, 256, size=(1000, 784)).tolist()

    def rows() -> Iterator[tuple[list[int], int]]:
        for i in range(n):
            yield list(base[i % 1000]), i % 10

    return rows


def before(plan: ShardPlan, rows: Iterator) -> list[tuple[int, int, bytes]]:
    encoder, sizer = codec.RowEncoder(0), ChunkSizer(plan.chunk_rows, plan.chunk_bytes)

    def located():
        for first, chunk in iter_chunks(rows, sizer):
            batch = encoder.encode(chunk, first)
            sizer.learn(batch)
            yield 0, first, batch

    return list(sharding.split_by_shard(plan, located()))


def now(plan: ShardPlan, rows: Iterator) -> list[tuple[int, int, bytes]]:
    return [(k, n, payload) for k, (_, n, payload) in sharding.shard_rows(plan, 0, rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40000)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    plan, rows = ShardPlan(0, 2), make_rows(opts.rows)
    for _ in range(opts.repeats):
        for name, split in (("iter_chunks + encode (before)", before), ("shard_rows (now)", now)):
            began = time.process_time()
            out = split(plan, rows())
            spent = time.process_time() - began
            assert sum(n for _, n, _ in out) == opts.rows
            print(f"{name}: {spent / opts.rows * 1e6:.1f} us CPU per row", flush=True)
    began = time.process_time()
    for _ in rows():
        pass
    print(f"making the rows alone: {(time.process_time() - began) / opts.rows * 1e6:.1f} us per row")


if __name__ == "__main__":
    main()
