"""Restarts, silence, start failures and shutdown timeouts of ``TFCluster``, in-process and in seconds.

The cluster runs against a real reservation server; Spark is replaced by ``FakeLauncher``,
whose scripted nodes speak the real control-plane protocol. The same paths run end to end on
a real standalone cluster in ``tests/test_chaos.py``.
"""

from __future__ import annotations

import logging
import time

import pytest

import tfos
from tests.fake_launcher import FakeLauncher
from tfos.cluster import template
from tfos.cluster.cluster import NodeFailure, TFCluster
from tfos.cluster.cluster_state import ClusterState
from tfos.cluster.failure_detection import Failure
from tfos.cluster.failure_policy import FailurePolicy
from tfos.cluster.input_mode import InputMode
from tfos.cluster.payload import NodeConfig
from tfos.cluster.validation import ClusterConfigError
from tfos.reservation import protocol
from tfos.reservation.server import FAILED, NodeRecord, ReservationServer, ReservationTimeout


def make_cluster(launcher: FakeLauncher, workers: int = 2, max_restarts: int = 1, silence: float = 30.0) -> TFCluster:
    tmpl = template.ClusterTemplate.build(workers)

    def new_server() -> ReservationServer:
        return ReservationServer(workers, protocol.new_secret(), host="127.0.0.1")

    server = new_server()
    address = server.start()
    config = NodeConfig(cluster_id="c0ffee", secret=server.secret, server_address=address, roles=tmpl.roles,
                        main_fun=lambda args, ctx: None, tf_args=None, input_mode=InputMode.TENSORFLOW,
                        default_fs="file://", working_dir="/tmp", reservation_timeout=20.0, heartbeat_interval=0.2)
    cluster = TFCluster(None, config, server, tmpl, False, max_restarts=max_restarts, launcher=launcher,
                        new_server=new_server, log_progress=False)
    cluster.node_silence_secs = silence
    cluster.stop_wait_secs = 10.0
    return cluster


def moves(caplog) -> list[str]:
    return [r.getMessage().split(": ", 1)[1].split(" (")[0] for r in caplog.records
            if r.name == "tfos.cluster.cluster" and " -> " in r.getMessage() and r.getMessage().startswith("TF cluster")]


def test_a_raising_node_with_a_restart_left_runs_the_next_generation_to_the_end(caplog):
    launcher = FakeLauncher(scripts={(0, 1): "raise"})
    cluster = make_cluster(launcher, max_restarts=1)
    with caplog.at_level(logging.INFO, logger="tfos.cluster.cluster"):
        cluster._start()
        cluster.shutdown(timeout=60)
    assert cluster.state == ClusterState.STOPPED
    assert cluster.restart_count == 1 and cluster.config.restart_count == 1
    assert [s["generation"] for s in launcher.started] == [0, 1]
    assert launcher.started[1]["cluster_id"] == "c0ffeer1"  # its own feed/node directories
    assert "restart 1" in launcher.started[1]["description"]
    assert cluster.restarts[0]["failed"] == ["worker:1"] and "ValueError: bad input" in caplog.text
    assert moves(caplog) == ["starting -> running", "running -> restarting", "restarting -> starting",
                             "starting -> running", "running -> shutting_down", "shutting_down -> stopped"]
    assert "stopping every node of generation 0 before restart 1 of max_restarts=1" in caplog.text
    assert launcher.live == set()  # no node of either generation is left running


def test_a_node_whose_main_holds_the_gil_is_warned_about_but_not_taken_for_dead(caplog):
    launcher = FakeLauncher(scripts={(0, 0): "holds_gil"}, run_secs=3.0)
    cluster = make_cluster(launcher, max_restarts=0, silence=1.0)
    with caplog.at_level(logging.INFO, logger="tfos.cluster.cluster"):
        cluster._start()
        cluster.shutdown(timeout=60)
    assert cluster.state == ClusterState.STOPPED and cluster.restart_count == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "GIL" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once, not every heartbeat interval
    assert warnings[0].startswith("worker:0 (executor 0 on 127.0.0.1): no heartbeat from its TF process for ")
    assert "the process is alive (1.5 CPU-seconds so far" in warnings[0]


