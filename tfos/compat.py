"""TensorFlowOnSpark's ``compat``: re-exported from :mod:`tfos.tensorflowonspark.compat` (the compatibility layer)."""

from tfos.tensorflowonspark.compat import (
    disable_auto_shard,
    export_saved_model,
    is_gpu_available,
)

__all__ = ["disable_auto_shard", "export_saved_model", "is_gpu_available"]
