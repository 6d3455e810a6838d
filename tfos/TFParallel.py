"""TensorFlowOnSpark's ``TFParallel``: re-exported from :mod:`tfos.tensorflowonspark.TFParallel` (the compatibility layer)."""

from tfos.tensorflowonspark.TFParallel import (
    run,
)

__all__ = ["run"]