def test_max_restarts_zero_raises_naming_the_silent_node_and_stops_the_others():
    launcher = FakeLauncher(scripts={(0, 0): "silent", (0, 1): "hang"})
    cluster = make_cluster(launcher, max_restarts=0, silence=1.0)
    cluster._start()
    with pytest.raises(NodeFailure, match=r"worker:0 .*failed:\nno heartbeat for \d+s") as info:
        cluster.shutdown(timeout=60)
    assert info.value.failed_nodes == ["worker:0"]
    assert cluster.state == ClusterState.FAILED and cluster.restart_count == 0
    assert len(launcher.started) == 1 and launcher.live == set()  # worker:1 was stopped too


def test_the_same_error_twice_in_a_row_is_not_restarted_again():
    launcher = FakeLauncher(scripts={(0, 1): "raise", (1, 1): "raise"})
    cluster = make_cluster(launcher, max_restarts=3)
    cluster._start()
    with pytest.raises(NodeFailure, match="ValueError: bad input on executor 1") as info:
        cluster.shutdown(timeout=60)
    assert any("did not restart the cluster: worker:1 failed twice in a row with the same error" in note
               for note in info.value.__notes__)
    assert cluster.restart_count == 1 and [s["generation"] for s in launcher.started] == [0, 1]
    assert cluster.state == ClusterState.FAILED and launcher.live == set()


def test_a_failure_before_every_node_registered_restarts_the_start():
    launcher = FakeLauncher(scripts={(0, 0): "raise_at_start", (0, 1): "no_show"})
    cluster = make_cluster(launcher, max_restarts=1)
    cluster._start()
    assert cluster.state == ClusterState.RUNNING and cluster.restart_count == 1
    assert sorted(n.name for n in cluster.server.nodes()) == ["worker:0", "worker:1"]
    cluster.shutdown(timeout=60)
    assert launcher.live == set()


def test_a_start_task_that_dies_while_the_others_register_fails_the_start_naming_it_at_once():
    launcher = FakeLauncher(scripts={(0, 0): "vanish_at_start", (0, 1): "no_show"})
    cluster = make_cluster(launcher, max_restarts=0)  # reservation_timeout is 20 s
    began = time.monotonic()
    with pytest.raises(NodeFailure, match=r"worker:0 .*went away while it waited for the other nodes") as info:
        cluster._start()
    assert time.monotonic() - began < 10  # not the reservation timeout
    assert info.value.failed_nodes == ["worker:0"] and cluster.state == ClusterState.FAILED
    assert launcher.live == set()


def test_a_start_task_that_dies_while_the_others_register_restarts_the_start():
    launcher = FakeLauncher(scripts={(0, 0): "vanish_at_start", (0, 1): "no_show"})
    cluster = make_cluster(launcher, max_restarts=1)
    cluster._start()
    assert cluster.state == ClusterState.RUNNING and cluster.restart_count == 1
    assert cluster.restarts[0]["failed"] == ["worker:0"]
    cluster.shutdown(timeout=60)
    assert cluster.state == ClusterState.STOPPED and launcher.live == set()


SPARK_BARRIER_FAILURE = (
    "org.apache.spark.SparkException: Job aborted due to stage failure: Could not recover from a failed barrier "
    "ResultStage. Most recent failure reason: Stage failed because barrier task ResultTask(3, 1) finished "
    "unsuccessfully.\norg.apache.spark.SparkException: Python worker exited unexpectedly (crashed). Consider "
    "setting 'spark.python.worker.faulthandler.enabled'\n\tat org.apache.spark.api.python.BasePythonRunner")


def test_a_start_job_failure_nobody_reported_names_the_node_of_the_task_spark_names():
    launcher = FakeLauncher(job_error=SPARK_BARRIER_FAILURE)
    cluster = make_cluster(launcher, max_restarts=0)
    with pytest.raises(NodeFailure, match=r"TF node worker:1 \(executor 1 on an executor\) failed:\nits start task "
                                          r"failed in Spark before the cluster started: Python worker exited "
                                          r"unexpectedly \(crashed\)"):
        cluster._start()
    assert cluster.state == ClusterState.FAILED


def test_a_node_slow_to_start_its_tf_process_is_not_reported_dead():
    launcher = FakeLauncher(scripts={(0, 0): "slow_start"}, slow_secs=3.0, run_secs=0.5)
    cluster = make_cluster(launcher, max_restarts=0, silence=1.0)  # silent 3x longer than the limit
    cluster._start()
    cluster.shutdown(timeout=60)
    assert cluster.state == ClusterState.STOPPED and len(launcher.started) == 1


