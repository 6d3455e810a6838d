"""The Spark side of an inference task timed alone, in one process (no Spark cluster): MNIST rows
pickled as Spark caches them (``AutoBatchedSerializer``), read back, cut into chunks and encoded,
with the garbage collector's collections counted (``gc.callbacks``):

* ``unpickle alone``: Spark's read of the cached rows (what every path pays);
* ``iter_chunks + encode``: each chunk gathered, then encoded, with the collector running as it
  does by default (``infer_rows`` before ``encoded_chunks``);
* ``encoded_chunks``: each chunk gathered and encoded with the collector paused (``infer_rows`` now).

Best of ``--repeats``, alternating; microseconds per row.

    .venv/bin/python -m benchmarks.feed.inference_parts [--rows 30000] [--chunk-rows 4096]
"""

from __future__ import annotations

import argparse
import gc
import io
import time
from collections.abc import Callable

from benchmarks.feed.data import make_rows


class _Collections:
    """Collections per generation and the seconds they took, while installed in ``gc.callbacks``."""

    def __init__(self) -> None:
        self.runs = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._t = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.runs[info["generation"]] += 1
            self.seconds[info["generation"]] += time.perf_counter() - self._t


def main(argv: list[str] | None = None) -> None:
    from pyspark.serializers import AutoBatchedSerializer, CPickleSerializer

    from tfos.feed import arrow_codec as codec
    from tfos.feed.chunking import DEFAULT_CHUNK_BYTES, ChunkSizer, encoded_chunks, iter_chunks

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--chunk-rows", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args(argv)
    n = opts.rows
    ser = AutoBatchedSerializer(CPickleSerializer())
    buf = io.BytesIO()
    ser.dump_stream(make_rows(range(n)), buf)
    cached = buf.getvalue()

    def rows():
        return ser.load_stream(io.BytesIO(cached))

    def unpickle() -> None:
        for _ in rows():
            pass

    def before() -> None:
        encoder, sizer = codec.RowEncoder(0), ChunkSizer(opts.chunk_rows, DEFAULT_CHUNK_BYTES)
        for first, chunk in iter_chunks(rows(), sizer):
            batch = encoder.encode(chunk, first)
            sizer.learn(batch)
            codec.to_ipc(batch)

    def now() -> None:
        encoder = codec.RowEncoder(0)
        for batch in encoded_chunks(rows(), ChunkSizer(opts.chunk_rows, DEFAULT_CHUNK_BYTES), encoder.encode):
            codec.to_ipc(batch)

    ways: dict[str, Callable[[], None]] = {"unpickle alone": unpickle, "iter_chunks + encode (before)": before,
                                           "encoded_chunks (now)": now}
    best: dict[str, tuple[float, _Collections]] = {}
    before()  # first use of pyarrow in this process, not timed
    for _ in range(opts.repeats):
        for name, fn in ways.items():
            counter = _Collections()
            gc.callbacks.append(counter)
            try:
                t = time.perf_counter()
                fn()
                seconds = time.perf_counter() - t
            finally:
                gc.callbacks.remove(counter)
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, counter)
    print(f"{n:,} MNIST rows (784 Python ints + label) pickled as Spark caches them ({len(cached) / n:.0f} "
          f"bytes/row), chunks of {opts.chunk_rows}, best of {opts.repeats}:")
    for name, (seconds, counter) in best.items():
        collections = ", ".join(f"gen {g}: {counter.runs[g]} in {counter.seconds[g] / n * 1e6:.1f}" for g in range(3))
        print(f"  {name:<30} {seconds / n * 1e6:6.1f} us/row   collections (us/row) {collections}")


if __name__ == "__main__":
    main()
