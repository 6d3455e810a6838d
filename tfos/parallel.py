"""Independent single-node TF instances, one per executor (TensorFlowOnSpark's ``TFParallel``).

For embarrassingly parallel work such as batch inference from a SavedModel: each of
``num_executors`` barrier tasks runs ``map_fun(args, ctx)`` once with its own
``ctx.worker_num`` / ``ctx.num_workers`` to shard the input by. No cluster spec, no
reservation server; an exception in any instance fails the Spark job and is raised here.
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

        ctx = NodeContext(executor_id=index, job_name="worker", task_index=index, cluster_spec={},
                          num_workers=num_executors, worker_num=index, default_fs=fs, working_dir=working_dir,
                          input_mode=InputMode.TENSORFLOW)
        logging.getLogger(__name__).info("[worker:%d] TFParallel instance on %s", index, socket.gethostname())
        yield map_fun(tf_args, ctx)

    rdd = sc.parallelize(range(num_executors), num_executors)
    stage = rdd.barrier() if use_barrier else rdd
    logger.info("TFParallel: %d instances of %s", num_executors, getattr(map_fun, "__name__", map_fun))
    return stage.mapPartitionsWithIndex(instance).collect()
