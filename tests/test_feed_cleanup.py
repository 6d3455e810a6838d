"""Failure paths of the feed, in-process (no Spark): claims left by killed attempts, spill files
and registry directories left behind, and what a failed feed task says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from tests.test_feed_consumers import ConsumerPool
from tfos.feed import feeder, registry
from tfos.feed.errors import FeedError
from tfos.feed.progress import ProgressServer


@pytest.fixture(scope="module")
def consumers():
    pool = ConsumerPool(1)
    yield pool
    pool.close()


@pytest.fixture
def feed_dir(tmp_path):
    path = tmp_path / "feed"
    path.mkdir(mode=0o700)
    return str(path)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.die = lambda: (proc.kill(), proc.wait())  # killed and reaped, as Spark's daemon reaps its workers
    yield proc
    proc.die()


def node(feed_dir: str, index: int = 0) -> dict:
    return {"job_name": "worker", "task_index": index, "feed_dir": feed_dir, "executor_id": index}


def plan(feed_id: str = "f1", **kwargs) -> feeder.TrainPlan:
    return feeder.TrainPlan(cluster_id="c", qnames=["input"], num_epochs=1, feed_timeout=10, feed_id=feed_id, **kwargs)


def leave_claim(feed_dir: str, *, pid: int, shard: int, task_attempt_id: int, feed_id: str = "f1") -> str:
    """A claim as a feed task writes it (the one a killed attempt leaves behind)."""
    import socket

    path = os.path.join(feed_dir, f"{feeder.CLAIM_PREFIX}{feed_id}")
    with open(path, "w") as f:
        json.dump({"shard": shard, "attempt": 0, "task_attempt_id": task_attempt_id, "pid": pid,
                   "host": socket.gethostname(), "node": "worker:0"}, f)
    return path


# ---------------------------------------------------------------------------------------------
# claims
# ---------------------------------------------------------------------------------------------
def test_a_retry_takes_over_the_claim_left_by_a_killed_attempt(feed_dir):
    path = leave_claim(feed_dir, pid=dead_pid(), shard=1, task_attempt_id=5)
    retry = feeder.TaskAttempt(1, attempt=1, task_attempt_id=9)
    claim = feeder._claim_node(feeder.NodeTarget(node(feed_dir)), plan(), retry, takeover_wait=0)
    with open(path) as f:
        assert json.load(f)["pid"] == os.getpid()
    claim.release()
    assert os.listdir(feed_dir) == []


def test_a_claim_of_a_dead_task_of_another_shard_is_taken_over_too(feed_dir):
    # a retried barrier stage may put another shard on this executor
    leave_claim(feed_dir, pid=dead_pid(), shard=2, task_attempt_id=5)
    feeder._claim_node(feeder.NodeTarget(node(feed_dir)), plan(), feeder.TaskAttempt(0, 0, 11), takeover_wait=0).release()
    assert os.listdir(feed_dir) == []


def test_two_live_feed_tasks_on_one_node_still_fail_at_once_naming_both(feed_dir, live_process):
    leave_claim(feed_dir, pid=live_process.pid, shard=2, task_attempt_id=5)
    started = time.monotonic()
    with pytest.raises(FeedError, match=rf"two feed tasks landed on the executor of worker:0 \(shard 2 attempt 0 "
                                        rf"\(task attempt id 5, pid {live_process.pid}\), still running, and shard 0"):
        feeder._claim_node(feeder.NodeTarget(node(feed_dir)), plan(), feeder.TaskAttempt(0, 0, 9), takeover_wait=5)
    assert time.monotonic() - started < 2  # not an earlier attempt of the same shard: no waiting


def test_a_live_earlier_attempt_gets_time_to_die_then_is_taken_over(feed_dir, live_process):
    leave_claim(feed_dir, pid=live_process.pid, shard=1, task_attempt_id=5)
    threading.Timer(0.5, live_process.die).start()  # Spark killing the old attempt
    target = feeder.NodeTarget(node(feed_dir))
    claim = feeder._claim_node(target, plan(), feeder.TaskAttempt(1, 1, 9), takeover_wait=10)
    assert claim.record["task_attempt_id"] == 9
    claim.release()


def test_a_live_earlier_attempt_that_does_not_die_is_a_double_landing(feed_dir, live_process):
    leave_claim(feed_dir, pid=live_process.pid, shard=1, task_attempt_id=5)
    with pytest.raises(FeedError, match="two feed tasks landed"):
        feeder._claim_node(feeder.NodeTarget(node(feed_dir)), plan(), feeder.TaskAttempt(1, 1, 9), takeover_wait=0.3)


def test_claims_of_dead_tasks_of_earlier_feeds_are_swept(feed_dir, live_process):
    leave_claim(feed_dir, pid=dead_pid(), shard=0, task_attempt_id=1, feed_id="old")
    live = leave_claim(feed_dir, pid=live_process.pid, shard=0, task_attempt_id=2, feed_id="other")
    feeder._claim_node(feeder.NodeTarget(node(feed_dir)), plan(), feeder.TaskAttempt(0, 0, 3), takeover_wait=0).release()
    assert os.listdir(feed_dir) == [os.path.basename(live)]  # a live task's claim is never touched
    assert feeder.reap_claims(feed_dir) == []
    live_process.die()
    assert feeder.reap_claims(feed_dir) == [live]
    assert os.listdir(feed_dir) == []


# ---------------------------------------------------------------------------------------------
# spill files and registry directories
# ---------------------------------------------------------------------------------------------
def test_spill_directories_of_dead_tasks_are_reaped(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path))
    dead = tmp_path / f"{feeder.SPILL_PREFIX}{dead_pid()}-abc"
    dead.mkdir()
    (dead / "0.arrows").write_bytes(b"x" * 10)
    mine = feeder._spill_dir()
    assert os.path.dirname(mine) == str(tmp_path)
    assert feeder.reap_spills() == [str(dead)]
    assert os.listdir(tmp_path) == [os.path.basename(mine)]


def test_registry_directories_go_with_their_last_entry(tmp_path, monkeypatch, feed_dir):
    monkeypatch.delenv(registry.REGISTRY_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    registry.register_local_node("c1", 0, "worker", 0, feed_dir)
    registry.register_local_node("c1", 1, "worker", 1, feed_dir)
    registry.unregister_local_node("c1", "worker", 0)
    assert [n["task_index"] for n in registry.find_local_nodes("c1")] == [1]
    registry.unregister_local_node("c1", "worker", 1)
    assert not (tmp_path / ".tfos-feed").exists()
    # a $TFOS_FEED_REGISTRY_DIR belongs to the user: only the cluster's directory goes
    monkeypatch.setenv(registry.REGISTRY_ENV, str(tmp_path / "reg"))
    (tmp_path / "reg").mkdir()
    registry.register_local_node("c2", 0, "worker", 0, feed_dir)
    registry.unregister_local_node("c2", "worker", 0)
    assert os.listdir(tmp_path / "reg") == []


def test_entries_of_nodes_that_removed_their_directory_are_dropped(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.REGISTRY_ENV, str(tmp_path / "reg"))
    gone = tmp_path / "gone"
    gone.mkdir()
    registry.register_local_node("c", 0, "worker", 0, str(gone))
    gone.rmdir()
    assert registry.find_local_nodes("c") == []
    assert os.listdir(tmp_path / "reg") == []


def test_retiring_a_node_unregisters_it_and_waits_for_its_live_feed_tasks(tmp_path, monkeypatch, feed_dir,
                                                                           live_process):
    monkeypatch.setenv(registry.REGISTRY_ENV, str(tmp_path / "reg"))
    registry.register_local_node("c", 0, "worker", 0, feed_dir)
    leave_claim(feed_dir, pid=live_process.pid, shard=0, task_attempt_id=1)
    threading.Timer(0.5, live_process.die).start()
    started = time.monotonic()
    registry.retire_local_node("c", "worker", 0, feed_dir, grace=10, linger=0)
    assert 0.3 < time.monotonic() - started < 5
    assert os.listdir(tmp_path / "reg") == []


# ---------------------------------------------------------------------------------------------
# a whole shard feed task, in-process: nothing is left after it succeeds or fails
# ---------------------------------------------------------------------------------------------
def run_feed_task(monkeypatch, feed_dir: str, rows: int, errors: list, width: int = 1) -> list:
    import numpy as np
    import pyspark

    from tfos.feed import arrow_codec as codec

    monkeypatch.setattr(pyspark.BarrierTaskContext, "get", classmethod(lambda cls: SimpleNamespace(
        partitionId=lambda: 0)))
    server = ProgressServer("127.0.0.1", {}, log=False, on_error=errors.append)
    try:
        p = plan(feed_id=os.urandom(4).hex(), progress=server.address, num_workers=1, end_feed=True)
        encoder = codec.RowEncoder(0)
        pairs = []
        for start in range(0, rows, 50):
            batch = encoder.encode([(i, np.full(width, i, dtype=np.float64))
                                    for i in range(start, min(rows, start + 50))], start)
            pairs.append((0, (0, batch.num_rows, codec.to_ipc(batch).to_pybytes())))
        try:
            return list(feeder.feed_shard(p, pairs))
        except FeedError:
            deadline = time.monotonic() + 5
            while not errors and time.monotonic() < deadline:  # the report reaches the driver's server
                time.sleep(0.05)
            raise
    finally:
        server.close()


def test_a_feed_task_leaves_nothing_behind_when_it_succeeds_or_fails(tmp_path, monkeypatch, feed_dir, consumers):
    local = tmp_path / "spark-local"
    local.mkdir()
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(local))
    monkeypatch.setenv(registry.REGISTRY_ENV, str(tmp_path / "reg"))
    consumers.reset()
    registry.register_local_node("c", 0, "worker", 0, feed_dir)
    consumers.submit(0, "collect", feed_dir=feed_dir, node="worker:0")
    errors: list = []
    [line] = run_feed_task(monkeypatch, feed_dir, 100, errors)
    assert json.loads(line)["inputs"]["input"]["rows"] == 100 and len(consumers.result(0)) == 100
    assert os.listdir(local) == []
    assert [n for n in os.listdir(feed_dir) if n.startswith(feeder.CLAIM_PREFIX)] == []

    # the node fails while being fed: the task's error names its shard and node, and it cleans up
    for name in os.listdir(feed_dir):
        os.unlink(os.path.join(feed_dir, name))
    consumers.submit(0, "fail", feed_dir=feed_dir, node="worker:0", batches=1, batch_size=8)
    with pytest.raises(FeedError, match="boom in main_fun") as info:
        run_feed_task(monkeypatch, feed_dir, 4000, errors, width=1024)  # 32 MB: more than the socket buffers
    assert "worker:0" in str(info.value) and "shard 0" in str(info.value)
    assert errors and "worker:0" in errors[-1] and "shard 0" in errors[-1]
    assert os.listdir(local) == []
    assert [n for n in os.listdir(feed_dir) if n.startswith(feeder.CLAIM_PREFIX)] == []
    consumers.reset()
    registry.unregister_local_node("c", "worker", 0)
    assert os.listdir(tmp_path / "reg") == []


def test_an_error_before_the_node_is_known_still_names_the_shard(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.REGISTRY_ENV, str(tmp_path / "reg"))
    errors: list = []
    with pytest.raises(FeedError, match="no TF chief/worker node of cluster c"):
        run_feed_task(monkeypatch, str(tmp_path), 1, errors)
    assert errors and errors[0].startswith("FeedError: feed task of shard 0 on ")


# ---------------------------------------------------------------------------------------------
# what the driver says when a feed job fails
# ---------------------------------------------------------------------------------------------
SPARK_KILLED = (
    "An error occurred while calling z:org.apache.spark.api.python.PythonRDD.collectAndServe.\n"
    ": org.apache.spark.SparkException: Job aborted due to stage failure: Could not recover from a failed barrier "
    "ResultStage. Most recent failure reason: Stage failed because barrier task ResultTask(13, 0) finished "
    "unsuccessfully.\norg.apache.spark.SparkException: Python worker exited unexpectedly (crashed)\n"
    "\tat org.apache.spark.api.python.BasePythonRunner$ReaderIterator.handleException(PythonRunner.scala:612)\n")
SPARK_LOST = (
    "Job aborted due to stage failure: Task 3 in stage 7.0 failed 4 times, most recent failure: Lost task 3.3 in "
    "stage 7.0 (TID 25) (10.1.2.3 executor 2): ExecutorLostFailure (executor 2 exited caused by one of the running "
    "tasks) Reason: Command exited with code 137\nDriver stacktrace:\n\tat org.apache.spark...")
SPARK_FEED_ERROR = (
    "Job aborted due to stage failure: Lost task 1.0 in stage 9.0 (TID 4) (10.1.2.4 executor 1): "
    "org.apache.spark.api.python.PythonException: Traceback (most recent call last):\n  File ...\n"
    "tfos.feed.errors.FeedError: the TF process of worker:1 (pid 77) is gone\n\n\tat org.apache.spark...")


def test_a_feed_job_failure_names_the_task_where_and_why():
    from tfos.feed.feed_job import FeedJobError, _feed_failure

    err = _feed_failure(RuntimeError(SPARK_KILLED), "feeding input to the workers")
    assert isinstance(err, FeedJobError) and (err.task, err.feed_task, err.told_by_task) == (0, True, False)
    assert str(err) == ("feeding input to the workers failed: the feed task of shard 0 (stage 13) failed: "
                        "org.apache.spark.SparkException: Python worker exited unexpectedly (crashed)")
    err = _feed_failure(RuntimeError(SPARK_LOST), "feeding input to the workers")
    assert (err.task, err.executor, err.host, err.feed_task) == (3, "2", "10.1.2.3", False)
    assert str(err) == ("feeding input to the workers failed: task 3 of stage 7 on executor 2 (10.1.2.3) failed: "
                        "ExecutorLostFailure (executor 2 exited caused by one of the running tasks) Reason: Command "
                        "exited with code 137")
    err = _feed_failure(RuntimeError(SPARK_FEED_ERROR), "feeding input to the workers")
    assert str(err) == "feeding input to the workers failed: FeedError: the TF process of worker:1 (pid 77) is gone"
    assert (err.task, err.executor, err.told_by_task) == (1, "1", True)
    err = _feed_failure(RuntimeError("Job 12 cancelled part of cancelled job group tfos-c-feed"), "feeding input")
    assert str(err) == "feeding input failed: the Spark job failed: Job 12 cancelled part of cancelled job group tfos-c-feed"


def test_a_micro_batch_whose_feed_fails_is_reported_before_spark_swallows_it():
    from tfos.feed import feed_job

    class Batch:  # not an RDD: its feed fails at once
        def isEmpty(self):
            return False

    class Stream:
        isStreaming = True

        def __init__(self):
            self.writeStream = self

        def foreachBatch(self, fn):
            self.fn = fn
            return self

        def start(self):
            return self

    seen = []
    stream = feed_job.train(None, Stream(), cluster_id="c", num_workers=2, on_error=seen.append)
    with pytest.raises(TypeError, match="expected an RDD or a DataFrame"):
        stream.fn(Batch(), 0)
    assert len(seen) == 1 and isinstance(seen[0], TypeError)
