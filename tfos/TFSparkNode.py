"""TensorFlowOnSpark's ``TFSparkNode``: re-exported from :mod:`tfos.tensorflowonspark.TFSparkNode` (the compatibility layer)."""

from tfos.tensorflowonspark.TFSparkNode import (
    TFNodeContext,
    TFSparkNode,
    inference,
    run,
    shutdown,
    train,
)

__all__ = ["TFNodeContext", "TFSparkNode", "inference", "run", "shutdown", "train"]
