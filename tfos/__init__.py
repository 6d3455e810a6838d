"""tfos: TensorFlow training and inference on Apache Spark clusters.

Native API: ``run``, ``InputMode``, ``NodeContext``, ``ProgressCallback`` (Keras, imported on use). TensorFlowOnSpark 2.x modules
(``TFCluster``, ``TFNode``, ``TFParallel``; also ``compat``, ``util``, ``TFSparkNode``...
imported on use) come from :mod:`tfos.tensorflowonspark`.
"""

from tfos import TFCluster, TFNode, TFParallel
from tfos.cluster.cluster import NodeFailure, run
from tfos.cluster.context import NodeContext
from tfos.cluster.input_mode import InputMode
from tfos.cluster.validation import ClusterConfigError

__version__ = "0.1.0"

__all__ = ["ClusterConfigError", "InputMode", "NodeContext", "NodeFailure", "TFCluster", "TFNode", "TFParallel", "run",
           "__version__"]  # and ProgressCallback, left out so that ``import *`` does not import TensorFlow


def __getattr__(name: str) -> object:
    if name == "ProgressCallback":  # a Keras callback: importing it imports TensorFlow, so only on use
        from tfos.cluster.keras_progress import ProgressCallback

        return ProgressCallback
    raise AttributeError(f"module 'tfos' has no attribute {name!r}")
