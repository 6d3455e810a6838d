"""The driver-side TF cluster: start, monitor, feed, shut down."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from tfos.cluster import template
from tfos.cluster.cluster_state import ClusterState
from tfos.cluster.context import NodeContext
from tfos.cluster.failure_detection import Failure, detect_failures, is_root_cause, unresponsive
from tfos.cluster.failure_policy import Decision, FailurePolicy
from tfos.cluster.input_mode import InputMode
from tfos.cluster.node import Node
from tfos.cluster.payload import NodeConfig
from tfos.cluster.spark_launcher import NodeLauncher, SparkLauncher
from tfos.cluster.spawner import ProcessSpawner, check_spawner
from tfos.cluster.validation import (
    ClusterConfigError,
    validate_arguments,
    validate_spark,
    validate_spark_feed,
)
from tfos.driver_address import driver_address
from tfos.reservation import protocol
from tfos.reservation.server import FAILED as NODE_FAILED
from tfos.reservation.server import RUNNING as NODE_RUNNING
from tfos.reservation.server import TERMINAL_STATES, NodeRecord, ReservationServer

logger = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_TIMEOUT = 259200  # 3 days, as in TensorFlowOnSpark
DEFAULT_EPOCHS = 10  # train(num_epochs=0): TensorFlowOnSpark's "unspecified"
NODE_SILENCE_SECS = 30.0
STOP_WAIT_SECS = 60.0
RESTART_WAIT_SECS = 120.0  # how long a restart waits for Spark to have enough executors again
FEED_FAILURE_GRACE_SECS = 10.0  # a failed feed waits this long for the monitor to name a dead node

# Spark's error for a failed barrier start task: its partition (the index into the start job's executor ids), why
_FAILED_START_TASK = re.compile(r"barrier task ResultTask\(\d+, (\d+)\) finished unsuccessfully\.?\s*"
                                r"(?:[\w.$]+(?:Exception|Error): )?([^\n]*)")

# Lifecycle states of a TFCluster, under their former names (they compare equal to the strings).
STARTING, RUNNING, SHUTTING_DOWN, STOPPED = (ClusterState.STARTING, ClusterState.RUNNING,
                                             ClusterState.SHUTTING_DOWN, ClusterState.STOPPED)
FAILED_STATE = ClusterState.FAILED


def _describe(node: NodeRecord) -> str:
    return f"{node.name} (executor {node.executor_id} on {node.host})"


class NodeFailure(RuntimeError):
    """A TF node raised or died. Names the node and carries its traceback and last log lines.

    When several nodes failed at once, the first one's attributes are these and ``failed_nodes``
    names them all; the message gives the first node's traceback first, then the others' errors.
    """

    def __init__(self, node: NodeRecord, error: str | None = None, others: Sequence[Failure] = ()):
        self.node_name = node.name
        self.executor_id = node.executor_id
        self.host = node.host
        self.traceback = (node.error if error is None else error) or ""
        self.log_tail = list(node.log_tail)
        self.others = list(others)
        self.failures = [Failure(node, self.traceback)] + self.others
        self.failed_nodes = [f.node.name for f in self.failures]
        tail = "\n".join(self.log_tail[-20:])
        message = (f"TF node {_describe(node)} failed:\n{self.traceback}"
                   + (f"\n--- last log lines of {node.name} ---\n{tail}" if tail else ""))
        if self.others:
            message += (f"\n--- {len(self.others)} more node(s) failed at the same time: "
                        + ", ".join(_describe(f.node) for f in self.others) + " ---")
            for other in self.others:
                message += f"\nTF node {_describe(other.node)} failed:\n{other.error}"
        super().__init__(message)

    @classmethod
    def of(cls, failures: Sequence[Failure]) -> NodeFailure:
        """One exception for every failure in ``failures`` (not empty), the first one leading."""
        if not failures:
            raise ValueError("NodeFailure.of() needs at least one failure")
        first, *others = failures
        return cls(first.node, first.error, others)


def _executor_lost_error(node: NodeRecord, spark_id: str, reason: str) -> str:
    """Why a node whose Spark executor (YARN container) went away failed, with Spark's reason."""
    from tfos.cluster.executor_loss import memory_hint

    return (f"its Spark executor {spark_id} (container {node.info.get('container_id') or 'n/a'}) "
            f"was lost: {reason}{memory_hint(reason)}")


def _executor_lost(node: NodeRecord, spark_id: str, reason: str) -> NodeFailure:
    """The failure of a node whose Spark executor (YARN container) went away, with Spark's reason."""
    node.error = _executor_lost_error(node, spark_id, reason)
    return NodeFailure(node)


def _absolute(path: str, working_dir: str) -> str:
    """``path`` with a scheme as it is; a relative local path under ``working_dir``."""
    from tfos.io.filesystem import split_url

    return path if split_url(path)[0] else os.path.join(working_dir, path)


def _default_fs(sc: Any) -> str:
    try:
        from tfos.io.paths import default_fs
    except ImportError:  # pragma: no cover - tfos.io arrives with the HDFS work
        return sc._jsc.hadoopConfiguration().get("fs.defaultFS")
    return default_fs(sc)


