"""The TF process of one node: runs the user's ``main_fun(args, ctx)`` under supervision.

Started by ``tfos.cluster.node`` as ``python -m tfos.cluster.tf_process PAYLOAD``. It reports
its state to the driver (running, finished, failed with traceback and last log lines),
sends heartbeats, and leaves as soon as the driver asks the cluster to stop. Its output and
logging reach the driver through the relay (``tfos.cluster.relay``), ``ctx.report`` progress
through a ``ProgressReporter``, and its thread stacks when the driver asks (``tfos.cluster.stacks``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import traceback
from typing import Any

from tfos.cluster import lifetime
from tfos.cluster.node_logging import LogTail, configure_process_logging
from tfos.cluster.payload import PayloadForProcess
from tfos.cluster.progress import ProgressReporter
from tfos.cluster.relay import OutputRelay
from tfos.cluster.stacks import thread_stacks
from tfos.feed.registry import mark_tf_failed, mark_tf_finished
from tfos.reservation.client import ReservationClient, ReservationError
from tfos.reservation.server import FAILED, FINISHED, RUNNING, STOPPED

logger = logging.getLogger("tfos.node")

HEARTBEAT_MISSES_BEFORE_EXIT = 30
STOP_POLL_SECS = 600.0


class NodeProcess:
    """Owns the threads and children of one TF process."""

    def __init__(self, payload: PayloadForProcess, tail: LogTail, relay: OutputRelay | None = None):
        self.payload = payload
        self.ctx = payload.ctx
        self.tail = tail
        self.relay = relay
        cfg = payload.config
        self.reporter = ReservationClient(cfg.server_address, cfg.secret)
        self.progress = ProgressReporter(ReservationClient(cfg.server_address, cfg.secret, timeout=5.0),
                                         self.ctx.executor_id)
        self.ctx._progress = self.progress
        self.main_done = threading.Event()
        self.stop_requested = threading.Event()
        self.tensorboard: subprocess.Popen | None = None
        self.hub: Any = None  # the feed hub (InputMode.SPARK chief/workers)

    def _heartbeats(self) -> None:
        cfg = self.payload.config
        client = ReservationClient(cfg.server_address, cfg.secret, timeout=10.0)
        misses = 0
        answered = 0  # the last stack request answered
        while not self.stop_requested.wait(cfg.heartbeat_interval):
            try:
                reply = client.heartbeat_reply(self.ctx.executor_id, feed=self.ctx.feed_stats())
                misses = 0
                wanted = reply.get("stacks")
                if isinstance(wanted, int) and wanted > answered:
                    answered = wanted
                    client.stacks(self.ctx.executor_id, wanted, thread_stacks())
            except Exception as exc:  # noqa: BLE001 - ReservationError, or any OSError the client let through
                misses += 1
                logger.debug("heartbeat %d failed: %s", misses, exc)
                if misses >= HEARTBEAT_MISSES_BEFORE_EXIT:
                    logger.error("driver unreachable for %d heartbeats (%s); exiting so no TF process is "
                                 "left behind", misses, exc)
                    self._exit(3)

    def _stop_watcher(self) -> None:
        cfg = self.payload.config
        client = ReservationClient(cfg.server_address, cfg.secret)
        while True:
            try:
                if client.await_stop(self.ctx.executor_id, STOP_POLL_SECS):
                    break
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any error: it is how the node stops
                logger.warning("lost the stop channel to the driver: %s", exc)
                self.stop_requested.wait(cfg.heartbeat_interval)
        self.stop_requested.set()
        if not self.main_done.is_set():
            logger.info("driver requested stop while main_fun was running; exiting")
            self._report(STOPPED)
            self._exit(0)

    def _report(self, state: str, error: str | None = None) -> None:
        try:
            self.reporter.report(self.ctx.executor_id, state, error=error,
                                 log_tail=self.tail.tail() if error else None)
        except ReservationError as exc:
            logger.warning("could not report state %s to the driver: %s", state, exc)

    def _start_tensorboard(self) -> None:
        port = self.payload.tensorboard_port
        if port is None:
            return
        logdir = self.ctx.log_dir or os.path.join(self.ctx.working_dir or os.getcwd(), "tensorboard")
        if "://" not in logdir or logdir.startswith("file://"):
            os.makedirs(logdir.removeprefix("file://"), exist_ok=True)
        self.tensorboard = subprocess.Popen(  # gets SIGTERM when this process ends, however it ends
            lifetime.guarded_command([sys.executable, "-m", "tensorboard.main", "--logdir", logdir,
                                      "--port", str(port), "--bind_all"]),
            stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)),
        )
        logger.info("TensorBoard at %s (logdir %s)", self.ctx.tensorboard_url, logdir)

    def _start_feed_hub(self) -> None:
        """InputMode.SPARK chief/workers: the hub the training feed tasks send this node's rows to."""
        port = self.ctx._hub_port
        if port is None:
            return
        from tfos.feed.hub import FeedHub

        node = {"job_name": self.ctx.job_name, "task_index": self.ctx.task_index, "feed_dir": self.ctx.feed_dir,
                "pid": os.getpid()}
        try:
            self.hub = FeedHub(node, self.payload.config.secret, port).start()
        except OSError as exc:  # the port was taken in the moment between the node's release and now
            logger.error("could not start the feed hub on port %d: %s; cluster.train() cannot reach this node", port,
                         exc)

    def _close_hub(self, reason: str) -> None:
        """End the feeds still open at this node's hub, so the driver hears of it before the process exits."""
        if self.hub is not None:
            try:
                self.hub.close(reason)
            except Exception:  # noqa: BLE001 - the exit goes on
                logger.exception("closing the feed hub failed")

    def _exit(self, code: int) -> None:
        if self.tensorboard is not None:
            self.tensorboard.terminate()
        self.progress.close()
        sys.stdout.flush()
        sys.stderr.flush()
        if self.relay is not None:
            self.relay.close()  # the last lines (a traceback) reach the driver before the exit
        logging.shutdown()
        os._exit(code)

    def _stop_tensorboard(self) -> None:
        if self.tensorboard is not None:
            lifetime.terminate_children([self.tensorboard.pid], grace=2.0)

    def run(self) -> None:
        owner = os.environ.get(lifetime.OWNER_ENV, "")
        if owner.isdigit():
            lifetime.exit_with_owner(int(owner), on_exit=self._stop_tensorboard,
                                     what=f"TF process of {self.ctx.job_name}:{self.ctx.task_index}")
        for target in (self._heartbeats, self._stop_watcher):
            threading.Thread(target=target, name=f"tfos-{target.__name__.strip('_')}", daemon=True).start()
        self._start_tensorboard()
        self._start_feed_hub()
        logger.info("TF process sees GPU(s) %s (CUDA_VISIBLE_DEVICES=%s)", ",".join(self.ctx.gpus) or "none",
                    os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
        self._report(RUNNING)
        logger.info("TF process pid %d runs main_fun", os.getpid())
        try:
            self.payload.config.main_fun(self.payload.config.tf_args, self.ctx)
        except BaseException:  # noqa: BLE001 - any failure of the user's code is reported, then exits
            error = traceback.format_exc()
            logger.error("main_fun raised:\n%s", error)
            mark_tf_failed(self.ctx.feed_dir, error)
            self._close_hub("main_fun failed")
            self.main_done.set()
            self._report(FAILED, error=error)
            self._exit(1)
        self.main_done.set()
        mark_tf_finished(self.ctx.feed_dir)
        self._close_hub("main_fun finished")
        logger.info("main_fun finished")
        self._report(FINISHED)
        if self.tensorboard is not None:
            logger.info("keeping TensorBoard up until the cluster shuts down")
            self.stop_requested.wait()
        self._exit(0)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: python -m tfos.cluster.tf_process PAYLOAD")
    # The executor's import path first, so that main_fun's modules (--py-files) unpickle.
    for entry in reversed(os.environ.get("TFOS_SYS_PATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)
    from pyspark import cloudpickle

    with open(argv[1], "rb") as f:
        payload: PayloadForProcess = cloudpickle.load(f)
    os.unlink(argv[1])
    cfg = payload.config
    relay = OutputRelay.for_node(cfg.server_address, cfg.secret, payload.ctx.executor_id)
    tail = configure_process_logging(os.environ.get("TFOS_NODE", "node"), relay=relay)
    NodeProcess(payload, tail, relay).run()


if __name__ == "__main__":
    main(sys.argv)
