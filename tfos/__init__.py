"""tfos: TensorFlow training and inference on Apache Spark clusters."""

from tfos.cluster.cluster import NodeFailure, run
from tfos.cluster.context import NodeContext
from tfos.cluster.input_mode import InputMode
from tfos.cluster.validation import ClusterConfigError
from tfos.compat import TFCluster, TFNode, TFParallel

__version__ = "0.1.0"

__all__ = ["ClusterConfigError", "InputMode", "NodeContext", "NodeFailure", "TFCluster", "TFNode", "TFParallel", "run",
           "__version__"]
