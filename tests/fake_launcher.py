"""An in-process stand-in for Spark that runs scripted fake nodes against a real reservation server.

Each fake node is a thread speaking the real control-plane protocol (``ReservationClient``):
it registers, heartbeats and reports, following a script per (generation, executor id):
``"finish"`` (ends after ``run_secs``), ``"raise"`` (reports FAILED with a traceback),
``"silent"`` (stops heartbeating, as a SIGKILLed TF process does), ``"holds_gil"`` (for
``run_secs`` only its supervisor vouches for it, as while its main holds the GIL; then it
finishes), ``"hang"`` (heartbeats
until stopped), ``"no_show"`` (never registers), ``"raise_at_start"`` (fails before the others
registered), ``"vanish_at_start"`` (its process dies while waiting for the others: no report), ``"slow_start"`` (``slow_secs`` between registering and running, no heartbeat),
``"container_lost"`` (0.5 s after it runs, its executor is lost: ``lost_executors`` names it with YARN's
memory-kill reason, and the node goes quiet without a report). Cancelling the start job group ends them
all, as Spark killing the barrier tasks does.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tfos.reservation import protocol
from tfos.reservation.client import ReservationClient
from tfos.reservation.server import FAILED, FINISHED, RUNNING


@dataclass
class FakeLauncher:
    scripts: dict[tuple[int, int], str] = field(default_factory=dict)  # (generation, executor) -> behaviour
    run_secs: float = 0.5
    slow_secs: float = 0.0
    executors_back: bool = True
    job_error: str | None = None  # the first start job fails at once with this (Spark's) error, no node reporting
    started: list[dict[str, Any]] = field(default_factory=list)  # one record per start job
    cancelled: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what ended a fake node other than its script
    lost: dict[str, str] = field(default_factory=dict)  # Spark executor id -> why Spark lost it
    live: set[tuple[int, int]] = field(default_factory=set)  # fake nodes running now
    _cancel: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def behaviour(self, generation: int, executor_id: int) -> str:
        return self.scripts.get((generation, executor_id), "finish")

    def run_start_job(self, config: Any, executor_ids: list[int], group: str, description: str) -> None:
        generation = config.restart_count
        if self.job_error is not None and generation == 0:
            raise RuntimeError(self.job_error)
        self._cancel = cancel = threading.Event()
        self.started.append({"generation": generation, "executors": list(executor_ids), "description": description,
                             "cluster_id": config.cluster_id})
        threads = [threading.Thread(target=self._node, args=(config, generation, eid, cancel), daemon=True)
                   for eid in executor_ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if cancel.is_set():
            raise RuntimeError(f"job group {group} cancelled")

    def _node(self, config: Any, generation: int, eid: int, cancel: threading.Event) -> None:
        what = self.behaviour(generation, eid)
        if what == "no_show":
            cancel.wait(60)
            return
        job, index = config.roles[eid]
        client = ReservationClient(config.server_address, config.secret, timeout=5.0)
        with self._lock:
            self.live.add((generation, eid))
        try:
            client.register({"executor_id": eid, "host": "127.0.0.1", "port": 40000 + eid, "job_name": job,
                             "task_index": index, "spark_executor_id": str(eid + 1)})
            if what == "vanish_at_start":  # its process dies while its long poll waits for the others
                raw = socket.create_connection(config.server_address, timeout=5.0)
                protocol.send_frame(raw, config.secret, protocol.AWAIT_SPEC, {"executor_id": eid, "timeout": 30},
                                    secrets.token_hex(16), 1)
                cancel.wait(0.3)
                raw.close()  # as the kernel closes a SIGKILLed process's sockets: no retry, no report
                return
            if what == "raise_at_start":
                client.report(eid, FAILED, error="Traceback (most recent call last):\nOSError: GPU 0 is gone")
                return
            client.await_spec(eid, 30)
            if what == "slow_start":
                cancel.wait(self.slow_secs)  # importing TensorFlow, waiting for a GPU: no heartbeat yet
            client.report(eid, RUNNING)
            if what == "dies_late":  # killed; its supervisor reports it only after the peer's error (0.5 s)
                cancel.wait(0.5)
                client.report(eid, FAILED, error=f"TF process of worker:{eid} (executor {eid}, pid 1) killed by signal 9")
                return
            if what == "container_lost":  # the container is killed with the node's supervisor: no report
                cancel.wait(0.5)
                self.lost[str(eid + 1)] = ("Container killed by YARN for exceeding physical memory limits. "
                                           "2.0 GB of 2 GB physical memory used.")
                return
            if what == "peer_error":  # a collective failed because a peer died
                client.report(eid, FAILED, error="Traceback (most recent call last):\ntensorflow.python.framework."
                                                 "errors_impl.UnavailableError: Collective ops is aborted by: peer down")
                return
            if what == "raise":
                client.report(eid, FAILED, error=f"Traceback (most recent call last):\nValueError: bad input "
                                                  f"on executor {eid}")
                return
            if what == "holds_gil":  # its Python threads cannot run: only the supervisor speaks
                deadline = time.monotonic() + self.run_secs
                while time.monotonic() < deadline and not cancel.is_set():
                    client.vouch(eid, 1.5)
                    cancel.wait(0.1)
                if not cancel.is_set():
                    client.report(eid, FINISHED)
                return
            ends = what in ("finish", "slow_start")
            deadline = time.monotonic() + (self.run_secs if ends else 3600)
            while time.monotonic() < deadline and not cancel.is_set():
                if what != "silent" and client.heartbeat(eid):
                    break  # the driver asked the cluster to stop
                cancel.wait(0.1)
            if ends and not cancel.is_set():
                client.report(eid, FINISHED)
        except Exception as exc:  # noqa: BLE001 - the server closed: the generation is over
            self.errors.append(f"{generation}/{eid}: {exc!r}")
        finally:
            client.close()
            with self._lock:
                self.live.discard((generation, eid))

    def cancel(self, group: str) -> None:
        self.cancelled.append(group)
        self._cancel.set()

    def await_executors(self, count: int, wait_secs: float) -> None:
        if not self.executors_back:
            raise RuntimeError(f"only 0 of {count} executors came back within {wait_secs:.0f}s")

    def lost_executors(self, executor_ids: set[str]) -> dict[str, str]:
        return {e: why for e, why in dict(self.lost).items() if e in executor_ids}

    def lost_in_job_error(self, message: str) -> dict[str, str]:
        return {}
