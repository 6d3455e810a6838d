"""Chaos on the real standalone cluster: SIGKILL a TF process mid-training, with and without restarts.

Each run trains real MNIST under MultiWorkerMirroredStrategy (or, in InputMode.SPARK, feeds real
rows); the kill lands after the first checkpoint. With ``max_restarts=0`` the driver raises
``NodeFailure`` naming the node within 10 s; with ``max_restarts=1`` the second generation
resumes from the checkpoint and the job ends at its target step. No TF process is left.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest

from tests import chaos_mains
from tests.cluster_mains import load_mnist
from tests.test_cluster_lifecycle import pid_alive, results
from tfos import InputMode, NodeFailure

pytestmark = pytest.mark.slow


def wait_for(path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout}s"
        time.sleep(0.05)


def kill_when_ready(out, ready) -> tuple[int, float]:
    """SIGKILL worker:1's first TF process once it runs and ``ready`` exists (a checkpoint, a mark)."""
    wait_for(out / "pid-worker-1-gen0")
    wait_for(ready)
    pid = int((out / "pid-worker-1-gen0").read_text())
    os.kill(pid, signal.SIGKILL)
    return pid, time.monotonic()


def tf_pids(out) -> list[int]:
    return [int((out / name).read_text()) for name in os.listdir(out) if name.startswith("pid-")
            and not name.endswith(".tmp")]


