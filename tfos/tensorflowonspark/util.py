"""TensorFlowOnSpark ``util``: environment set-up and small helpers for single-node TF code."""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Sequence

logger = logging.getLogger(__name__)

EXECUTOR_ID_FILE = "executor_id"


def single_node_env(num_gpus: int = 1, worker_index: int = -1, nodes: Sequence[str] = []) -> None:  # noqa: B006
    """Prepare this process for one TF instance: Hadoop ``CLASSPATH`` (and libhdfs paths), and GPUs.

    Sets ``CUDA_VISIBLE_DEVICES`` to ``num_gpus`` free GPUs ('' on a host without GPUs or with
    ``num_gpus=0``), chosen by ``worker_index`` among the ``nodes`` (``host:port`` strings) on
    this host, else by ``worker_index`` itself; Spark's task GPUs win when it schedules GPUs.
    The Hadoop part runs once per process (``TFOS_CLASSPATH_UPDATED``), as in TensorFlowOnSpark.
    """
    from tfos.cluster.gpus import assign_gpus, spark_task_resources
    from tfos.io.hadoop_env import hadoop_env

    if "TFOS_CLASSPATH_UPDATED" not in os.environ:
        os.environ.update(hadoop_env(os.environ))
        os.environ["TFOS_CLASSPATH_UPDATED"] = "1"
    index = max(worker_index, 0)
    if worker_index >= 0 and nodes:
        mine = nodes[worker_index]
        host = mine.split(":")[0]
        index = [n for n in nodes if n.split(":")[0] == host].index(mine)
    gpu = assign_gpus(num_gpus, spark_task_resources(), worker_index=index)
    gpu.release()  # no lock outlives this call, as TensorFlowOnSpark holds none
    os.environ.update(gpu.env())
    logger.info("single_node_env: %s", f"GPU(s) {','.join(gpu.devices)}" if gpu.devices else "CPU")


def get_ip_address() -> str:
    """This host's outward-facing IP address (the one a UDP socket to a public address would use)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("8.8.8.8", 80))  # no packet is sent
        return probe.getsockname()[0]
    except OSError as exc:
        if exc.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, None):
            raise
        return socket.gethostbyname(socket.getfqdn())
    finally:
        probe.close()


def find_in_path(path: str, file: str) -> str | bool:
    """The first ``<dir>/<file>`` that is a file, over the ``os.pathsep``-separated ``path``; False if none."""
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory, file)
        if os.path.isfile(candidate):
            return candidate
    return False


def write_executor_id(num: int) -> None:
    """Record ``num`` in the file ``executor_id`` of the current directory (the executor's)."""
    with open(EXECUTOR_ID_FILE, "w") as f:
        f.write(str(num))


def read_executor_id() -> int:
    """The executor id written by :func:`write_executor_id` in the current directory."""
    if not os.path.isfile(EXECUTOR_ID_FILE):
        raise RuntimeError("no executor_id file in this executor's working directory: check that Spark's "
                           "num_executors matches the TF cluster size, one task per executor, dynamic allocation "
                           "off, and no earlier failure on another node")
    with open(EXECUTOR_ID_FILE) as f:
        return int(f.read())
