"""TensorFlowOnSpark's ``TFCluster``: re-exported from :mod:`tfos.tensorflowonspark.TFCluster` (the compatibility layer)."""

from tfos.tensorflowonspark.TFCluster import (
    InputMode,
    TFCluster,
    run,
)

__all__ = ["InputMode", "TFCluster", "run"]