def assert_no_tf_process_left(out, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in tf_pids(out) if pid_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive, f"TF processes still running after the cluster ended: {alive}"


def mnist_args(tmp_path) -> dict:
    (tmp_path / "out").mkdir()
    return {"out": str(tmp_path / "out"), "model_dir": str(tmp_path / "model"), "epochs": 6, "steps_per_epoch": 60}


def test_killed_tf_process_without_restarts_fails_naming_it_within_10s(sc, tmp_path, start):
    args = mnist_args(tmp_path)
    cluster = start(sc, chaos_mains.mnist_resuming_fit, args, 2)
    _, killed = kill_when_ready(tmp_path / "out", tmp_path / "model" / "checkpoint")
    with pytest.raises(NodeFailure, match=r"TF node worker:1 \(executor 1 on 127.0.0.1\) failed") as err:
        cluster.shutdown(timeout=300)
    assert cluster._failed_at - killed < 10
    assert err.value.failed_nodes[0] == "worker:1" and cluster.state == "failed"
    assert_no_tf_process_left(tmp_path / "out")  # worker:0 was stopped too


def test_killed_tf_process_restarts_from_the_latest_checkpoint(sc, tmp_path, start, caplog):
    args = mnist_args(tmp_path)
    cluster = start(sc, chaos_mains.mnist_resuming_fit, args, 2, max_restarts=1)
    killed_pid, killed = kill_when_ready(tmp_path / "out", tmp_path / "model" / "checkpoint")
    with caplog.at_level(logging.INFO, logger="tfos"):
        cluster.shutdown(timeout=600)
    assert cluster.restart_count == 1 and cluster.state == "stopped"
    restart = cluster.restarts[0]
    # the killed node leads; its MultiWorkerMirroredStrategy peer may fail in the same moment (collective error)
    assert restart["failed"][0] == "worker:1" and restart["detected_at"] - killed < 10
    got = results(tmp_path / "out")
    for name in ("worker-0", "worker-1"):
        assert got[name]["restart_count"] == 1, got[name]
        assert got[name]["start_step"] > 0  # resumed from the checkpoint, not from scratch
        assert got[name]["final_step"] == args["epochs"] * args["steps_per_epoch"]
    assert got["worker-0"]["test_accuracy"] >= 0.9
    assert "running -> restarting" in caplog.text and "restarting -> starting" in caplog.text
    assert not pid_alive(killed_pid)
    assert_no_tf_process_left(tmp_path / "out")


def mnist_rows(sc):
    """12,000 real MNIST rows (784 pixels, label), cached: far bigger than the feed channel's buffers."""
    images, labels = load_mnist("train", limit=12000)
    rdd = sc.parallelize([(img.reshape(-1).tolist(), int(y)) for img, y in zip(images, labels, strict=True)],
                         4).cache()
    assert rdd.count() == 12000
    return rdd


def test_killed_tf_process_mid_feed_without_restarts_fails_train_naming_it(sc, tmp_path, start):
    out = tmp_path / "out"
    out.mkdir()
    cluster = start(sc, chaos_mains.feed_consumer, {"out": str(out), "sleep": 0.02}, 3, input_mode=InputMode.SPARK)
    rdd = mnist_rows(sc)
    box = {}
    killer = threading.Thread(target=lambda: box.update(kill=kill_when_ready(out, out / "fed-worker-1-gen0")),
                              daemon=True)
    killer.start()
    with pytest.raises(NodeFailure, match=r"TF node worker:1 \(executor 1 on 127.0.0.1\) failed"):
        cluster.train(rdd, num_epochs=2, feed_timeout=120)
    killer.join(5)
    assert cluster._failed_at - box["kill"][1] < 10
    begin = time.monotonic()
    with pytest.raises(NodeFailure):  # the failed feed failed the cluster: shutdown does not wait for trainers
        cluster.shutdown(timeout=300)
    assert time.monotonic() - begin < 60 and cluster.state == "failed"
    assert_no_tf_process_left(out)


def test_killed_tf_process_mid_feed_restarts_and_feeds_the_rest(sc, tmp_path, start, caplog):
    (tmp_path / "out").mkdir()
    args = {"out": str(tmp_path / "out"), "sleep": 0.02}
    cluster = start(sc, chaos_mains.feed_consumer, args, 3, input_mode=InputMode.SPARK, max_restarts=1)
    rdd = mnist_rows(sc)
    box = {}

    def kill_mid_feed():
        box["kill"] = kill_when_ready(tmp_path / "out", tmp_path / "out" / "fed-worker-1-gen0")

    killer = threading.Thread(target=kill_mid_feed, daemon=True)
    killer.start()
    with caplog.at_level(logging.INFO, logger="tfos"):
        cluster.train(rdd, num_epochs=2, feed_timeout=120)
        cluster.shutdown(timeout=300)
    killer.join(5)
    assert cluster.restart_count == 1 and cluster.restarts[0]["failed"][0] == "worker:1"
    got = results(tmp_path / "out")
    workers = ("worker-0", "worker-1", "worker-2")
    assert {got[n]["restart_count"] for n in workers} == {1}
    assert len({got[n]["rows"] for n in workers}) == 1 and got["worker-0"]["rows"] > 0  # exact epochs still
    assert "feeding generation 1 the" in caplog.text
    assert_no_tf_process_left(tmp_path / "out")


def executor_jvm_of(tf_pid: int) -> int:
    """The executor JVM that owns a TF process (tfos puts its pid in the process's environment)."""
    from tfos.cluster import lifetime

    with open(f"/proc/{tf_pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return int(env[lifetime.OWNER_ENV.encode()])


def test_killed_executor_jvm_is_replaced_and_the_job_resumes(sc, tmp_path, start):
    args = mnist_args(tmp_path)
    cluster = start(sc, chaos_mains.mnist_resuming_fit, args, 2, max_restarts=1)
    out = tmp_path / "out"
    wait_for(out / "pid-worker-1-gen0")
    wait_for(tmp_path / "model" / "checkpoint")
    tf_pid = int((out / "pid-worker-1-gen0").read_text())
    jvm = executor_jvm_of(tf_pid)
    os.kill(jvm, signal.SIGKILL)  # the whole executor: Spark's standalone master starts a new one
    killed = time.monotonic()
    cluster.shutdown(timeout=600)
    assert cluster.restart_count == 1 and cluster.restarts[0]["failed"][0] == "worker:1"
    assert cluster.restarts[0]["detected_at"] - killed < 30
    got = results(out)
    assert got["worker-1"]["restart_count"] == 1 and got["worker-1"]["start_step"] > 0
    assert got["worker-0"]["final_step"] == args["epochs"] * args["steps_per_epoch"]
    assert not pid_alive(jvm)
    assert_no_tf_process_left(out)


def test_chief_killed_while_exporting_restarts_and_the_export_completes(sc, tmp_path, start):
    args = {**mnist_args(tmp_path), "export_dir": str(tmp_path / "export"), "epochs": 2}
    cluster = start(sc, chaos_mains.mnist_resuming_fit, args, 2, max_restarts=1)
    out = tmp_path / "out"
    wait_for(out / "exporting-worker-0-gen0")
    kill_pid = int((out / "pid-worker-0-gen0").read_text())
    os.kill(kill_pid, signal.SIGKILL)
    cluster.shutdown(timeout=600)
    assert cluster.restart_count == 1 and cluster.restarts[0]["failed"][0] == "worker:0"
    got = results(out)
    assert got["worker-0"]["restart_count"] == 1
    assert got["worker-0"]["start_step"] == got["worker-0"]["final_step"] == 2 * args["steps_per_epoch"]
    assert (tmp_path / "export" / "saved_model.pb").exists()
    assert (tmp_path / "export" / "variables").is_dir()
    assert_no_tf_process_left(out)


def test_chief_killed_while_exporting_without_restarts_fails_naming_it_within_10s(sc, tmp_path, start):
    args = {**mnist_args(tmp_path), "export_dir": str(tmp_path / "export"), "epochs": 2}
    cluster = start(sc, chaos_mains.mnist_resuming_fit, args, 2)
    out = tmp_path / "out"
    wait_for(out / "exporting-worker-0-gen0")
    os.kill(int((out / "pid-worker-0-gen0").read_text()), signal.SIGKILL)
    killed = time.monotonic()
    with pytest.raises(NodeFailure, match=r"TF node worker:0 \(executor 0 on 127.0.0.1\) failed"):
        cluster.shutdown(timeout=300)
    assert cluster._failed_at - killed < 10 and cluster.state == "failed"
    assert_no_tf_process_left(out)  # worker:1, in the middle of the export's collectives, was stopped too


def test_restart_resumes_from_a_checkpoint_on_hdfs(sc, hdfs_url, tmp_path, start):
    import uuid

    from tfos.io.filesystem import FileSystem

    model_dir = f"{hdfs_url}/tmp/tfos-chaos-{uuid.uuid4().hex[:8]}/model"
    args = {**mnist_args(tmp_path), "model_dir": model_dir}
    cluster = start(sc, chaos_mains.mnist_resuming_fit, args, 2, max_restarts=1)
    out = tmp_path / "out"
    wait_for(out / "pid-worker-1-gen0")
    with FileSystem() as fs:
        deadline = time.monotonic() + 180
        while not fs.exists(f"{model_dir}/checkpoint"):
            assert time.monotonic() < deadline, f"no checkpoint in {model_dir} within 180s"
            time.sleep(0.1)
    os.kill(int((out / "pid-worker-1-gen0").read_text()), signal.SIGKILL)
    cluster.shutdown(timeout=600)
    assert cluster.restart_count == 1
    got = results(out)
    for name in ("worker-0", "worker-1"):
        assert got[name]["restart_count"] == 1 and got[name]["start_step"] > 0, got[name]
        assert got[name]["final_step"] == args["epochs"] * args["steps_per_epoch"]
    assert_no_tf_process_left(out)


# --- start-up: a slow node, and a kill before every node registered ---------------------------------------------
def test_a_node_whose_tf_process_starts_45s_late_is_not_reported_dead(sc, tmp_path, start, caplog):
    from tests.chaos_hooks import DelayedSpawner

    out = tmp_path / "out"
    out.mkdir()
    spawner = DelayedSpawner(str(out), {"worker:1": 45.0})  # beyond the driver's 30 s silence limit
    with caplog.at_level(logging.INFO, logger="tfos"):
        cluster = start(sc, chaos_mains.note_start, {"out": str(out)}, 2, spawner=spawner)
        cluster.shutdown(timeout=300)
    assert cluster.state == "stopped" and cluster.restart_count == 0
    got = results(out)
    delayed_at = float((out / "spawn-delayed-worker-1").read_text())
    assert got["worker-1"]["started"] - delayed_at >= 45  # it really started that late
    assert got["worker-1"]["started"] - got["worker-0"]["started"] >= 40
    assert "no heartbeat" not in caplog.text
    assert_no_tf_process_left(out)


def test_a_node_whose_main_holds_the_gil_past_the_silence_limit_is_not_reported_dead(sc, tmp_path, start, caplog):
    out = tmp_path / "out"
    out.mkdir()
    with caplog.at_level(logging.INFO, logger="tfos"):
        cluster = start(sc, chaos_mains.hold_gil, {"out": str(out), "secs": 14}, 2)
        cluster.node_silence_secs = 5.0  # the hold lasts almost three times as long
        cluster.shutdown(timeout=300)
    assert cluster.state == "stopped" and cluster.restart_count == 0
    got = results(out)
    held_from = float(next(out.glob("gil-worker-0-gen0")).read_text())
    assert got["worker-0"]["finished"] - held_from >= 14  # it really held the GIL that long
    warned = [r.getMessage() for r in caplog.records if "no heartbeat from its TF process" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("worker:0 (executor 0 on ") and "the process is alive" in warned[0]
    assert "NodeFailure" not in caplog.text
    assert_no_tf_process_left(out)


class _LogSeen(logging.Handler):
    """Sets ``event`` at the first record whose message contains ``needle``."""

    def __init__(self, needle: str):
        super().__init__(logging.INFO)
        self.needle, self.event = needle, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.event.set()


def kill_start_task_once_registered(out, monkeypatch, sc) -> dict:
    """Hold worker:1's start task back 60 s before it registers; once worker:0 registered, SIGKILL
    worker:0's start task (its Spark Python worker). Returns what the killer saw, when it did."""
    from tests.chaos_hooks import DelayedStartLauncher
    from tfos.cluster import cluster as cluster_module

    monkeypatch.setattr(cluster_module, "SparkLauncher",
                        lambda context: DelayedStartLauncher(context, str(out), {1: 60.0}))
    seen = _LogSeen("registered worker:0 as executor 0 (1/2)")
    server_log = logging.getLogger("tfos.reservation.server")
    server_log.addHandler(seen)
    box: dict = {}

    def kill() -> None:
        try:
            assert seen.event.wait(180), "worker:0 never registered"
            wait_for(out / "start-task-1-gen0")  # worker:1's start task is running, held back
            box["pid"] = int((out / "start-task-0-gen0").read_text())
            box["held_pid"] = int((out / "start-task-1-gen0").read_text())
            time.sleep(2)  # its long poll for the other nodes is in flight (it follows the registration)
            os.kill(box["pid"], signal.SIGKILL)
            box["killed"] = time.monotonic()
        finally:
            server_log.removeHandler(seen)

    threading.Thread(target=kill, daemon=True).start()
    return box


def test_a_start_task_killed_before_every_node_registered_fails_naming_it_within_10s(sc, tmp_path, start,
                                                                                    monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    box = kill_start_task_once_registered(out, monkeypatch, sc)
    # the reservation server sees the start task's connection close (or, a moment later, Spark says the task died)
    with pytest.raises(NodeFailure, match=r"(?s)worker:0 .*(went away while it waited for the other nodes|its start task "
                                          r"failed in Spark)") as err:
        start(sc, chaos_mains.note_start, {"out": str(out)}, 2, reservation_timeout=300)
    failed_at = time.monotonic()
    assert "killed" in box, "the start task was not killed"
    assert failed_at - box["killed"] < 10
    assert err.value.failed_nodes[0] == "worker:0"
    # nothing of the failed start is left: worker:1's held-back start task was killed with the job
    deadline = time.monotonic() + 60
    while pid_alive(box["held_pid"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not pid_alive(box["held_pid"]), "worker:1's start task outlived the failed start"
    assert not [name for name in os.listdir(out) if name.startswith("pid-")]  # no TF process ever started


def test_a_start_task_killed_before_every_node_registered_restarts_and_the_job_completes(sc, tmp_path, start,
                                                                                        monkeypatch):
    args = {**mnist_args(tmp_path), "epochs": 4}
    out = tmp_path / "out"
    box = kill_start_task_once_registered(out, monkeypatch, sc)
    cluster = start(sc, chaos_mains.mnist_resuming_fit, args, 2, max_restarts=1, reservation_timeout=300)
    assert cluster.restart_count == 1 and cluster.restarts[0]["failed"][0] == "worker:0"
    assert cluster.restarts[0]["detected_at"] - box["killed"] < 10
    cluster.shutdown(timeout=600)
    assert cluster.state == "stopped"
    got = results(out)
    for name in ("worker-0", "worker-1"):
        assert got[name]["restart_count"] == 1, got[name]
        assert got[name]["start_step"] == 0  # killed before any training: nothing to resume from
        assert got[name]["final_step"] == args["epochs"] * args["steps_per_epoch"]
    assert got["worker-0"]["test_accuracy"] >= 0.9
    assert_no_tf_process_left(out)
