"""Two parts of the InputMode.SPARK feed measured alone, each against what it replaced, in one run.

``encode`` (one process, no Spark): MNIST rows as parsed from CSV (a list of 784 Python ints
and a label) through ``RowEncoder.encode`` in chunks of 4096 (the whole encoding: both columns, Arrow arrays),
against only the step the ``bytes()`` path replaced: ``np.array`` over the pixel lists and the
narrowing to uint8 (so the old side is a lower bound of what encoding cost before). Best of
``--repeats``, alternating.

``count`` (Spark standalone cluster of 2 single-core workers): the rows per partition of a
cached DataFrame (``image binary``, ``label int``, ``--rows`` rows in ``--partitions``
partitions) counted as the feed does now (a Spark ``groupBy`` of the partition id) and as it
did before (the partition id through a Python ``mapInArrow``), alternating, ``--repeats``
times each; the first round includes the first run of each query plan.

    .venv/bin/python benchmarks/feed_parts.py encode
    .venv/bin/python benchmarks/feed_parts.py count --rows 1000000 --partitions 40
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

from benchmarks.feed_throughput import arrow_images, make_rows  # noqa: E402


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


def count(opts: argparse.Namespace) -> None:
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F  # noqa: N812

    from tests.spark_standalone import StandaloneCluster, spark_conf, wait_for_executors

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    cluster = StandaloneCluster(workers=2, worker_memory="4g").start()
    try:
        builder = SparkSession.builder.appName("tfos-feed-parts-count")
        conf = dict(spark_conf(cluster.master_url, 2), **{"spark.executor.memory": "3g",
                                                          "spark.ui.showConsoleProgress": "false"})
        for key, value in conf.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        wait_for_executors(spark.sparkContext, 2, 180, cluster.log_dir)
        df = spark.range(0, opts.rows, numPartitions=opts.partitions) \
            .mapInArrow(partial(arrow_images, "binary"), "image binary, label int").cache()
        assert df.count() == opts.rows
        tagged = df.withColumn("p", F.spark_partition_id()).select("p")
        ways = {"Spark groupBy (now)": lambda: tagged.groupBy("p").count().collect(),
                "Python mapInArrow (before)": lambda: tagged.mapInArrow(_count_partition, "p int, n long").collect()}
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(opts.repeats):
            results = []
            for name, way in ways.items():
                t = time.time()
                results.append(sorted((int(p), int(n)) for p, n in way()))
                times[name].append(time.time() - t)
            assert results[0] == results[1] and sum(n for _, n in results[0]) == opts.rows, "the counts differ"
        print(f"rows per partition of a cached DataFrame, {opts.rows:,} rows in {opts.partitions} partitions, "
              f"2 executors, alternating (same counts every time):")
        for name, secs in times.items():
            print(f"  {name:<28} " + ", ".join(f"{s:.2f}s" for s in secs))
    finally:
        cluster.stop()


def _count_partition(batches):
    import pyarrow as pa

    counts: dict[int, int] = {}
    for batch in batches:
        for p, n in zip(*np.unique(batch.column(0).to_numpy(), return_counts=True), strict=True):
            counts[int(p)] = counts.get(int(p), 0) + int(n)
    if counts:
        yield pa.RecordBatch.from_arrays([pa.array(list(counts), pa.int32()), pa.array(list(counts.values()),
                                                                                   pa.int64())], names=["p", "n"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    enc = sub.add_parser("encode", help="RowEncoder vs np.array on MNIST rows")
    enc.add_argument("--rows", type=int, default=40_960)
    enc.add_argument("--repeats", type=int, default=5)
    cnt = sub.add_parser("count", help="DataFrame partition counts: Spark groupBy vs Python mapInArrow")
    cnt.add_argument("--rows", type=int, default=1_000_000)
    cnt.add_argument("--partitions", type=int, default=40)
    cnt.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args(argv)
    {"encode": encode, "count": count}[opts.what](opts)


if __name__ == "__main__":
    main()
