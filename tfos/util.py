"""TensorFlowOnSpark's ``util``: re-exported from :mod:`tfos.tensorflowonspark.util` (the compatibility layer)."""

from tfos.tensorflowonspark.util import (
    find_in_path,
    get_ip_address,
    read_executor_id,
    single_node_env,
    write_executor_id,
)

__all__ = ["find_in_path", "get_ip_address", "read_executor_id", "single_node_env", "write_executor_id"]
