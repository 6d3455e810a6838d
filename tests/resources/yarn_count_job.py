"""A tiny PySpark job for tests on YARN: counts even numbers on the executors and prints a marker.

Usage: ``yarn_count_job.py MARKER [N]``. The driver prints ``MARKER count=<evens>``; each task
prints ``MARKER task gpus=<addresses>`` (the GPU addresses Spark gave it, empty without GPUs), so
both the driver's and the executors' logs carry the marker.
"""

from __future__ import annotations

import sys

from pyspark import TaskContext
from pyspark.sql import SparkSession


def _count_evens(marker: str):
    def task(part):  # runs on an executor
        resources = TaskContext.get().resources()
        gpus = ",".join(resources["gpu"].addresses) if "gpu" in resources else ""
        print(f"{marker} task gpus={gpus}", flush=True)
        yield sum(1 for x in part if x % 2 == 0)

    return task


if __name__ == "__main__":
    marker = sys.argv[1] if len(sys.argv) > 1 else "TFOS-YARN-MARKER"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    spark = SparkSession.builder.appName("tfos-yarn-count").getOrCreate()
    evens = sum(spark.sparkContext.parallelize(range(n), 2).mapPartitions(_count_evens(marker)).collect())
    print(f"{marker} count={evens}", flush=True)
    spark.stop()
