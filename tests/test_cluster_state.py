"""The cluster's lifecycle state machine and failure detection, in-process (no Spark)."""

from __future__ import annotations

import logging
import threading

import pytest

from tfos.cluster.cluster import NodeFailure, TFCluster
from tfos.cluster.cluster_state import ClusterState
from tfos.cluster.failure_detection import detect_failures, unresponsive
from tfos.reservation.server import FAILED, REGISTERED, RUNNING, NodeRecord


def bare_cluster() -> TFCluster:
    cluster = TFCluster.__new__(TFCluster)
    cluster.cluster_id = "c0ffee"
    cluster._state = ClusterState.STARTING
    cluster._state_lock = threading.RLock()
    cluster._error = None
    return cluster


def node(eid: int, state: str, last_seen: float = 100.0, error: str | None = None) -> NodeRecord:
    return NodeRecord(eid, f"host{eid}", 2000 + eid, "worker", eid, {}, state=state, last_seen=last_seen,
                      error=error)


def test_states_compare_to_strings_and_terminal():
    assert ClusterState.STOPPED == "stopped" and ClusterState.FAILED == "failed"
    assert {s for s in ClusterState if s.is_terminal} == {ClusterState.STOPPED, ClusterState.FAILED}


def test_transitions_allowed_illegal_and_logged(caplog):
    cluster = bare_cluster()
    with caplog.at_level(logging.INFO, logger="tfos.cluster.cluster"):
        assert cluster._transition(ClusterState.RUNNING, "every node registered")
    assert "TF cluster c0ffee: starting -> running (every node registered)" in caplog.text
    assert cluster.state == "running"
    assert not cluster._transition(ClusterState.RUNNING, "again")  # same state: a no-op
    cluster._transition(ClusterState.STOPPED, "done")
    with pytest.raises(RuntimeError, match="illegal state change stopped -> running"):
        cluster._transition(ClusterState.RUNNING, "restart")
    with pytest.raises(AttributeError):
        cluster.state = ClusterState.RUNNING


def test_failed_moves_only_to_stopped():
    cluster = bare_cluster()
    cluster._transition(ClusterState.FAILED, "boom")
    with pytest.raises(RuntimeError, match="failed -> running"):
        cluster._transition(ClusterState.RUNNING, "x")
    cluster._transition(ClusterState.STOPPED, "nodes stopped")


def test_concurrent_failures_exactly_one_wins():
    cluster = bare_cluster()
    cluster._transition(ClusterState.RUNNING, "up")
    wins = []
    barrier = threading.Barrier(16)

    def fail(i: int) -> None:
        barrier.wait()
        with cluster._state_lock:
            if cluster._error is None:
                cluster._error = RuntimeError(str(i))
                wins.append(cluster._transition(ClusterState.FAILED, f"thread {i}"))

    threads = [threading.Thread(target=fail, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins == [True] and cluster.state == ClusterState.FAILED


def test_detect_failures_injected_clock():
    nodes = [node(0, RUNNING, last_seen=100.0), node(1, FAILED, error="Traceback: boom"),
             node(2, RUNNING, last_seen=50.0), node(3, REGISTERED, last_seen=55.0)]
    before = [(n.state, n.error) for n in nodes]
    failures = detect_failures(nodes, now=100.0, silence_secs=30.0)
    # the first to fail leads: worker:2 went silent at 50, worker:1 reported at 100; worker:3 is not RUNNING
    assert [f.node.name for f in failures] == ["worker:2", "worker:1"]
    assert failures[0].error.startswith("no heartbeat for 50s: the TF process or its executor died")
    assert failures[1].error == "Traceback: boom"
    assert [(n.state, n.error) for n in nodes] == before  # pure
    assert detect_failures(nodes[2:], now=70.0, silence_secs=30.0) == []


def test_a_silent_node_whose_supervisor_vouches_for_its_process_is_unresponsive_not_failed():
    gil = node(0, RUNNING, last_seen=50.0)
    gil.alive_at, gil.process_cpu = 95.0, 12.0  # its supervisor saw the TF process alive 5 s ago
    gone = node(1, RUNNING, last_seen=50.0)
    gone.alive_at = 60.0  # the supervisor went quiet too: the executor or its host is gone
    nodes = [gil, gone]
    assert [f.node.name for f in detect_failures(nodes, now=100.0, silence_secs=30.0)] == ["worker:1"]
    assert [n.name for n in unresponsive(nodes, now=100.0, silence_secs=30.0)] == ["worker:0"]
    gil.last_seen = 99.0  # its heartbeats came back
    assert unresponsive(nodes, now=100.0, silence_secs=30.0) == []


def test_node_failure_names_every_failed_node():
    failures = detect_failures([node(2, RUNNING, last_seen=0.0),
                                node(1, FAILED, last_seen=-5.0, error="Traceback: boom")], now=40.0, silence_secs=30.0)
    err = NodeFailure.of(failures)
    message = str(err)
    # the node that died (silent) leads, before the one whose main raised, whichever reported first
    assert message.startswith("TF node worker:2 (executor 2 on host2) failed:\nno heartbeat for 40s")
    assert "TF node worker:1 (executor 1 on host1) failed:\nTraceback: boom" in message
    assert err.failed_nodes == ["worker:2", "worker:1"] and err.node_name == "worker:2"
    single = NodeFailure(node(3, FAILED, error="tb"))
    assert str(single) == "TF node worker:3 (executor 3 on host3) failed:\ntb" and single.failed_nodes == ["worker:3"]
