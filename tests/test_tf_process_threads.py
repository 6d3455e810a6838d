"""The TF process's heartbeat and stop-watcher threads survive network errors (in-process, no Spark)."""

from __future__ import annotations

import errno
import threading

import pytest

from tfos.cluster import tf_process
from tfos.cluster.context import NodeContext
from tfos.cluster.input_mode import InputMode
from tfos.cluster.node_logging import LogTail
from tfos.cluster.payload import NodeConfig, PayloadForProcess
from tfos.reservation import protocol
from tfos.reservation.client import ReservationClient
from tfos.reservation.server import ReservationServer

BOUND = 30.0


class Exited(Exception):
    pass


@pytest.fixture
def node_process(monkeypatch):
    server = ReservationServer(1, protocol.new_secret())
    address = server.start()
    ReservationClient(address, server.secret).register(
        {"executor_id": 0, "host": "127.0.0.1", "port": 5000, "job_name": "worker", "task_index": 0})
    config = NodeConfig(cluster_id="c0ffee", secret=server.secret, server_address=address,
                        roles=(("worker", 0),), main_fun=lambda a, c: None, tf_args=None,
                        input_mode=InputMode.TENSORFLOW, default_fs="file://", working_dir="/tmp",
                        heartbeat_interval=0.02)
    ctx = NodeContext(executor_id=0, job_name="worker", task_index=0, cluster_spec={}, num_workers=1,
                      worker_num=0, default_fs="file://", working_dir="/tmp")
    process = tf_process.NodeProcess(PayloadForProcess(config, ctx, None), LogTail())
    exits: list[int] = []
    exited = threading.Event()

    def fake_exit(code: int) -> None:
        exits.append(code)
        exited.set()
        raise Exited(code)

    monkeypatch.setattr(process, "_exit", fake_exit)
    yield process, server, exits, exited
    server.close()


def test_heartbeats_survive_a_raw_oserror_and_exit_only_after_repeated_misses(node_process, monkeypatch):
    process, _server, exits, exited = node_process
    calls = []

    def unreachable(self, executor_id, feed=None):
        calls.append(executor_id)
        raise OSError(errno.EHOSTUNREACH, "No route to host")

    monkeypatch.setattr(ReservationClient, "heartbeat_reply", unreachable)
    thread = threading.Thread(target=lambda: pytest.raises(Exited, process._heartbeats), daemon=True)
    thread.start()
    assert exited.wait(BOUND), "the heartbeat thread died on the first OSError instead of counting misses"
    assert exits == [3] and len(calls) == tf_process.HEARTBEAT_MISSES_BEFORE_EXIT


def test_the_stop_watcher_survives_a_raw_oserror_and_still_stops_the_node(node_process, monkeypatch):
    process, server, exits, exited = node_process
    real = ReservationClient.await_stop
    failures = []

    def flaky(self, executor_id, timeout):
        if len(failures) < 3:
            failures.append(1)
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        return real(self, executor_id, timeout)

    monkeypatch.setattr(ReservationClient, "await_stop", flaky)
    thread = threading.Thread(target=lambda: pytest.raises(Exited, process._stop_watcher), daemon=True)
    thread.start()
    server.request_stop()
    assert exited.wait(BOUND), "the stop watcher died on an OSError: the TF process would never stop"
    assert exits == [0] and len(failures) == 3 and process.stop_requested.is_set()
