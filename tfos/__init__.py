"""tfos: TensorFlow training and inference on Apache Spark clusters.

Native API: ``run``, ``InputMode``, ``NodeContext``. TensorFlowOnSpark 2.x modules
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
           "__version__"]