def test_no_executors_for_the_next_generation_raises_the_failure_saying_so():
    launcher = FakeLauncher(scripts={(0, 1): "raise"}, executors_back=False)
    cluster = make_cluster(launcher, max_restarts=2)
    cluster._start()
    with pytest.raises(NodeFailure, match="worker:1") as info:
        cluster.shutdown(timeout=60)
    assert any("could not restart the cluster: only 0 of 2 executors came back" in n
               for n in info.value.__notes__)
    assert cluster.state == ClusterState.FAILED and launcher.live == set()


def test_shutdown_timeout_names_the_hung_node_and_stops_it():
    launcher = FakeLauncher(scripts={(0, 0): "hang"})
    cluster = make_cluster(launcher, max_restarts=0)
    cluster._start()
    with pytest.raises(TimeoutError, match=r"shutdown timed out after 1s waiting for worker:0 \(executor 0"):
        cluster.shutdown(timeout=1)
    assert launcher.live == set()


def failure(name_index: int, error: str) -> Failure:
    return Failure(NodeRecord(name_index, "h", 1, "worker", name_index, {}, state=FAILED, error=error), error)


def test_failure_policy_decisions():
    boom = [failure(0, "Traceback\nRuntimeError: boom")]
    assert not FailurePolicy(0).decide(boom, 0).restart
    assert FailurePolicy(2).decide(boom, 1).restart
    out = FailurePolicy(2).decide(boom, 2)
    assert not out.restart and "out of restarts (2 of max_restarts=2" in out.reason
    config = FailurePolicy(5).decide([failure(1, "tfos.cluster.validation.ClusterConfigError: num_gpus")], 0)
    assert not config.restart and "ClusterConfigError" in config.reason
    assert FailurePolicy(5).decide(boom, 1, previous=[failure(1, "RuntimeError: boom")]).restart  # another node
    same = FailurePolicy(5).decide(boom, 1, previous=[failure(0, "other frames\nRuntimeError: boom")])
    assert not same.restart and "worker:0 failed twice in a row" in same.reason
    with pytest.raises(ValueError, match="max_restarts must be an int >= 0"):
        FailurePolicy(-1)


def test_run_rejects_a_bad_max_restarts_before_touching_spark():
    with pytest.raises(ClusterConfigError, match=r"max_restarts must be an int >= 0 .* got 'x'"):
        tfos.run(None, lambda args, ctx: None, {}, 2, max_restarts="x")


def test_a_start_that_waits_for_nodes_says_which_until_it_times_out(caplog):
    launcher = FakeLauncher(scripts={(0, 1): "no_show"})
    cluster = make_cluster(launcher, max_restarts=0)
    cluster.config.reservation_timeout = 3.0
    cluster.registration_note_secs = 0.5
    with caplog.at_level(logging.INFO, logger="tfos.cluster.cluster"), \
            pytest.raises(ReservationTimeout, match=r"executor ids \[1\] never registered"):
        cluster._start()
    notes = [r.getMessage() for r in caplog.records if "TF nodes to register" in r.getMessage()]
    assert len(notes) >= 2 and "for 1 of 2 TF nodes to register: worker:1 (executor 1)" in notes[0], notes
    assert cluster.state == ClusterState.FAILED
    deadline = time.monotonic() + 30  # worker:0's long poll for the spec ends with the closed server
    while launcher.live and time.monotonic() < deadline:
        time.sleep(0.05)
    assert launcher.live == set()


def test_a_killed_node_leads_even_when_its_peers_collective_error_is_reported_first():
    launcher = FakeLauncher(scripts={(0, 0): "peer_error", (0, 1): "dies_late"})
    cluster = make_cluster(launcher, max_restarts=0)
    cluster._start()
    with pytest.raises(NodeFailure, match=r"^TF node worker:1 .*failed:\nTF process of worker:1 .*killed by signal 9") \
            as info:
        cluster.shutdown(timeout=60)
    assert info.value.failed_nodes == ["worker:1", "worker:0"]  # the cause first, then the consequence


def test_a_lost_container_leads_even_when_its_peers_collective_error_is_reported_first():
    """YARN kills worker:0's container (memory): its peer's collective error reaches the driver first, but
    the NodeFailure leads with the node whose executor Spark lost, and says why."""
    launcher = FakeLauncher(scripts={(0, 0): "container_lost", (0, 1): "peer_error"})
    cluster = make_cluster(launcher, max_restarts=0)
    cluster._start()
    with pytest.raises(NodeFailure, match=r"(?s)^TF node worker:0 .*physical memory") as info:
        cluster.shutdown(timeout=60)
    assert info.value.failed_nodes == ["worker:0", "worker:1"]
