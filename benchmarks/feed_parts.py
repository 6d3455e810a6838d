"""Two parts of the InputMode.SPARK feed measured alone, each against what it replaced, in one run.

``encode`` (one process, no Spark): MNIST rows as parsed from CSV (a list of 784 Python ints
and a label) through ``RowEncoder.encode`` in chunks of 4096 (the whole encoding: both columns, Arrow arrays),
against only the step the ``bytes()`` path replaced: ``np.array`` over the pixel lists and the
narrowing to uint8 (so the old side is a lower bound of what encoding cost before). Best of
``--repeats``, alternating.

``agree`` (Spark standalone cluster of 2 single-core workers): two barrier tasks exchanging
their shard sizes as the feed tasks do now (through the driver's progress server,
``exchange_sizes``) and as they did before (Spark's ``BarrierTaskContext.allGather``),
alternating, ``--repeats`` rounds each; the figure is the longer of the two tasks' waits.

    .venv/bin/python benchmarks/feed_parts.py encode
    .venv/bin/python benchmarks/feed_parts.py agree
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.feed_throughput import make_rows  # noqa: E402


def encode(opts: argparse.Namespace) -> None:
    from tfos.feed import arrow_codec as codec

    rows = list(make_rows(range(opts.rows)))
    chunks = [rows[i:i + 4096] for i in range(0, len(rows), 4096)]
    codec.RowEncoder(0).encode(chunks[0])  # first use of pyarrow in this process, not timed

    def now() -> None:
        enc = codec.RowEncoder(0)
        for chunk in chunks:
            enc.encode(chunk)

    def before() -> None:  # the dense path's conversion before bytes(): numpy infers and converts
        for chunk in chunks:
            dense = np.array([r[0] for r in chunk])
            dense.astype(np.result_type(np.min_scalar_type(dense.min()), np.min_scalar_type(dense.max())))

    best = {"RowEncoder.encode, whole (now)": [], "np.array + narrowing alone (before)": []}
    for _ in range(opts.repeats):
        for times, fn in zip(best.values(), (now, before), strict=True):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    print(f"{opts.rows:,} MNIST rows (784 Python ints + label), chunks of 4096, best of {opts.repeats}:")
    for name, times in best.items():
        print(f"  {name:<36} {min(times) / opts.rows * 1e6:6.1f} us/row")


def agree(opts: argparse.Namespace) -> None:
    from pyspark.sql import SparkSession

    from tests.spark_standalone import StandaloneCluster, spark_conf, wait_for_executors
    from tfos.feed.progress import ProgressServer

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    cluster = StandaloneCluster(workers=2, worker_memory="2g").start()
    try:
        builder = SparkSession.builder.appName("tfos-feed-parts-agree")
        for key, value in dict(spark_conf(cluster.master_url, 2), **{"spark.ui.showConsoleProgress": "false"}).items():
            builder = builder.config(key, value)
        sc = builder.getOrCreate().sparkContext
        sc.setLogLevel("ERROR")
        wait_for_executors(sc, 2, 180, cluster.log_dir)
        server = ProgressServer(sc.getConf().get("spark.driver.host"), {}, log=False)
        ways = {"driver exchange (now)": partial(_exchange_task, server.address),
                "barrier allGather (before)": _all_gather_task}
        waits: dict[str, list[float]] = {name: [] for name in ways}
        for round_ in range(opts.repeats):
            for name, task in ways.items():
                got = sc.parallelize(range(2), 2).barrier().mapPartitions(partial(task, f"r{round_}")).collect()
                assert sorted(sizes for sizes, _ in got)[0] == [[0], [1]], got
                waits[name].append(max(wait for _, wait in got))
        server.close()
        print(f"2 barrier tasks exchanging their shard sizes, {opts.repeats} rounds alternating; the longer "
              f"task's wait per round:")
        for name, secs in waits.items():
            print(f"  {name:<28} " + ", ".join(f"{s:.3f}s" for s in secs))
    finally:
        cluster.stop()


def _exchange_task(address, feed, _rows):
    from pyspark import BarrierTaskContext

    from tfos.feed.progress import exchange_sizes

    shard = BarrierTaskContext.get().partitionId()
    t = time.perf_counter()
    sizes = exchange_sizes(address, feed, shard, 2, [shard], 60)
    yield sizes, time.perf_counter() - t


def _all_gather_task(_feed, _rows):
    import json

    from pyspark import BarrierTaskContext

    context = BarrierTaskContext.get()
    t = time.perf_counter()
    sizes = [json.loads(x) for x in context.allGather(json.dumps([context.partitionId()]))]
    yield sizes, time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    enc = sub.add_parser("encode", help="RowEncoder vs np.array on MNIST rows")
    enc.add_argument("--rows", type=int, default=40_960)
    enc.add_argument("--repeats", type=int, default=5)
    agr = sub.add_parser("agree", help="feed tasks exchanging shard sizes: driver exchange vs barrier allGather")
    agr.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args(argv)
    {"encode": encode, "agree": agree}[opts.what](opts)


if __name__ == "__main__":
    main()
