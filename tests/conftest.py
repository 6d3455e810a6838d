"""Shared fixtures: a real Spark standalone cluster and a SparkContext on it."""

from __future__ import annotations

import logging
import os
import sys

import pytest

import tfos

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Every Spark application started by a test runs its Python workers on this interpreter.
os.environ["PYSPARK_PYTHON"] = sys.executable

from tests.spark_standalone import StandaloneCluster, spark_conf, wait_for_executors  # noqa: E402

pytest_plugins = ["tests.hdfs_fixture", "tests.yarn_fixture"]

EXECUTORS = 3


@pytest.fixture(scope="session")
def standalone():
    cluster = StandaloneCluster(workers=EXECUTORS).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def start():
    """``tfos.run`` that never leaks a cluster: a test that fails midway still stops its nodes,
    so the executors are free for the next test."""
    started = []

    def run(*args, **kwargs):
        cluster = tfos.run(*args, **kwargs)
        started.append(cluster)
        return cluster

    yield run
    for cluster in started:
        if cluster.state != "stopped":
            cluster.__exit__(RuntimeError, RuntimeError("test failed"), None)


@pytest.fixture(scope="session")
def submit_cluster():
    """A standalone cluster of its own for tests that spark-submit an application: the session's
    ``sc`` holds every core of ``standalone``, so an application submitted there would get no executors."""
    cluster = StandaloneCluster(workers=EXECUTORS).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def sc(standalone):
    from pyspark import SparkConf, SparkContext

    conf = SparkConf().setAppName("tfos-tests").setAll(list(spark_conf(standalone.master_url, EXECUTORS).items()))
    context = SparkContext(conf=conf)
    context.setLogLevel("WARN")
    wait_for_executors(context, EXECUTORS, 180, standalone.log_dir)
    logging.getLogger("tfos").setLevel(logging.INFO)
    yield context
    context.stop()
