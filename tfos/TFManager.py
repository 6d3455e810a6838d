"""TensorFlowOnSpark's ``TFManager``: re-exported from :mod:`tfos.tensorflowonspark.TFManager` (the compatibility layer)."""

from tfos.tensorflowonspark.TFManager import (
    TFManager,
    connect,
    start,
)

__all__ = ["TFManager", "connect", "start"]
