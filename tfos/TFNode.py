"""TensorFlowOnSpark's ``TFNode``: re-exported from :mod:`tfos.tensorflowonspark.TFNode` (the compatibility layer)."""

from tfos.tensorflowonspark.TFNode import (
    TF_VERSION,
    DataFeed,
    batch_results,
    export_saved_model,
    hdfs_path,
    next_batch,
    release_port,
    start_cluster_server,
    terminate,
)

__all__ = ["DataFeed", "TF_VERSION", "batch_results", "export_saved_model", "hdfs_path", "next_batch", "release_port", "start_cluster_server", "terminate"]
