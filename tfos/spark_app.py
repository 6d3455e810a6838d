"""Spark application set-up for scripts that run both as ``python script.py`` and under spark-submit.

The examples (and scripts written like them) start their own SparkContext. Under spark-submit
the master (YARN, standalone, Kubernetes) is spark-submit's and must not be overridden; run with
plain ``python`` they use ``local[N]``. How many TF nodes to start then follows from what the
application was given.
"""

from __future__ import annotations

import os
from typing import Any


def submitted_master() -> bool:
    """True when spark-submit (or ``PYSPARK_SUBMIT_ARGS``) chose the Spark master, which then must not be overridden."""
    return "PYSPARK_GATEWAY_PORT" in os.environ or "--master" in os.environ.get("PYSPARK_SUBMIT_ARGS", "")


def spark_conf(app: str, local_slots: int) -> Any:
    """A SparkConf named ``app``: ``local[local_slots]`` when started with plain ``python``, else spark-submit's master."""
    from pyspark import SparkConf

    conf = SparkConf().setAppName(app)
    if not submitted_master():
        conf.setMaster(f"local[{local_slots}]")
    return conf


def executor_count(sc: Any, fallback: int) -> int:
    """The executors the application asked for: ``spark.executor.instances`` (YARN ``--num-executors``), else
    ``spark.cores.max`` / ``spark.executor.cores`` (standalone), else N of ``local[N]``, else ``fallback``."""
    conf = sc.getConf()
    instances = conf.get("spark.executor.instances")
    if instances:
        return max(1, int(instances))
    master = sc.master or ""
    cores_max = conf.get("spark.cores.max")
    if cores_max and not master.startswith("local"):
        return max(1, int(cores_max) // max(1, int(conf.get("spark.executor.cores", "1"))))
    slots = master[len("local["):-1] if master.startswith("local[") else ""
    return int(slots) if slots.isdigit() else fallback
