"""TensorFlowOnSpark 2.x names over the native API, all in one place.

``from tfos import TFCluster, TFNode`` is the only change a TensorFlowOnSpark script needs:
``TFCluster.run``, ``TFCluster.InputMode``, ``TFNode.hdfs_path``, ``TFNode.start_cluster_server``,
``TFNode.DataFeed`` and ``TFParallel.run`` keep their signatures and behaviour.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from tfos.cluster.cluster import TFCluster as _TFClusterClass
from tfos.cluster.cluster import run
from tfos.cluster.context import NodeContext
from tfos.cluster.input_mode import InputMode
from tfos.parallel import run as _parallel_run


def hdfs_path(ctx: NodeContext, path: str) -> str:
    """``TFNode.hdfs_path(ctx, path)``: resolve ``path`` against the default file system."""
    return ctx.absolute_path(path)


def start_cluster_server(ctx: NodeContext, num_gpus: int = 1, rdma: bool = False) -> tuple[Any, Any]:
    """``TFNode.start_cluster_server(ctx, num_gpus=1, rdma=False)`` -> ``(cluster_spec, server)``."""
    return ctx.start_cluster_server(num_gpus=num_gpus, rdma=rdma)


def _data_feed(mgr: Any, train_mode: bool = True, qname_in: str = "input", qname_out: str = "output",
               input_mapping: Any = None) -> Any:
    """``TFNode.DataFeed(ctx.mgr, train_mode=True, qname_in='input', qname_out='output', input_mapping=None)``."""
    from tfos.feed.datafeed import DataFeed

    return DataFeed(mgr, train_mode, qname_in, qname_out, input_mapping)


TFCluster = SimpleNamespace(run=run, InputMode=InputMode, TFCluster=_TFClusterClass)
TFParallel = SimpleNamespace(run=_parallel_run)
TFNode = SimpleNamespace(hdfs_path=hdfs_path, start_cluster_server=start_cluster_server, DataFeed=_data_feed,
                         TFNodeContext=NodeContext)
