"""TensorFlowOnSpark's ``gpu_info``: re-exported from :mod:`tfos.tensorflowonspark.gpu_info` (the compatibility layer)."""

from tfos.tensorflowonspark.gpu_info import (
    AS_LIST,
    AS_STRING,
    MAX_RETRIES,
    get_gpus,
    is_gpu_available,
)

__all__ = ["AS_LIST", "AS_STRING", "MAX_RETRIES", "get_gpus", "is_gpu_available"]
