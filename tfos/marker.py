"""TensorFlowOnSpark's ``marker``: re-exported from :mod:`tfos.tensorflowonspark.marker` (the compatibility layer)."""

from tfos.tensorflowonspark.marker import (
    EndPartition,
    Marker,
)

__all__ = ["EndPartition", "Marker"]
