"""TensorFlowOnSpark ``TFParallel``: independent single-node TF instances, one per executor.

Over ``tfos.parallel.run``; each instance gets TensorFlowOnSpark's ``ctx``
(``worker_num`` / ``executor_id`` = its index, ``num_workers``, ``defaultFS``) after the
single-node environment is set up (GPUs, Hadoop ``CLASSPATH``). Difference: it returns the
instances' return values (TensorFlowOnSpark returns None).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tfos.tensorflowonspark.TFSparkNode import TFoSMain

__all__ = ["run"]


def run(sc: Any, map_fn: Callable[[Any, Any], Any], tf_args: Any, num_executors: int,
        use_barrier: bool = True) -> list[Any]:
    """Run ``map_fn(tf_args, ctx)`` on ``num_executors`` executors at once (barrier mode unless ``use_barrier=False``)."""
    from tfos.parallel import run as run_parallel

    return run_parallel(sc, TFoSMain(map_fn), tf_args, num_executors, use_barrier=use_barrier)
