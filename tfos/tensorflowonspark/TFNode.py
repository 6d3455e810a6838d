"""TensorFlowOnSpark ``TFNode``: helpers for the user's ``main_fun`` (paths, servers, the data feed)."""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any

from tfos.feed.datafeed import DataFeed as _NativeDataFeed

logger = logging.getLogger(__name__)


def _tf_version() -> str:
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "0"


TF_VERSION = _tf_version()


def _native(ctx: Any) -> Any:
    return getattr(ctx, "_native", None) or ctx


def hdfs_path(ctx: Any, path: str) -> str:
    """``path`` made absolute: a scheme is kept, ``/x`` goes on ``ctx.defaultFS``, ``x`` under the working
    directory (``file://``) or ``/user/<name>`` (``hdfs://``, ``viewfs://``)."""
    from tfos.io.paths import absolute_path

    return absolute_path(path, ctx.defaultFS, ctx.working_dir)


def start_cluster_server(ctx: Any, num_gpus: int = 1, rdma: bool = False) -> tuple[Any, Any]:
    """Start this node's ``tf.distribute.Server`` (tf.compat.v1 graph-mode scripts); ``(cluster_spec, server)``."""
    if getattr(ctx, "tmp_socket", None) is not None:
        ctx.release_port()
    return _native(ctx).start_cluster_server(num_gpus=num_gpus, rdma=rdma)


def next_batch(mgr: Any, batch_size: int, qname: str = "input") -> Any:
    """Deprecated in TensorFlowOnSpark: use ``TFNode.DataFeed``."""
    raise RuntimeError("DEPRECATED: use the TFNode.DataFeed class instead")


def batch_results(mgr: Any, results: Any, qname: str = "output") -> None:
    """Deprecated in TensorFlowOnSpark: use ``TFNode.DataFeed``."""
    raise RuntimeError("DEPRECATED: use the TFNode.DataFeed class instead")


def terminate(mgr: Any, qname: str = "input") -> None:
    """Deprecated in TensorFlowOnSpark: use ``TFNode.DataFeed``."""
    raise RuntimeError("DEPRECATED: use the TFNode.DataFeed class instead")


def export_saved_model(sess: Any, export_dir: str, tag_set: str, signatures: dict[str, dict[str, Any]]) -> None:
    """Export a tf.compat.v1 session's graph as a SavedModel.

    ``signatures``: ``{key: {'inputs': {alias: tensor}, 'outputs': {alias: tensor}, 'method_name': ...}}``;
    ``tag_set``: comma-separated tags. (TensorFlowOnSpark raises on TF 2; tfos exports.)
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = sess.graph
    graph._unsafe_unfinalize()
    builder = v1.saved_model.Builder(export_dir)
    signature_map = {
        key: v1.saved_model.signature_def_utils.build_signature_def(
            inputs={k: v1.saved_model.utils.build_tensor_info(t) for k, t in sig["inputs"].items()},
            outputs={k: v1.saved_model.utils.build_tensor_info(t) for k, t in sig["outputs"].items()},
            method_name=sig.get("method_name", key))
        for key, sig in signatures.items()
    }
    builder.add_meta_graph_and_variables(sess, tag_set.split(","), signature_def_map=signature_map,
                                         clear_devices=True)
    graph.finalize()
    builder.save()


def release_port(ctx: Any) -> None:
    """Close the socket that reserved this node's port (with ``TFCluster.run(..., release_port=False)``)."""
    sock = getattr(ctx, "tmp_socket", None)
    if sock is not None:
        logger.info("releasing the reserved port %s", sock.getsockname())
        sock.close()
        ctx.tmp_socket = None
    elif getattr(_native(ctx), "_port_fd", None) is not None:
        _native(ctx).release_port()
    else:
        logger.warning("release_port() called with no reserved port")


class _InputQueue:
    """``DataFeed.queue_in``: the input as a queue; ``get()`` is the next row, None at the end of the feed."""

    def __init__(self, feed: DataFeed):
        self._feed = feed

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        rows = self._feed.next_rows(1)
        return rows[0] if rows else None

    def task_done(self) -> None:
        """Nothing to acknowledge: rows are acknowledged as they are read."""

    def join(self) -> None:
        """Nothing to wait for (see ``task_done``)."""

    def empty(self) -> bool:
        return self._feed.should_stop()


class _OutputQueue:
    """``DataFeed.queue_out``: ``put(result)`` returns one result, as ``batch_results([result])``."""

    def __init__(self, feed: DataFeed):
        self._feed = feed

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self._feed.batch_results([item])


class DataFeed(_NativeDataFeed):
    """TensorFlowOnSpark's ``TFNode.DataFeed(mgr, train_mode=True, qname_in='input', qname_out='output',
    input_mapping=None)`` over tfos's feed.

    ``train_mode`` says whether results are expected: ``DataFeed(ctx.mgr, False)`` reads
    ``cluster.train`` data too. ``next_batch(n)`` returns a list of rows, or with
    ``input_mapping`` a dict ``{tensor: list}`` (columns in sorted column order); an empty or
    short batch at the end of the feed, after which ``should_stop()`` / ``done_feeding`` is
    True. ``queue_in`` / ``queue_out`` are queue views of the feed; ``terminate()`` also sets
    ``mgr``'s state to 'terminating'. The native whole-batch API (``batches``, ``dataset``) works too.
    """

    def __init__(self, mgr: Any, train_mode: bool = True, qname_in: str = "input", qname_out: str = "output",
                 input_mapping: dict[str, str] | None = None):
        super().__init__(mgr, train_mode, qname_in, qname_out, input_mapping)
        self.mgr = mgr
        self.queue_in = _InputQueue(self)
        self.queue_out = _OutputQueue(self)
        if hasattr(mgr, "register_queue"):
            mgr.register_queue(qname_in, self.queue_in)
            mgr.register_queue(qname_out, self.queue_out)

    @property
    def done_feeding(self) -> bool:
        """True once the feed ended or ``terminate()`` was called."""
        return self.should_stop()

    def next_batch(self, batch_size: int) -> list | dict[str, list]:
        """Up to ``batch_size`` rows, or ``{tensor: [values]}`` with ``input_mapping``."""
        batch = super().next_batch(batch_size)
        if self.input_tensors is not None:
            return {tensor: values.tolist() for tensor, values in batch.items()}
        return batch

    def terminate(self) -> None:
        """Stop feeding: the rest of this input (and later feed tasks) is skipped."""
        if hasattr(self.mgr, "set"):
            self.mgr.set("state", "terminating")
        super().terminate()
