"""Independent single-node TF instances, one per executor (TensorFlowOnSpark's ``TFParallel``).

For embarrassingly parallel work such as batch inference from a SavedModel: each of
``num_executors`` barrier tasks runs ``map_fun(args, ctx)`` once with its own
``ctx.worker_num`` / ``ctx.num_workers`` to shard the input by. No cluster spec, no
reservation server; an exception in any instance fails the Spark job and is raised here.

Each instance first gets the single-node environment, as TensorFlowOnSpark sets it up:
its GPUs (``num_gpus`` of ``tf_args``, default one when the host has any; Spark's task GPUs
when Spark schedules them; instances on one host get different GPUs) in
``CUDA_VISIBLE_DEVICES`` ('' on CPU), and Hadoop's ``CLASSPATH`` / libhdfs paths when a
Hadoop home is set. The GPUs are held for the instance's run and released after it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from tfos.cluster.context import NodeContext
from tfos.cluster.input_mode import InputMode
from tfos.cluster.validation import validate_arguments, validate_spark

logger = logging.getLogger(__name__)


def run(sc: Any, map_fun: Callable[[Any, NodeContext], Any], tf_args: Any, num_executors: int,
        use_barrier: bool = True) -> list[Any]:
    """Run ``map_fun(tf_args, ctx)`` on ``num_executors`` executors at once; returns their return values.

    ``use_barrier=False`` lets instances start as slots free up (no all-at-once guarantee).
    """
    validate_arguments(map_fun, num_executors, 0, 600)
    if use_barrier:
        validate_spark(sc, num_executors)
    from tfos.io.paths import default_fs

    fs = default_fs(sc)
    working_dir = os.getcwd()

    def instance(index: int, _rows: Any) -> Any:
        import socket

        gpu = _single_node_env(tf_args, index, use_barrier)
        try:
            ctx = NodeContext(executor_id=index, job_name="worker", task_index=index, cluster_spec={},
                              num_workers=num_executors, worker_num=index, default_fs=fs, working_dir=working_dir,
                              input_mode=InputMode.TENSORFLOW, gpus=list(gpu.devices))
            logging.getLogger(__name__).info("[worker:%d] TFParallel instance on %s (%s)", index,
                                             socket.gethostname(), ",".join(gpu.devices) or "CPU")
            result = map_fun(tf_args, ctx)
        finally:
            gpu.release()
        yield result

    rdd = sc.parallelize(range(num_executors), num_executors)
    stage = rdd.barrier() if use_barrier else rdd
    logger.info("TFParallel: %d instances of %s", num_executors, getattr(map_fun, "__name__", map_fun))
    return stage.mapPartitionsWithIndex(instance).collect()


def _host_local_index(index: int, use_barrier: bool) -> int:
    """This instance's position among the barrier tasks on its host (its index without barrier mode)."""
    if not use_barrier:
        return index
    from pyspark import BarrierTaskContext

    hosts = [info.address.rsplit(":", 1)[0] for info in BarrierTaskContext.get().getTaskInfos()]
    return sum(1 for h in hosts[:index] if h == hosts[index])


def _single_node_env(tf_args: Any, index: int, use_barrier: bool) -> Any:
    """GPUs and Hadoop variables for this instance (set in ``os.environ``); returns the GPU assignment."""
    from tfos.cluster.gpus import assign_gpus, requested_gpus, spark_task_resources
    from tfos.io.hadoop_env import hadoop_env

    os.environ.update(hadoop_env(os.environ))
    gpu = assign_gpus(requested_gpus(tf_args), spark_task_resources(),
                      worker_index=_host_local_index(index, use_barrier))
    os.environ.update(gpu.env())
    return gpu
