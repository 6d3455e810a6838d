"""TensorFlowOnSpark ``TFCluster``: ``run`` a TF cluster, ``train`` / ``inference`` / ``shutdown`` it.

``run`` starts a native tfos cluster (``tfos.run``) whose nodes call ``map_fun(args, ctx)``
with TensorFlowOnSpark's ``ctx`` (``TFSparkNode.TFNodeContext``), and returns it as a
:class:`TFCluster`: the same object, seen with TensorFlowOnSpark's spellings. Differences from
TensorFlowOnSpark: failures raise (``NodeFailure``, ``TimeoutError``) where it calls
``sys.exit(1)``; ``train`` / ``inference`` return what the native methods return (it returns
None); ``queues`` is kept for its signature only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tfos.cluster import cluster as _cluster
from tfos.cluster.input_mode import InputMode
from tfos.tensorflowonspark.TFSparkNode import TFoSMain

__all__ = ["InputMode", "TFCluster", "run"]


class _TensorBoardURL:
    """``cluster.tensorboard_url()``: a method here, the native attribute's value underneath."""

    def __get__(self, obj: Any, owner: Any = None) -> Callable[..., str | None]:
        if obj is None:
            def tensorboard_url(self: Any) -> str | None:
                """The URL of the TensorBoard the chief started, or None."""
                return self.__dict__.get("tensorboard_url")
            return tensorboard_url
        return lambda: obj.__dict__.get("tensorboard_url")

    def __set__(self, obj: Any, value: str | None) -> None:
        obj.__dict__["tensorboard_url"] = value


class TFCluster(_cluster.TFCluster):
    """A running cluster with TensorFlowOnSpark's attribute names (``defaultFS``, ``tensorboard_url()``...)."""

    tensorboard_url = _TensorBoardURL()
    queues: list[str] = ["input", "output", "error"]  # noqa: RUF012 - TensorFlowOnSpark's INTERNAL_USE list

    @property
    def defaultFS(self) -> str:  # noqa: N802 - TensorFlowOnSpark name
        """The default file system, e.g. ``file://`` or ``hdfs://namenode:8020``."""
        return self.default_fs

    @property
    def meta(self) -> dict[str, Any]:
        """``cluster_meta`` (TensorFlowOnSpark keeps both names)."""
        return self.cluster_meta

    @property
    def nodeRDD(self) -> Any:  # noqa: N802 - TensorFlowOnSpark name
        """``sc.parallelize(range(num_executors), num_executors)``, as TensorFlowOnSpark describes its node RDD."""
        return self.sc.parallelize(range(self.num_executors), self.num_executors)

    def train(self, dataRDD: Any, num_epochs: int = 0, feed_timeout: float = 600, qname: str = "input") -> Any:  # noqa: N803
        """Feed ``dataRDD`` (RDD, DataFrame or DStream) ``num_epochs`` times (0: 10 epochs)."""
        return super().train(dataRDD, num_epochs=num_epochs, feed_timeout=feed_timeout, qname=qname)

    def inference(self, dataRDD: Any, feed_timeout: float = 600, qname: str = "input") -> Any:  # noqa: N803
        """An RDD of the results ``DataFeed.batch_results`` returned, one per row of ``dataRDD``."""
        return super().inference(dataRDD, feed_timeout=feed_timeout, qname=qname)

    def shutdown(self, ssc: Any = None, grace_secs: float = 0, timeout: float = 259200) -> None:
        """Stop the cluster; with ``ssc`` first wait for the stream to end (see the native ``shutdown``)."""
        super().shutdown(ssc, grace_secs, timeout)


def run(sc: Any, map_fun: Callable[[Any, Any], Any], tf_args: Any, num_executors: int, num_ps: int,
        tensorboard: bool = False, input_mode: int = InputMode.TENSORFLOW, log_dir: str | None = None,
        driver_ps_nodes: bool = False, master_node: str | None = None, reservation_timeout: float = 600,
        queues: list[str] = ["input", "output", "error"], eval_node: bool = False,  # noqa: B006
        release_port: bool = True, max_restarts: int = 0) -> TFCluster:
    """Start ``num_executors`` TF nodes running ``map_fun(tf_args, ctx)``; returns once all registered.

    ``max_restarts`` (tfos's addition, see ``tfos.run``): restart the cluster after a node failure.
    """
    if driver_ps_nodes and input_mode != InputMode.TENSORFLOW:
        raise ValueError("running PS nodes on the driver is only supported in InputMode.TENSORFLOW")
    if eval_node and input_mode != InputMode.TENSORFLOW:
        raise ValueError("an evaluator node is only supported in InputMode.TENSORFLOW")
    cluster = _cluster.run(sc, TFoSMain(map_fun), tf_args, num_executors, num_ps, tensorboard, input_mode,
                           log_dir=log_dir, driver_ps_nodes=driver_ps_nodes, master_node=master_node,
                           reservation_timeout=reservation_timeout, eval_node=eval_node, release_port=release_port,
                           max_restarts=max_restarts)
    cluster.__class__ = TFCluster  # the same object and state, TensorFlowOnSpark's names
    cluster.queues = list(queues)
    return cluster  # type: ignore[return-value]
