"""TF clusters on the real Spark standalone cluster (3 single-core workers on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request

import pytest

import tfos
from tests import cluster_mains
from tfos import ClusterConfigError, InputMode, NodeFailure
from tfos.reservation.server import ReservationTimeout


def results(out) -> dict[str, dict]:
    found = {}
    for name in os.listdir(out):
        if name.endswith(".json"):
            with open(os.path.join(out, name)) as f:
                found[name[:-5]] = json.load(f)
    return found


def eventually(predicate, timeout: float = 30.0) -> bool:
    """Wait (bounded, generous for a loaded 2-core machine) until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_context_and_tf_config_with_chief(sc, tmp_path, start):
    cluster = start(sc, cluster_mains.record_context, {"out": str(tmp_path)}, 3, master_node="chief")
    cluster.shutdown(timeout=120)
    got = results(tmp_path)
    assert set(got) == {"chief-0", "worker-0", "worker-1"}
    spec = got["chief-0"]["cluster_spec"]
    assert len(spec["chief"]) == 1 and len(spec["worker"]) == 2
    assert all(addr.startswith("127.0.0.1:") for addrs in spec.values() for addr in addrs)
    assert got["worker-1"]["tf_config"] == {"cluster": spec, "task": {"type": "worker", "index": 1},
                                            "environment": "cloud"}
    assert [got[k]["worker_num"] for k in ("chief-0", "worker-0", "worker-1")] == [0, 1, 2]
    assert got["worker-0"]["num_workers"] == 3
    assert sorted(g["executor_id"] for g in got.values()) == [0, 1, 2]
    assert got["chief-0"]["keras"] == "1"
    # forked from the warm launcher with its objects frozen out of the collector's reach: a full
    # collection in a TF process copies none of the launcher's heap (it copied ~78 MB before)
    for g in got.values():
        assert g["frozen_objects"] > 100_000 and g["collect_private_mb"] < 20, g


@pytest.mark.slow
def test_multiworker_mirrored_keras_fit(sc, tmp_path, start):
    with start(sc, cluster_mains.mwms_fit, {"out": str(tmp_path)}, 2) as cluster:
        assert cluster.cluster_spec.keys() == {"worker"}
    got = results(tmp_path)
    assert set(got) == {"worker-0", "worker-1"}
    assert got["worker-0"]["workers"] == 2
    # Synchronous training: both replicas end with identical weights, and the model learned.
    assert got["worker-0"]["weight_checksum"] == pytest.approx(got["worker-1"]["weight_checksum"], rel=1e-6)
    assert got["worker-0"]["loss"][-1] < got["worker-0"]["loss"][0]
    assert got["worker-0"]["test_accuracy"] > 0.8


@pytest.mark.slow
def test_parameter_server_strategy_custom_loop(sc, tmp_path, start):
    cluster = start(sc, cluster_mains.ps_strategy, {"out": str(tmp_path)}, 3, num_ps=1, master_node="chief")
    cluster.shutdown(timeout=300)
    got = results(tmp_path)
    assert set(got) == {"chief-0"}  # ps and worker served until shutdown stopped them
    assert got["chief-0"]["w"] == pytest.approx(3.0, abs=0.3)
    assert got["chief-0"]["b"] == pytest.approx(1.0, abs=0.3)
    assert "/job:ps/" in got["chief-0"]["ps_device"]
    states = {n.name: n.state for n in cluster.server.nodes()}
    assert states == {"ps:0": "stopped", "chief:0": "finished", "worker:0": "stopped"}


@pytest.mark.slow
def test_tf_compat_v1_ps_and_workers(sc, tmp_path, start):
    cluster = tfos.TFCluster.run(sc, cluster_mains.v1_graph, {"out": str(tmp_path)}, 3, 1, False,
                                 tfos.TFCluster.InputMode.TENSORFLOW)
    cluster.shutdown(timeout=300)
    got = results(tmp_path)
    assert set(got) == {"worker-0", "worker-1"}
    assert got["worker-0"]["w_device"].startswith("/job:ps/task:0")
    assert max(g["step"] for g in got.values()) >= 190  # shared global step on the ps
    assert got["worker-0"]["w"] == pytest.approx(2.0, abs=0.1)


@pytest.mark.slow
def test_evaluator_node_evaluates_and_is_stopped(sc, tmp_path, start):
    cluster = start(sc, cluster_mains.with_evaluator, {"out": str(tmp_path)}, 3, master_node="chief",
                       eval_node=True)
    deadline = time.time() + 120
    while "evaluator-0" not in results(tmp_path) and time.time() < deadline:
        time.sleep(0.5)
    cluster.shutdown(timeout=120)
    got = results(tmp_path)
    assert got["evaluator-0"]["w"] == 1.0  # the chief's trained value, restored from its checkpoint
    assert got["evaluator-0"]["tf_config"]["task"] == {"type": "evaluator", "index": 0}
    assert "evaluator" not in got["evaluator-0"]["tf_config"]["cluster"]
    assert eventually(lambda: not pid_alive(got["evaluator-0"]["pid"])), "the evaluator outlived shutdown"