class TFCluster:
    """A running TF cluster on Spark executors. Use ``tfos.run(...)`` to create one."""

    def __init__(self, sc: Any, config: NodeConfig, server: ReservationServer, template_: template.ClusterTemplate,
                 driver_ps_nodes: bool, *, max_restarts: int = 0, launcher: NodeLauncher | None = None,
                 new_server: Callable[[], ReservationServer] | None = None, log_progress: bool = True):
        self.sc = sc
        self.config = config
        self.server = server
        self.launcher: NodeLauncher = launcher if launcher is not None else SparkLauncher(sc)
        self.policy = FailurePolicy(max_restarts)
        self.restart_count = 0  # generations started after the first (ctx.restart_count of the current one)
        self.restart_wait_secs = RESTART_WAIT_SECS
        self.stop_wait_secs = STOP_WAIT_SECS
        self.registration_note_secs = 15.0  # how often a start that waits for nodes says which
        self.restarts: list[dict[str, Any]] = []  # one record per restart: what failed, when, how long it took
        self._new_server = new_server or (lambda: ReservationServer(len(template_), protocol.new_secret(),
                                                                    host=config.server_address[0]))
        self._log_progress = log_progress
        self.plot_path: str | None = None  # where shutdown writes the progress PNG (tfos.run(plot=...))
        self._earlier_history: dict[str, list[dict[str, float]]] = {}  # progress of the failed generations
        self._feed_progress: Any = None  # the latest train()'s feed ProgressServer (rows fed per node)
        self._previous_failures: list[Failure] = []
        self.template = template_
        self.driver_ps_nodes = driver_ps_nodes
        self.cluster_id = config.cluster_id
        self.input_mode = config.input_mode
        self._state = ClusterState.STARTING
        self._state_lock = threading.RLock()  # guards _state and _error
        self.node_silence_secs = NODE_SILENCE_SECS  # a RUNNING node silent this long has died
        self.failure_gather_secs = 3.0  # after a main raised, how long to wait for a node that died with it
        self.cluster_info: list[dict[str, Any]] = []
        self.cluster_spec: dict[str, list[str]] = {}
        self.tensorboard_url: str | None = None
        self.shutdown_reason: str | None = None  # why shutdown(ssc) stopped the stream
        self._error: BaseException | None = None
        self._failed_at = 0.0  # time.monotonic() when this generation's failure was recorded
        self._generation = 0  # bumps when a restart swaps in the next generation's server and config
        self._start_done = threading.Event()
        self._monitor_stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # lifecycle --------------------------------------------------------------------------------
    @property
    def state(self) -> ClusterState:
        """Where the cluster is in its life (a ``ClusterState``, equal to its string value)."""
        return self._state

    def _transition(self, new: ClusterState, why: str) -> bool:
        """Move to ``new`` (the only writer of the state); False when already there (a no-op).

        Raises ``RuntimeError`` on a move ``ClusterState`` does not allow.
        """
        with self._state_lock:
            old = self._state
            if old == new:
                return False
            if not old.can_move_to(new):
                raise RuntimeError(f"TF cluster {self.cluster_id}: illegal state change {old.value} -> "
                                   f"{new.value} ({why})")
            self._state = new
        logger.info("TF cluster %s: %s -> %s (%s)", self.cluster_id, old.value, new.value, why)
        return True

    # what the cluster is ------------------------------------------------------------------------
    @property
    def default_fs(self) -> str:
        """The file system paths without a scheme resolve against (``fs.defaultFS``)."""
        return self.config.default_fs

    @property
    def working_dir(self) -> str:
        """The driver's working directory when the cluster started (relative local paths)."""
        return self.config.working_dir

    @property
    def num_executors(self) -> int:
        """Nodes in the TF cluster, one per executor (parameter servers on the driver included)."""
        return len(self.template)

    @property
    def stop_key(self) -> bytes:
        """Signs an external stop request (``reservation.client.request_stop``) and nothing else."""
        return self.server.stop_key

    @property
    def server_addr(self) -> tuple[str, int, str]:
        """``(host, port, stop token)``: what ``tfos.reservation.Client(addr).request_stop()`` needs."""
        host, port = self.config.server_address
        return host, port, self.server.stop_key.hex()

    @property
    def cluster_meta(self) -> dict[str, Any]:
        """TensorFlowOnSpark's ``cluster_meta``: id, roles by executor, file system, reservation address."""
        roles: dict[str, list[int]] = {}
        for eid, (job, _) in enumerate(self.template.roles):
            roles.setdefault(job, []).append(eid)
        return {"id": self.cluster_id, "cluster_template": roles, "num_executors": self.num_executors,
                "default_fs": self.default_fs, "working_dir": self.working_dir, "server_addr": self.server_addr,
                "release_port": self.config.release_port}

    # start ----------------------------------------------------------------------------------
    @property
    def start_group(self) -> str:
        return f"tfos-{self.cluster_id}-start"

    @property
    def feed_group(self) -> str:
        return f"tfos-{self.cluster_id}-feed"

    def _launch(self) -> None:
        """Start this generation's nodes: the start job in a thread, parameter servers on the driver."""
        offset = self.config_ps_on_driver()
        executor_ids = list(range(offset, len(self.template)))
        config, generation, done = self.config, self._generation, self._start_done
        where = f" (generation {generation}, restart {self.restart_count})" if self.restart_count else ""

        def run_start_job() -> None:
            try:
                self.launcher.run_start_job(config, executor_ids, self.start_group,
                                            f"tfos {self.cluster_id}: start {len(executor_ids)} TF nodes{where}")
            except Exception as exc:  # noqa: BLE001 - surfaced through _fail
                if self.state not in (ClusterState.SHUTTING_DOWN, ClusterState.STOPPED):
                    self._fail(self._start_job_failure(server, str(exc), executor_ids) or exc, generation)
            finally:
                done.set()

        # Watch from the launch on: a node that fails before every node registered ends the wait.
        server, stop = self.server, self._monitor_stop
        self._spawn(lambda: self._monitor(server, stop, generation), "tfos-monitor")
        if executor_ids:
            self._spawn(run_start_job, "tfos-start-job", inheritable=True)
        else:
            done.set()
        for eid in range(offset):
            self._spawn(lambda eid=eid: self._run_driver_node(config, eid, generation), f"tfos-driver-ps-{eid}")

    def config_ps_on_driver(self) -> int:
        return len(self.template.executors_of(template.PS)) if self.driver_ps_nodes else 0

    def _run_driver_node(self, config: NodeConfig, executor_id: int, generation: int) -> None:
        try:
            Node(config, executor_id).start()
        except Exception as exc:  # noqa: BLE001 - surfaced through _fail
            if self.state not in (ClusterState.SHUTTING_DOWN, ClusterState.STOPPED):
                self._fail(exc, generation)

    def _spawn(self, target: Callable[[], None], name: str, inheritable: bool = False) -> None:
        if inheritable:
            from pyspark import InheritableThread

            thread: threading.Thread = InheritableThread(target=target, name=name, daemon=True)
        else:
            thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _await_start(self) -> None:
        self.cluster_info = self.server.await_reservations(self.config.reservation_timeout,
                                                           on_wait=self._log_registration_wait,
                                                           every=self.registration_note_secs)
        self.cluster_spec = template.cluster_spec(self.cluster_info)
        self.tensorboard_url = next(
            (f"http://{n['host']}:{n['tb_port']}" for n in self.cluster_info if n.get("tb_port")), None)
        self._transition(ClusterState.RUNNING, "every node registered"
                         + (f", generation {self._generation}" if self._generation else ""))
        logger.info("TF cluster %s is up: %s", self.cluster_id, self.cluster_spec)
        if self.tensorboard_url:
            logger.info("TensorBoard running at: %s", self.tensorboard_url)
        server = self.server
        if self._log_progress:
            from tfos.cluster import progress

            self._spawn(lambda: progress.log_progress(server, self.cluster_id), "tfos-progress")

    def _log_registration_wait(self, missing: list[int], waited: float) -> None:
        """Every ~15 s of a start: which nodes have not registered yet, and on YARN what YARN says."""
        names = ", ".join(f"{self.template.roles[e][0]}:{self.template.roles[e][1]} (executor {e})" for e in missing)
        why = ""
        if str(getattr(self.sc, "master", "")).startswith("yarn"):
            from tfos.cluster import yarn

            try:
                why = yarn.explain_waiting(self.sc)
            except Exception as exc:  # noqa: BLE001 - an explanation must never break the start
                why = f"(the ResourceManager could not say: {exc})"
        logger.info("TF cluster %s: waited %.0fs of %.0fs for %d of %d TF nodes to register: %s%s", self.cluster_id,
                    waited, self.config.reservation_timeout, len(missing), len(self.template), names,
                    f"; {why}" if why else "")

    def _start(self) -> None:
        """Launch the nodes and wait until every one registered; a start failure the policy may
        cure starts the next generation, any other stops what started and raises."""
        while True:
            self._launch()
            try:
                self._await_start()
                return
            except Exception:
                if self.state == ClusterState.RESTARTING:
                    self._next_generation()
                    continue
                failure = self._error  # set when a start task failed first and woke the wait
                with self._state_lock:
                    if not self.state.is_terminal:
                        self._transition(ClusterState.SHUTTING_DOWN, "the start failed")
                self._stop_nodes(wait_secs=5.0)
                self._transition(ClusterState.FAILED, "the start failed")
                if failure is not None:
                    raise failure from None
                raise

    # restarts -------------------------------------------------------------------------------
    def _restart(self) -> None:
        """Stop the failed generation, then start the next one (in the calling thread)."""
        self._next_generation()
        self._start()

    def _next_generation(self) -> None:
        """Stop every node of the failed generation, wait (bounded) for Spark to have the executors
        again, and swap in a fresh reservation server and config; the state goes back to STARTING."""
        failure = self._error
        began = time.monotonic()
        failures = failure.failures if isinstance(failure, NodeFailure) else []
        what = ", ".join(f.node.name for f in failures) or type(failure).__name__
        logger.warning("TF cluster %s: %s failed; stopping every node of generation %d before restart %d of "
                       "max_restarts=%d", self.cluster_id, what, self._generation, self.restart_count + 1,
                       self.policy.max_restarts)
        self._stop_nodes(wait_secs=self.stop_wait_secs)
        self._previous_failures = failures
        spark_tasks = len(self.template) - self.config_ps_on_driver()
        if spark_tasks:
            logger.info("TF cluster %s: waiting up to %.0fs for %d executors to run generation %d", self.cluster_id,
                        self.restart_wait_secs, spark_tasks, self._generation + 1)
            try:
                self.launcher.await_executors(spark_tasks, self.restart_wait_secs)
            except Exception as exc:
                self._transition(ClusterState.FAILED, f"no executors for the next generation: {exc}")
                if failure is not None:
                    failure.add_note(f"tfos could not restart the cluster: {exc}")
                    raise failure from exc
                raise
        for name, points in self.server.progress_history().items():
            self._earlier_history.setdefault(name, []).extend(points)
        server = self._new_server()
        server.log_sink = self.server.log_sink
        address = server.start()
        with self._state_lock:
            self.restart_count += 1
            self._generation += 1
            self.server = server
            self.config = replace(self.config, cluster_id=f"{self.cluster_id}r{self.restart_count}",
                                  secret=server.secret, server_address=address, restart_count=self.restart_count)
            self._error = None
            self._start_done = threading.Event()
            self._monitor_stop = threading.Event()
            self.restarts.append({"restart": self.restart_count, "failed": [f.node.name for f in failures],
                                  "error": str(failure).splitlines()[0] if failure is not None else "",
                                  "detected_at": self._failed_at, "restarted_at": time.monotonic(),
                                  "stop_seconds": round(time.monotonic() - began, 1)})
            self._transition(ClusterState.STARTING, f"generation {self._generation} after {what} failed "
                                                    f"(restart {self.restart_count} of {self.policy.max_restarts})")

    # monitoring -----------------------------------------------------------------------------
    def _fail(self, exc: BaseException, generation: int | None = None) -> None:
        """Record this generation's first failure and stop its jobs; the failure policy says whether
        the next caller restarts (RESTARTING) or raises (FAILED). Later failures, failures of an
        older generation and any after the cluster stopped are ignored. Safe from any thread."""
        with self._state_lock:
            stale = generation is not None and generation != self._generation
            if stale or self._error is not None or self._state.is_terminal:
                return
            self._error = exc
            self._failed_at = time.monotonic()
            decision = self._decide(exc)
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            restart = decision.restart and self._state in (ClusterState.STARTING, ClusterState.RUNNING)
            self._transition(ClusterState.RESTARTING if restart else ClusterState.FAILED,
                             f"{type(exc).__name__}: {first_line}; {decision.reason}")
            server = self.server
        if restart:
            logger.warning("TF cluster %s: a node failed, the cluster restarts (%s): %s", self.cluster_id,
                           decision.reason, exc)
        else:
            if self.policy.max_restarts:
                exc.add_note(f"tfos did not restart the cluster: {decision.reason}")
            logger.error("TF cluster %s failed: %s", self.cluster_id, exc)
        server.abort(str(exc))
        for group in [self.start_group] + ([self.feed_group] if self.input_mode == InputMode.SPARK else []):
            self.launcher.cancel(group)

    def _decide(self, exc: BaseException) -> Decision:
        if not isinstance(exc, NodeFailure):
            return Decision(False, f"a {type(exc).__name__} is not a node failure, so no restart")
        return self.policy.decide(exc.failures, self.restart_count, self._previous_failures)

    def _lost_node_failure(self, job_error: str) -> NodeFailure | None:
        """A start job that failed because an executor died names the node on it, with Spark's reason."""
        by_spark_id = {str(n.info["spark_executor_id"]): n for n in self.server.nodes()
                       if n.info.get("spark_executor_id")}
        lost = self.launcher.lost_executors(set(by_spark_id))
        lost = lost or {e: r for e, r in self.launcher.lost_in_job_error(job_error).items() if e in by_spark_id}
        for spark_id, reason in lost.items():
            node = by_spark_id[spark_id]
            if node.state not in TERMINAL_STATES:
                return _executor_lost(node, spark_id, reason)
        return None

    def _monitor(self, server: ReservationServer, stop: threading.Event, generation: int) -> None:
        """One generation's failure detection: node reports and silence, then lost executors."""
        version = -1
        interval = self.config.heartbeat_interval
        stuck: set[int] = set()  # executor ids of the live but silent nodes warned about
        while not stop.is_set():
            version = server.wait_for_change(version, timeout=interval)
            nodes = server.nodes()
            stuck = self._warn_unresponsive(nodes, stuck)
            failures = detect_failures(nodes, time.monotonic(), self.node_silence_secs)
            if failures:
                failures = self._gather_failures(server, failures)
                self._fail(NodeFailure.of(failures), generation)
                return
            lost = self._lost_failures(nodes)
            if lost:
                self._fail(NodeFailure.of(lost), generation)
                return

    def _warn_unresponsive(self, nodes: list, warned: set[int]) -> set[int]:
        """Warn once about each node whose TF process lives (its supervisor says) but sends no
        heartbeat, and say when it answers again; returns the nodes silent now."""
        now = time.monotonic()
        silent = {n.executor_id: n for n in unresponsive(nodes, now, self.node_silence_secs)}
        for eid, node in silent.items():
            if eid not in warned:
                logger.warning(
                    "%s (executor %d on %s): no heartbeat from its TF process for %.0fs, but the process is alive "
                    "(%.1f CPU-seconds so far, says its supervisor): its main is in a long call that holds the GIL, "
                    "or the process is stopped. tfos keeps waiting (py-spy dump --pid shows where it is)",
                    node.name, eid, node.host, now - node.last_seen, node.process_cpu or 0.0)
        for node in nodes:
            if node.executor_id in warned and node.executor_id not in silent and node.state == NODE_RUNNING:
                logger.info("%s (executor %d) sends heartbeats again", node.name, node.executor_id)
        return set(silent)

    def _lost_failures(self, nodes: list) -> list[Failure]:
        """The nodes whose executor Spark lost while they had not finished (YARN's reason included)."""
        watched = {str(n.info["spark_executor_id"]): n for n in nodes
                   if n.state not in TERMINAL_STATES and n.info.get("spark_executor_id")}
        if not watched:
            return []
        return [Failure(node, _executor_lost_error(node, spark_id, reason))
                for spark_id, reason in self.launcher.lost_executors(set(watched)).items()
                if (node := watched[spark_id]).state not in TERMINAL_STATES]  # not finished before it went

    def _start_job_failure(self, server: ReservationServer, job_error: str,
                           executor_ids: list[int]) -> NodeFailure | None:
        """The failed start job as a node failure: the node of an executor Spark lost; else the nodes'
        own reports, waiting up to ``failure_gather_secs`` for them (the reservation server notices a
        start task that died a moment after Spark does); else the node of the start task Spark names."""
        lost = self._lost_node_failure(job_error)
        if lost is not None:
            return lost
        deadline = time.monotonic() + self.failure_gather_secs
        version = server.version
        while (reported := self._reported_failure(server)) is None and time.monotonic() < deadline:
            version = server.wait_for_change(version, timeout=max(0.0, min(0.5, deadline - time.monotonic())))
        if reported is not None:
            return reported
        match = _FAILED_START_TASK.search(job_error)
        if match is None or int(match.group(1)) >= len(executor_ids):
            return None
        eid = executor_ids[int(match.group(1))]
        node = next((n for n in server.nodes() if n.executor_id == eid), None)
        if node is None:  # it never registered: what the template says it was
            job, index = self.template.roles[eid]
            node = NodeRecord(eid, "an executor", 0, job, index, {})
        reason = match.group(2).strip() or "no reason given"
        return NodeFailure(node, f"its start task failed in Spark before the cluster started: {reason}")

    def _reported_failure(self, server: ReservationServer) -> NodeFailure | None:
        """The nodes' own failure reports, when the start job failed because a node did (its traceback
        says more than Spark's job error)."""
        failures = detect_failures(server.nodes(), time.monotonic(), self.node_silence_secs)
        return NodeFailure.of(failures) if failures else None

    def _gather_failures(self, server: ReservationServer, failures: list[Failure]) -> list[Failure]:
        """A moment more (``failure_gather_secs``) for the failures that come together: a killed
        worker's peers often report their collective errors before its supervisor reports it."""
        if any(is_root_cause(f.error) for f in failures):
            return failures
        deadline = time.monotonic() + self.failure_gather_secs
        version = server.version
        while True:
            lost = self._lost_failures(server.nodes())  # a peer's collective error often comes before Spark's loss
            if lost:  # the lost executor's node leads: its container died (YARN's memory check, preemption)
                gone = {x.node.executor_id for x in lost}
                return lost + [f for f in failures if f.node.executor_id not in gone]
            if time.monotonic() >= deadline:
                return failures
            version = server.wait_for_change(version, timeout=max(0.0, min(0.5, deadline - time.monotonic())))
            failures = detect_failures(server.nodes(), time.monotonic(), self.node_silence_secs)
            if any(is_root_cause(f.error) for f in failures):
                return failures

    def _raise_if_failed(self) -> bool:
        """Raise the cluster's failure; when the policy chose a restart, run it here, in the caller's
        thread, and return True (the caller's wait goes on with the next generation)."""
        if self.state == ClusterState.RESTARTING:
            self._restart()
            return True
        if self._error is not None:
            raise self._error
        return False

    def status(self) -> dict[str, dict[str, Any]]:
        """Per node (``"worker:1"``): state, step, loss, epoch, metrics, examples/s and steps/s when
        reported (``ctx.report`` / ``tfos.ProgressCallback``), seconds since its last heartbeat
        (``heartbeat_age``) and since its last progress report (``progress_age``); in InputMode.SPARK
        also ``feed_rows``, the rows per input the latest ``train()`` fed it so far."""
        from tfos.cluster.progress import node_status

        now = time.monotonic()
        rows = self._feed_progress.rows_by_node() if self._feed_progress is not None else {}
        status = {node.name: node_status(node, now) for node in self.server.nodes()}
        if self.input_mode == InputMode.SPARK:
            for name, row in status.items():
                row["feed_rows"] = dict(rows.get(name, {}))
        return status

    def progress_history(self) -> dict[str, list[dict[str, float]]]:
        """Every node's progress reports so far (``step``, ``time``, ``loss``, metrics), the failed
        generations' first: what the progress plot draws."""
        history = {name: list(points) for name, points in self._earlier_history.items()}
        for name, points in self.server.progress_history().items():
            history.setdefault(name, []).extend(points)
        return history

    def write_plot(self, path: str) -> str | None:
        """Write the progress PNG (one subplot per metric against step, one line per node) to ``path``
        (local, or any file system tfos reaches, e.g. ``hdfs://``) and log where; None when no node
        reported progress. Never raises: a plot is not worth failing a finished job for."""
        history = self.progress_history()
        if not history:
            logger.info("TF cluster %s: no node reported progress (ctx.report / tfos.ProgressCallback), so there "
                        "is no progress plot to write to %s", self.cluster_id, path)
            return None
        try:
            from tfos.cluster.progress_plot import write_progress_plot
            from tfos.io.filesystem import split_url

            title = f"tfos {self.cluster_id}" + (f" ({self.restart_count} restart(s))" if self.restart_count else "")
            scheme, _, local = split_url(path)
            if scheme in ("", "file"):
                os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
                write_progress_plot(history, local, title)
            else:
                import tempfile

                from tfos.io.filesystem import FileSystem

                with tempfile.TemporaryDirectory(prefix="tfos-plot-") as tmp:
                    local = write_progress_plot(history, os.path.join(tmp, "progress.png"), title)
                    with open(local, "rb") as f, FileSystem() as fs:
                        fs.write_bytes(path, f.read())
        except Exception as exc:  # noqa: BLE001 - logged, the job's own outcome stands
            logger.warning("TF cluster %s: could not write the progress plot to %s: %s", self.cluster_id, path, exc)
            return None
        logger.info("TF cluster %s: progress plot of %d node(s) written to %s", self.cluster_id, len(history), path)
        return path

    # feeding (InputMode.SPARK) ----------------------------------------------------------------
    def _require_spark_mode(self, what: str) -> None:
        if self.input_mode != InputMode.SPARK:
            raise ClusterConfigError(f"cluster.{what}() feeds Spark data and needs tfos.run(..., "
                                     f"input_mode=InputMode.SPARK); this cluster reads its own data")
        self._raise_if_failed()

    def train(self, data: Any, num_epochs: int = 1, feed_timeout: float = 600, qname: str = "input",
              remainder: str = "drop") -> Any:
        """Feed ``data`` to the chief/workers for ``num_epochs``; every worker gets the same rows per epoch.

        ``data`` is an RDD, a DataFrame, a dict of named inputs (``{"train": rdd, "validation": df}``,
        each read by ``ctx.get_data_feed(qname_in=name)``), a DStream or a streaming DataFrame.
        Row ``j`` of partition ``p`` goes to worker ``(p + j) mod num_workers``, so the workers'
        shards differ by at most one row per input partition. ``remainder``: ``"drop"`` feeds
        every worker the smallest shard's rows (the surplus left out, different rows each epoch),
        ``"wrap"`` the largest's (shorter shards repeat rows); the plan is logged.
        ``num_epochs=0`` feeds TensorFlowOnSpark's default of 10 epochs (stop early with
        ``DataFeed.terminate()``). Returns the feed report (a ``StreamingQuery`` for a
        streaming DataFrame).
        """
        self._require_spark_mode("train")
        if num_epochs < 0:
            raise ValueError(f"num_epochs must be >= 0 (0: {DEFAULT_EPOCHS} epochs), got {num_epochs}")
        if num_epochs == 0:
            logger.info("train(num_epochs=0): feeding %d epochs, as TensorFlowOnSpark does", DEFAULT_EPOCHS)
            num_epochs = DEFAULT_EPOCHS
        if remainder not in ("drop", "wrap"):
            raise ValueError(f"train(): remainder must be 'drop' or 'wrap', got {remainder!r}")
        from tfos.feed import feed_job

        epochs_left = num_epochs
        while True:
            try:
                report = feed_job.train(self.sc, data, cluster_id=self.config.cluster_id,
                                        num_workers=self.num_trainers, num_epochs=epochs_left,
                                        feed_timeout=feed_timeout, qname=qname, job_group=self.feed_group,
                                        remainder=remainder, on_error=self._fail,
                                        failure_known=lambda: self._error is not None,
                                        on_progress_server=self._watch_feed, hubs=self._feed_hubs(),
                                        secret=self.server.secret)
            except Exception as exc:
                self._recover_from_feed_failure(exc)
                epochs_left -= self._epochs_fed_before(exc, epochs_left)
                logger.info("TF cluster %s: feeding generation %d the %d epoch(s) left of %d", self.cluster_id,
                            self._generation, epochs_left, num_epochs)
                continue
            self._raise_if_failed()  # a failure after the feed ended: the next generation is fed its end
            return report

    def _feed_hubs(self) -> list[dict] | None:
        """The chief's and workers' feed hubs (``{"node", "host", "port", "hostname", "socket"}``: feed tasks on
        the hub's host use its Unix socket), in feed order; None when a node has none (the shuffle feed then
        routes)."""
        from tfos.feed.registry import TRAINER_JOBS

        trainers = sorted((n for n in self.cluster_info if n.get("job_name") in TRAINER_JOBS),
                          key=lambda n: (TRAINER_JOBS.index(n["job_name"]), n["task_index"]))
        if not trainers or any(not n.get("feed_port") for n in trainers):
            return None
        return [{"node": f"{n['job_name']}:{n['task_index']}", "host": n["host"], "port": n["feed_port"],
                 "hostname": n.get("hostname"), "socket": n.get("feed_socket")} for n in trainers]

    def _watch_feed(self, server: Any) -> None:
        self._feed_progress = server  # the latest feed's rows per node, for status()

    def _recover_from_feed_failure(self, exc: BaseException) -> None:
        """A feed that failed ends this generation. Returns once the cluster restarted (feed again);
        raises the node failure, or fails the cluster with the feed's error and stops its nodes."""
        from tfos.feed.feed_job import FeedJobError

        input_stage = isinstance(exc, FeedJobError) and not exc.feed_task  # no node was fed yet
        bad_data = "malformed row" in str(exc)  # the data is wrong, no node died: no need to wait
        if self._error is None and self.state not in (ClusterState.RESTARTING, ClusterState.FAILED) \
                and not bad_data:
            # The feed often notices a dead node before the monitor: give it time to name the node.
            deadline = time.monotonic() + FEED_FAILURE_GRACE_SECS
            version = -1
            while self._error is None and time.monotonic() < deadline:
                version = self.server.wait_for_change(version, timeout=0.5)
        if self._error is None:
            if input_stage:
                raise exc  # reading the input failed before any node was fed: the cluster can be fed again
            if "FeedTimeout" in str(exc) or isinstance(exc, TimeoutError):  # a node stopped reading: where is it?
                from tfos.cluster.stacks import log_live_stacks

                log_live_stacks(self.server, self.server.nodes(), f"the feed timed out ({str(exc).splitlines()[0]})")
            self._fail(self._lost_node_failure(str(exc.__cause__ or exc)) or exc)
        if not self._raise_if_failed():
            raise exc  # _fail ignored it: the cluster had already stopped

    def _epochs_fed_before(self, exc: BaseException, epochs: int) -> int:
        """How many of the ``epochs`` of a failed feed every worker got whole (not fed again); logs
        how many rows the interrupted epoch had fed, which the next generation gets once more."""
        fed = getattr(exc, "rows_fed", None)
        per_epoch = getattr(exc, "rows_per_epoch", None)
        if not fed or not per_epoch:
            logger.warning("TF cluster %s: the failed feed reported no progress; feeding all %d epoch(s) again",
                           self.cluster_id, epochs)
            return 0
        done = min(epochs, min((fed.get(q, 0) // n) if n else epochs for q, n in per_epoch.items()))
        twice = {q: fed.get(q, 0) - done * n for q, n in per_epoch.items()}
        logger.warning("TF cluster %s: the failed feed finished %d of %d epoch(s); %s row(s) of the interrupted "
                       "epoch are fed twice", self.cluster_id, done, epochs,
                       ", ".join(f"{q!r}: {r}" for q, r in twice.items()))
        return done

    def inference(self, data: Any, feed_timeout: float = 600, qname: str = "input",
                  output_schema: Any = None) -> Any:
        """Run ``data`` through the workers; one output per input row, in order within each partition.

        An RDD gives an RDD of the values passed to ``batch_results``. A DataFrame gives a
        DataFrame: with ``output_schema`` (a ``StructType`` or DDL string such as
        ``"prediction bigint, label bigint"``) its columns are built in Arrow, in one pass;
        without it the schema is inferred from the first partition's results, which Spark
        computes once more for that.
        """
        self._require_spark_mode("inference")
        from tfos.feed import feed_job

        return feed_job.inference(self.sc, data, cluster_id=self.config.cluster_id, num_workers=self.num_trainers,
                                  feed_timeout=feed_timeout, qname=qname, job_group=self.feed_group,
                                  output_schema=output_schema)

    @property
    def num_trainers(self) -> int:
        return len(self.template.executors_of(template.CHIEF, template.MASTER, template.WORKER))

    # shutdown -------------------------------------------------------------------------------
    def awaited_nodes(self) -> set[int]:
        """Executors whose main_fun must finish before shutdown stops the rest.

        With parameter servers and a chief, the chief coordinates (ParameterServerStrategy,
        or v1 between-graph training led by the chief) and workers may serve until stopped;
        otherwise every chief/master and worker trains and is waited for.
        """
        chiefs = self.template.executors_of(template.CHIEF, template.MASTER)
        if chiefs and self.template.executors_of(template.PS):
            return set(chiefs)
        return set(chiefs + self.template.executors_of(template.WORKER))

    def _wait_for_trainers(self, timeout: float) -> None:
        trainers = self.awaited_nodes()
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        version = -1
        while True:
            if self._raise_if_failed():
                version = -1
                if self.input_mode == InputMode.SPARK:
                    logger.warning("TF cluster %s: generation %d started after train() had fed its last rows, so "
                                   "it gets the end of the feed at once: rows the failed generation had not yet "
                                   "consumed are not fed again (its main resumes from its checkpoint and ends)",
                                   self.cluster_id, self._generation)
                    self._end_feed()  # the new generation's trainers wait for a feed that has ended
            states = {n.executor_id: n for n in self.server.nodes()}
            pending = [states[e] for e in trainers if states[e].state not in TERMINAL_STATES]
            reported = any(states[e].state == NODE_FAILED for e in trainers) and self._error is None
            if not pending and not reported:  # a failed node is waited for until the monitor has recorded it
                return
            if deadline is not None and time.monotonic() >= deadline:
                names = ", ".join(f"{n.name} (executor {n.executor_id} on {n.host})" for n in pending)
                from tfos.cluster.stacks import log_live_stacks

                stacks = log_live_stacks(self.server, self.server.nodes(), f"shutdown timed out after {timeout:.0f}s")
                raise TimeoutError(f"shutdown timed out after {timeout:.0f}s waiting for {names} to finish main_fun; "
                                   f"raise shutdown(timeout=...) or check those nodes' logs"
                                   + (f" (the Python stacks of {', '.join(stacks)} are logged above)" if stacks else ""))
            left = 5.0 if deadline is None else max(0.0, min(5.0, deadline - time.monotonic()))
            version = self.server.wait_for_change(version, timeout=left)

    def shutdown(self, ssc: Any = None, grace_secs: float = 0, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> None:
        """Wait for the chief and workers to finish, stop parameter servers and evaluators, and return.

        With a StreamingContext ``ssc`` it first waits until the stream ends: the context
        terminates, a stop request arrives (``tfos.reservation.Client(cluster.server_addr)
        .request_stop()`` from any process), or every chief/worker finished its main_fun; then
        it stops the stream gracefully (``shutdown_reason`` says which). ``grace_secs``: how long
        the other nodes that end on their own (an evaluator finishing its last evaluation, workers
        of a parameter-server cluster) get after the chief/workers finished before they are
        stopped; shutdown goes on as soon as they have ended. Raises the first node failure
        (``NodeFailure``) or a ``TimeoutError`` after ``timeout`` seconds (-1: no limit);
        either way every node is asked to stop first.
        """
        if self.state == ClusterState.STOPPED:
            return
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        try:
            if ssc is not None:
                self.shutdown_reason = self._await_stream_end(ssc, deadline)
                logger.info("stopping the StreamingContext: %s", self.shutdown_reason)
                ssc.stop(stopSparkContext=False, stopGraceFully=True)
            if self._error is None:
                self._end_feed()
            self._wait_for_trainers(-1 if deadline is None else max(0.0, deadline - time.monotonic()))
            if grace_secs > 0:
                self._await_others(grace_secs)
            self._raise_if_failed()
        finally:
            with self._state_lock:
                if not self._state.is_terminal:
                    self._transition(ClusterState.SHUTTING_DOWN, "shutdown() stops the nodes")
            self._stop_nodes()
            if self.plot_path:
                self.write_plot(self.plot_path)
        self._raise_if_failed()
        self._transition(ClusterState.STOPPED, "shutdown() stopped every node")
        logger.info("TF cluster %s shut down", self.cluster_id)

    def _end_feed(self) -> None:
        if self.input_mode == InputMode.SPARK:
            from tfos.feed import feed_job

            feed_job.end_feed(self.sc, cluster_id=self.config.cluster_id, num_workers=self.num_trainers,
                              job_group=self.feed_group)

    def _await_stream_end(self, ssc: Any, deadline: float | None) -> str:
        """Block until the stream should stop; returns why."""
        trainers = self.awaited_nodes()
        while True:
            self._raise_if_failed()
            if ssc.awaitTerminationOrTimeout(1):
                return "the StreamingContext terminated"
            if self.server.stop_requested_by_client:
                return "stop requested through the reservation server"
            states = {n.executor_id: n.state for n in self.server.nodes()}
            if all(states.get(e) in TERMINAL_STATES for e in trainers):
                return "every chief/worker finished its main_fun"
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("shutdown(ssc) timed out waiting for the stream to end; raise "
                                   "shutdown(timeout=...) or send a stop request")

    def _await_others(self, grace_secs: float) -> None:
        """Up to ``grace_secs`` for the nodes that end on their own (not parameter servers) to end."""
        others = set(range(len(self.template))) - self.awaited_nodes() - set(self.template.executors_of(template.PS))
        deadline = time.monotonic() + grace_secs
        version = -1
        while others:
            self._raise_if_failed()
            states = {n.executor_id: n.state for n in self.server.nodes()}
            if all(states.get(e) in TERMINAL_STATES for e in others) or time.monotonic() >= deadline:
                return
            version = self.server.wait_for_change(version, timeout=min(1.0, max(0.0, deadline - time.monotonic())))

    def _stop_nodes(self, wait_secs: float | None = None) -> None:
        """Stop this generation's nodes: ask them, then cancel their start tasks after ``wait_secs``."""
        wait_secs = self.stop_wait_secs if wait_secs is None else wait_secs
        self.server.request_stop()
        if not self._start_done.wait(wait_secs):
            logger.warning("start tasks did not end %ss after stop; cancelling them", wait_secs)
            self.launcher.cancel(self.start_group)
            if not self._start_done.wait(wait_secs):
                logger.warning("start tasks still running %ss after they were cancelled", wait_secs)
        self._monitor_stop.set()
        self.server.close()

    def __enter__(self) -> TFCluster:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.shutdown()
        elif self.state != ClusterState.STOPPED:
            self._stop_nodes()
            self._transition(ClusterState.STOPPED, f"left the with block on {exc_type.__name__}")
            if self.plot_path:
                self.write_plot(self.plot_path)


def run(sc: Any, main_fun: Callable[[Any, NodeContext], Any], tf_args: Any, num_executors: int, num_ps: int = 0,
        tensorboard: bool = False, input_mode: int = InputMode.TENSORFLOW, log_dir: str | None = None,
        driver_ps_nodes: bool = False, master_node: str | None = None, reservation_timeout: float = 600,
        queues: Any = None, eval_node: bool = False, release_port: bool = True,
        relay: str | None = None, max_restarts: int = 0, plot: str | bool | None = None,
        spawner: ProcessSpawner | None = None) -> TFCluster:
    """Start a TF cluster of ``num_executors`` nodes on the Spark application of ``sc``.

    Roles are assigned in order: ``num_ps`` parameter servers, then ``master_node`` ('chief'
    or 'master') when given, one evaluator when ``eval_node``, the rest workers. Each node
    runs ``main_fun(tf_args, ctx)`` in its own TF process with TF_CONFIG set. Returns once
    every node registered; call ``shutdown()`` (or use ``with``) to wait for the end.

    ``relay``: what of each node's stdout, stderr (native TF output included) and Python logging
    reaches the driver's log, on logger ``tfos.node`` as ``[worker:1] text``: ``"all"`` (the
    default, or the driver's ``TFOS_RELAY``; ``"off"`` by default on a ``local[N]`` master, whose
    nodes print to the driver's console themselves), ``"warnings"`` (WARNING and above, no
    stdout) or ``"off"``. Each node ships at most 500 lines/s and queues at most 2000: a chatty main loses
    lines (the driver logs how many; the executors' logs keep them all), it never waits for the
    driver. Progress reported with ``ctx.report`` is logged every 15 s and in ``status()``.

    ``max_restarts``: how many times a node failure (a main that raised, a killed TF process, a
    lost executor) restarts the cluster instead of raising ``NodeFailure``: every node of the
    failed generation is stopped, the driver waits (up to 120 s) for Spark to have the executors
    again and starts the next generation with the same roles, whose ``ctx.restart_count`` is 1,
    2, ... A main that restores its latest checkpoint (``tfos.training_checkpoint``) resumes
    there; ``train()`` feeds the epochs not yet fed whole. The same node failing with the same
    error twice in a row, or a configuration error, raises at once. Restarts happen while the
    driver waits in ``run``, ``train`` or ``shutdown``.

    ``plot``: at shutdown (also a failed one) write a PNG of every node's reported loss and
    metrics against step to this path (local or ``hdfs://``; relative to the working directory),
    or with ``True`` to ``tfos-progress-<cluster id>.png`` in the working directory. Needs
    matplotlib (``pip install 'tfos[plot]'``).

    ``spawner``: how each node starts its TF process (:mod:`tfos.cluster.spawner`); by default it
    is forked from the executor's warm launcher. It is shipped to the executors, so it must pickle.
    """
    from tfos.cluster.relay import RELAY_ENV, DriverRelay, ensure_visible, resolve_level

    try:
        relay_level = resolve_level(relay)
    except ValueError as exc:
        raise ClusterConfigError(str(exc)) from None
    if relay is None and RELAY_ENV not in os.environ and str(getattr(sc, "master", "")).startswith("local"):
        # local[N]: the nodes run in this process's console already; relaying would print every line twice
        relay_level = "off"
    validate_arguments(main_fun, num_executors, num_ps, reservation_timeout)
    if spawner is not None:
        try:
            check_spawner(spawner)
        except TypeError as exc:
            raise ClusterConfigError(str(exc)) from None
    try:
        FailurePolicy(max_restarts)
    except ValueError as exc:
        raise ClusterConfigError(str(exc)) from None
    input_mode = InputMode.validate(input_mode)
    try:
        template_ = template.ClusterTemplate.build(num_executors, num_ps, master_node, eval_node)
    except ValueError as exc:
        raise ClusterConfigError(str(exc)) from None
    if queues is not None:
        logger.info("run(queues=...) is accepted for TensorFlowOnSpark compatibility and not needed by tfos")
    spark_tasks = num_executors - (num_ps if driver_ps_nodes else 0)
    if spark_tasks:
        validate_spark(sc, spark_tasks, wait_secs=min(float(reservation_timeout), 60.0))
        if input_mode == InputMode.SPARK:
            validate_spark_feed(sc, spark_tasks)
    host = driver_address(sc)

    def new_server() -> ReservationServer:
        return ReservationServer(num_executors, protocol.new_secret(), host=host)

    server = new_server()
    if relay_level != "off":
        server.log_sink = DriverRelay(relay_level).install()
    address = server.start()
    config = NodeConfig(
        cluster_id=uuid.uuid4().hex[:12], secret=server.secret, server_address=address,
        roles=template_.roles, main_fun=main_fun, tf_args=tf_args, input_mode=input_mode,
        default_fs=_default_fs(sc), working_dir=os.getcwd(), reservation_timeout=float(reservation_timeout),
        tensorboard=tensorboard, log_dir=log_dir, release_port=release_port, spawner=spawner,
    )
    cluster = TFCluster(sc, config, server, template_, driver_ps_nodes, max_restarts=max_restarts,
                        new_server=new_server)
    if plot:
        cluster.plot_path = (os.path.join(config.working_dir, f"tfos-progress-{config.cluster_id}.png")
                             if plot is True else _absolute(str(plot), config.working_dir))
    logger.info("starting TF cluster %s: %s", config.cluster_id,
                ", ".join(f"executor {i}={job}:{idx}" for i, (job, idx) in enumerate(template_.roles)))
    if relay_level == "all":
        from tfos.cluster import progress

        ensure_visible(progress.logger, logging.INFO)
    cluster._start()
    return cluster
