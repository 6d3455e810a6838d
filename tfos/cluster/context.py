"""NodeContext: what the user's ``main_fun(args, ctx)`` learns about its node and cluster."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class NodeContext:
    """One TF node's view of the cluster (TensorFlowOnSpark ``TFNodeContext`` compatible).

    ``executor_id``, ``job_name``, ``task_index``, ``cluster_spec``, ``num_workers`` and
    ``worker_num`` describe the node; ``default_fs`` and ``working_dir`` resolve paths;
    ``feed_dir`` is where InputMode.SPARK feeds arrive; ``gpus`` are the GPU ids this node
    was given (empty on CPU). ``restart_count`` is 0 in the first generation of nodes and
    counts the restarts after node failures (``tfos.run(..., max_restarts=N)``): a main that
    restores its latest checkpoint resumes where the failed generation last saved.
    """

    executor_id: int
    job_name: str
    task_index: int
    cluster_spec: dict[str, list[str]]
    num_workers: int
    worker_num: int
    default_fs: str
    working_dir: str
    cluster_id: str = ""
    input_mode: int = 0
    feed_dir: str = ""
    gpus: list[str] = field(default_factory=list)
    tensorboard_url: str | None = None
    log_dir: str | None = None
    restart_count: int = 0
    _port_fd: int | None = field(default=None, repr=False)
    _hub_port: int | None = field(default=None, repr=False)  # the feed hub's TCP port (chief/workers, SPARK mode)
    _progress: Any = field(default=None, repr=False, compare=False)  # set in the TF process
    _feeds: dict = field(default_factory=dict, repr=False, compare=False)  # qname -> DataFeed, in the TF process

    # TensorFlowOnSpark spellings ------------------------------------------------------------
    @property
    def defaultFS(self) -> str:  # noqa: N802 - TensorFlowOnSpark name
        return self.default_fs

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    @property
    def mgr(self) -> NodeContext:
        """Handle passed to ``TFNode.DataFeed(ctx.mgr, ...)``; the context itself carries the feed."""
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_progress": None, "_feeds": {}}  # the reporter's thread and socket stay in this process

    # behaviour ------------------------------------------------------------------------------
    def report(self, step: int | None = None, loss: float | None = None, **metrics: Any) -> None:
        """Send training progress to the driver (``cluster.status()``, its progress log line); never blocks.

        ``examples=`` (examples seen so far) adds examples/s, ``epoch=`` the epoch; other keywords
        are metrics (numbers). The latest report is sent at most once a second. Outside a TF
        process started by tfos it does nothing.
        """
        if self._progress is not None:
            self._progress.report(step=step, loss=loss, **metrics)

    def absolute_path(self, path: str) -> str:
        """Resolve ``path`` against the cluster's default file system (``fs.defaultFS``)."""
        from tfos.io.paths import absolute_path

        return absolute_path(path, self.default_fs, self.working_dir)

    def release_port(self) -> None:
        """Close the port reserved at registration (needed when ``run(..., release_port=False)``)."""
        if self._port_fd is not None:
            try:
                socket.socket(fileno=self._port_fd).close()
            except OSError:
                os.close(self._port_fd)
            self._port_fd = None

    def start_cluster_server(self, num_gpus: int = 1, rdma: bool = False,
                             config: Any = None) -> tuple[Any, Any]:
        """Start a tf.compat.v1 in-process server for this node; returns ``(cluster_spec, server)``.

        For legacy graph-mode scripts (``replica_device_setter``, ``MonitoredTrainingSession``).
        The node's GPUs are already selected through ``CUDA_VISIBLE_DEVICES``; ``num_gpus`` only
        caps how many of them this server uses.
        """
        import tensorflow as tf

        if rdma:
            logger.warning("rdma=True is not supported by TensorFlow 2.x; using gRPC")
        if self.job_name == "evaluator":
            raise RuntimeError("the evaluator is not part of the training cluster; it has no cluster server")
        self.release_port()
        spec = {job: addrs for job, addrs in self.cluster_spec.items() if job != "evaluator"}
        cluster = tf.train.ClusterSpec(spec)
        if config is None:
            config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
            if self.gpus:
                config.gpu_options.allow_growth = True
                config.device_count["GPU"] = min(num_gpus, len(self.gpus))
            else:
                config.device_count["GPU"] = 0
        server = tf.distribute.Server(cluster, job_name=self.job_name, task_index=self.task_index,
                                      config=config, start=True)
        return cluster, server

    def get_data_feed(self, train_mode: bool = True, qname_in: str = "input", qname_out: str = "output",
                      input_mapping: dict[str, str] | list[str] | None = None) -> Any:
        """The InputMode.SPARK feed of this node (``TFNode.DataFeed``)."""
        from tfos.feed.datafeed import DataFeed

        return DataFeed(self, train_mode, qname_in, qname_out, input_mapping)  # registers in self._feeds

    def feed_stats(self) -> dict[str, dict[str, int]]:
        """Per open feed (``qname``): rows read, rows queued, epochs read (empty outside InputMode.SPARK)."""
        out = {}
        for qname, feed in list(self._feeds.items()):
            try:
                out[qname] = feed.stats()
            except Exception:  # noqa: BLE001 - a closing feed: leave it out this time
                continue
        return out