def test_failing_node_raises_on_driver_naming_it(sc, tmp_path, start):
    begin = time.monotonic()
    cluster = start(sc, cluster_mains.raise_on_worker, {"out": str(tmp_path), "bad_index": 1}, 3)
    with pytest.raises(NodeFailure) as err:
        cluster.shutdown(timeout=120)
    assert time.monotonic() - begin < 30
    assert err.value.node_name == "worker:1" and err.value.executor_id == 1
    assert err.value.host == "127.0.0.1"
    assert "ValueError: bad input in shard 1" in str(err.value)
    assert "worker:1 (executor 1 on 127.0.0.1)" in str(err.value)
    states = {n.name: n.state for n in cluster.server.nodes()}
    assert states["worker:1"] == "failed"
    # The healthy workers (sleeping for 120 s) were stopped too: no TF process of the cluster is left.
    pids = {name: r["pid"] for name, r in results(tmp_path).items()}
    assert "worker-1" in pids  # the others may have been stopped before their TF process began
    deadline = time.monotonic() + 30
    while (alive := [n for n, p in pids.items() if pid_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive == [], f"TF processes still running after NodeFailure: {alive}"
    assert sc.parallelize(range(3), 3).map(lambda x: x * 2).collect() == [0, 2, 4]


def test_an_error_before_the_tf_process_starts_reaches_the_driver(sc, tmp_path, start):
    begin = time.monotonic()
    cluster = start(sc, cluster_mains.record_context, {"out": str(tmp_path), "num_gpus": "two"}, 2)
    with pytest.raises(NodeFailure, match="failed before its TF process started") as err:
        cluster.shutdown(timeout=120)
    assert time.monotonic() - begin < 150  # not the 600 s reservation timeout, nor Spark's stage retries
    assert "num_gpus must be a whole number, got 'two'" in str(err.value)
    assert "already registered" not in str(err.value)
    assert sc.parallelize(range(3), 3).count() == 3  # the executors are free again


def test_reservation_timeout_names_missing_executors(sc, tmp_path):
    blocker_started = threading.Event()

    def hold_one_slot():
        sc.setJobGroup("blocker", "holds one executor", interruptOnCancel=True)
        blocker_started.set()
        try:
            sc.parallelize([0], 1).map(lambda _: time.sleep(60)).collect()
        except Exception:  # noqa: BLE001 - cancelled below
            pass

    from pyspark import InheritableThread

    thread = InheritableThread(target=hold_one_slot, daemon=True)
    thread.start()
    blocker_started.wait()
    time.sleep(2)
    try:
        with pytest.raises(ReservationTimeout) as err:
            tfos.run(sc, cluster_mains.record_context, {"out": str(tmp_path)}, 3, reservation_timeout=8)
    finally:
        sc.cancelJobGroup("blocker")
        thread.join(30)
    assert err.value.missing == [0, 1, 2]
    assert "executor ids [0, 1, 2] never registered" in str(err.value)
    assert "task slots" in str(err.value)


def test_tensorboard_url_answers_http_until_shutdown(sc, tmp_path, start):
    release = tmp_path / "release"
    cluster = start(sc, cluster_mains.wait_for_file, {"out": str(tmp_path), "release": str(release)}, 2,
                       master_node="chief", tensorboard=True, log_dir=str(tmp_path / "tb"))
    url = cluster.tensorboard_url
    assert url and url.startswith("http://127.0.0.1:")
    deadline, status = time.time() + 90, None
    while time.time() < deadline and status is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                status = resp.status
                body = resp.read(2000).decode("utf-8", "replace")
        except OSError:
            time.sleep(0.5)
    assert status == 200 and "TensorBoard" in body
    release.touch()
    cluster.shutdown(timeout=120)
    assert results(tmp_path)["chief-0"]["tensorboard_url"] == url

    def tensorboard_gone() -> bool:
        try:
            urllib.request.urlopen(url, timeout=5).close()
        except OSError:
            return True
        return False

    assert eventually(tensorboard_gone), f"TensorBoard still answers at {url} after shutdown"


def test_invalid_requests_fail_before_launch(sc):
    with pytest.raises(ClusterConfigError, match="leaves no executor for training"):
        tfos.run(sc, cluster_mains.record_context, {}, 2, num_ps=2)
    with pytest.raises(ClusterConfigError, match="needs 5 executors but only 3 joined"):
        tfos.run(sc, cluster_mains.record_context, {}, 5, reservation_timeout=1)
    with pytest.raises(ClusterConfigError, match="main_fun must be a function"):
        tfos.run(sc, "not a function", {}, 2)
    with pytest.raises(ValueError, match="input_mode must be"):
        tfos.run(sc, cluster_mains.record_context, {}, 2, input_mode=7)
    with pytest.raises(ClusterConfigError, match=r"has 3 executors for 2 TF node\(s\) on executors.*"
                                                 r"--num-executors 2"):
        tfos.run(sc, cluster_mains.record_context, {}, 2, input_mode=InputMode.SPARK)
    with pytest.raises(ClusterConfigError, match="needs tfos.run"):
        cluster = tfos.run(sc, cluster_mains.record_context, {"out": "/tmp"}, 1, input_mode=InputMode.TENSORFLOW)
        try:
            cluster.train(sc.parallelize([1]))
        finally:
            cluster.shutdown(timeout=60)


def test_local_master_slot_check():
    from tfos.cluster.validation import local_slots

    assert local_slots("local") == 1
    assert local_slots("local[4]") == 4
    assert local_slots("local[2, 3]") == 2
    assert local_slots("local[*]") == os.cpu_count()
    assert local_slots("spark://127.0.0.1:7077") is None
    assert local_slots("local-cluster[2,1,1024]") is None
