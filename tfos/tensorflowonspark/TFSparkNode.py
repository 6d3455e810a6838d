"""TensorFlowOnSpark ``TFSparkNode``: the node context its ``main_fun`` receives.

``TFNodeContext`` is TensorFlowOnSpark's ``ctx``: ``executor_id``, ``worker_num`` (the
executor id, as in TensorFlowOnSpark; the native ``NodeContext.worker_num`` is the rank among
chief and workers), ``job_name``, ``task_index``, ``cluster_spec``, ``num_workers`` (chief,
master and workers), ``defaultFS``, ``working_dir``, ``mgr`` (a ``TFManager.TFManager``) and
``tmp_socket`` (the socket holding the node's port with ``release_port=False``). Made from the
native context by :func:`from_native`; any other native attribute (``feed_dir``, ``gpus``,
``tensorboard_url``...) reads through.

The module's Spark-task functions (``run``, ``train``, ``inference``, ``shutdown``) are
TensorFlowOnSpark internals built on its multiprocessing queues; they keep their signatures
and raise, naming the ``TFCluster`` method that does the job in tfos.
"""

from __future__ import annotations

import functools
import socket
import sys
from collections.abc import Callable
from typing import Any

from tfos.tensorflowonspark import TFNode
from tfos.tensorflowonspark.TFManager import TFManager


class TFNodeContext:
    """TensorFlowOnSpark's view of one node (see the module doc)."""

    def __init__(self, executor_id: int = 0, job_name: str = "", task_index: int = 0,
                 cluster_spec: dict[str, list[str]] = {}, defaultFS: str = "file://",  # noqa: B006, N803
                 working_dir: str = ".", mgr: Any = None, tmp_socket: socket.socket | None = None):
        self.worker_num = executor_id
        self.executor_id = executor_id
        self.job_name = job_name
        self.task_index = task_index
        self.cluster_spec = cluster_spec
        self.num_workers = sum(len(v) for k, v in cluster_spec.items() if k in ("chief", "master", "worker"))
        self.defaultFS = defaultFS  # noqa: N815 - TensorFlowOnSpark name
        self.working_dir = working_dir
        self.mgr = mgr
        self.tmp_socket = tmp_socket
        self._native: Any = None

    @classmethod
    def from_native(cls, ctx: Any) -> TFNodeContext:
        """The view of a native ``NodeContext`` (it takes over the reserved port's socket, if any)."""
        sock = None
        if getattr(ctx, "_port_fd", None) is not None:
            sock = socket.socket(fileno=ctx._port_fd)
            ctx._port_fd = None
        view = cls(ctx.executor_id, ctx.job_name, ctx.task_index, ctx.cluster_spec, ctx.default_fs, ctx.working_dir,
                   TFManager(ctx), sock)
        view.num_workers = ctx.num_workers
        view._native = ctx
        return view

    def __getattr__(self, name: str) -> Any:
        native = self.__dict__.get("_native")
        if native is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(native, name)

    def absolute_path(self, path: str) -> str:
        """``TFNode.hdfs_path(ctx, path)``."""
        return TFNode.hdfs_path(self, path)

    def start_cluster_server(self, num_gpus: int = 1, rdma: bool = False) -> tuple[Any, Any]:
        """``TFNode.start_cluster_server(ctx, num_gpus, rdma)``."""
        return TFNode.start_cluster_server(self, num_gpus, rdma)

    def export_saved_model(self, sess: Any, export_dir: str, tag_set: str, signatures: dict) -> None:
        """``TFNode.export_saved_model(sess, export_dir, tag_set, signatures)``."""
        TFNode.export_saved_model(sess, export_dir, tag_set, signatures)

    def get_data_feed(self, train_mode: bool = True, qname_in: str = "input", qname_out: str = "output",
                      input_mapping: dict[str, str] | None = None) -> TFNode.DataFeed:
        """``TFNode.DataFeed(ctx.mgr, train_mode, qname_in, qname_out, input_mapping)``."""
        return TFNode.DataFeed(self.mgr, train_mode, qname_in, qname_out, input_mapping)

    def release_port(self) -> None:
        """``TFNode.release_port(ctx)``."""
        TFNode.release_port(self)


class TFSparkNode:
    """TensorFlowOnSpark's per-executor manager holder; tfos keeps no per-executor globals (both stay None)."""

    mgr = None
    cluster_id = None


class TFoSMain:
    """``main_fun`` as TensorFlowOnSpark calls it: ``sys.argv`` set from a list of args, a ``TFNodeContext``."""

    def __init__(self, fn: Callable[[Any, Any], Any]):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, args: Any, ctx: Any) -> Any:
        if isinstance(args, list):
            sys.argv = args
        return self.fn(args, TFNodeContext.from_native(ctx))


def _internal(name: str, instead: str) -> Callable[..., Any]:
    raise NotImplementedError(f"TFSparkNode.{name} is internal to TensorFlowOnSpark's multiprocessing feed; in tfos "
                              f"use {instead}")


def run(fn: Callable, tf_args: Any, cluster_meta: dict, tensorboard: bool, log_dir: str | None, queues: list,
        background: bool) -> Callable[..., Any]:
    """TensorFlowOnSpark internal; use ``TFCluster.run``."""
    return _internal("run", "TFCluster.run(sc, main_fun, ...)")


def train(cluster_info: list, cluster_meta: dict, feed_timeout: int = 600, qname: str = "input") -> Callable[..., Any]:
    """TensorFlowOnSpark internal; use ``cluster.train``."""
    return _internal("train", "cluster.train(rdd, num_epochs)")


def inference(cluster_info: list, feed_timeout: int = 600, qname: str = "input") -> Callable[..., Any]:
    """TensorFlowOnSpark internal; use ``cluster.inference``."""
    return _internal("inference", "cluster.inference(rdd)")


def shutdown(cluster_info: list, grace_secs: int = 0, queues: list = ["input"]) -> Callable[..., Any]:  # noqa: B006
    """TensorFlowOnSpark internal; use ``cluster.shutdown``."""
    return _internal("shutdown", "cluster.shutdown()")
