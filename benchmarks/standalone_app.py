"""What the single-purpose benchmark scripts share: a Spark application on a fresh standalone
cluster of single-core workers on 127.0.0.1 (:func:`standalone_app`), and a cached RDD of
MNIST-shaped Python rows (:func:`cached_pixel_rows`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.spark_standalone import StandaloneCluster, session_on, wait_for_executors


@contextmanager
def standalone_app(name: str, workers: int) -> Iterator[Any]:
    """The SparkContext of application ``name`` holding ``workers`` single-core executors; the
    application and the cluster end with the block."""
    standalone = StandaloneCluster(workers=workers).start()
    try:
        spark = session_on(standalone, name, workers)
        wait_for_executors(spark.sparkContext, workers, 180, standalone.log_dir)
        try:
            yield spark.sparkContext
        finally:
            spark.stop()
    finally:
        standalone.stop()


def cached_pixel_rows(sc: Any, rows: int, partitions: int = 4) -> Any:
    """``rows`` rows ``(784 ints in 0..255, label)`` (2,000 distinct ones, repeated) in a cached,
    materialised RDD of ``partitions`` partitions."""
    distinct = [([(i + k) % 256 for k in range(784)], i % 10) for i in range(2000)]
    rdd = sc.parallelize(range(rows), partitions).map(lambda i: distinct[i % len(distinct)]).cache()
    rdd.count()
    return rdd
