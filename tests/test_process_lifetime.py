"""No process outlives its owner: TF processes, the TF launcher and TensorBoard end with their executor.

Real Spark standalone cluster (3 single-core executors), real TF processes, real kills.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import tfos
from tests import lifetime_mains
from tests.process_check import wait_until_none_owned_by
from tests.spark_standalone import wait_for_executors
from tfos import NodeFailure
from tfos.cluster import lifetime


def _wait_results(out, names, timeout=120.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {n: os.path.join(out, f"{n}.json") for n in names}
        if all(os.path.exists(p) for p in found.values()):
            return {n: json.load(open(p)) for n, p in found.items()}
        time.sleep(0.2)
    raise AssertionError(f"TF nodes {names} did not write their records to {out} within {timeout}s")


def _gone(pid: int, timeout: float = 30.0) -> bool:
    return lifetime.wait_for_exit(pid, timeout)


def test_tf_process_stays_in_its_executors_session(sc, tmp_path):
    out = str(tmp_path)
    release = os.path.join(out, "release")
    cluster = tfos.run(sc, lifetime_mains.record_and_wait, {"out": out, "release": release}, 2)
    try:
        got = _wait_results(out, ["worker-0", "worker-1"])
        for rec in got.values():
            jvm = rec["owner"]
            assert lifetime._is_jvm(jvm), f"{rec['node']}: owner {jvm} is not the executor JVM"
            assert lifetime.spark_executor_id(jvm) is not None
            assert rec["sid"] == os.getsid(jvm), f"{rec['node']} left its executor's session (setsid)"
        assert got["worker-0"]["owner"] != got["worker-1"]["owner"]
    finally:
        open(release, "w").close()
        cluster.shutdown(timeout=120)
    node_dirs = [n["node_dir"] for n in cluster.cluster_info]
    assert node_dirs and not [d for d in node_dirs if os.path.exists(d)], "node directories (payload, feed) left"


def test_executor_kill_is_a_node_failure_and_leaves_no_process(sc, tmp_path):
    out = str(tmp_path)
    cluster = tfos.run(sc, lifetime_mains.record_and_wait, {"out": out, "max_wait": 300}, 2)
    try:
        got = _wait_results(out, ["worker-0", "worker-1"])
        victim = got["worker-1"]
        killed_at = time.monotonic()
        os.kill(victim["owner"], signal.SIGKILL)  # the executor JVM of worker:1
        with pytest.raises(NodeFailure) as err:
            cluster.shutdown(timeout=120)
        detected = time.monotonic() - killed_at
        assert detected < 30, f"the lost executor was reported after {detected:.1f}s"
        assert err.value.node_name == "worker:1"
        assert "Spark executor" in str(err.value) and "was lost" in str(err.value)
        assert _gone(victim["pid"]), f"TF process {victim['pid']} outlived its executor"
        assert not wait_until_none_owned_by({victim["owner"]})
        assert _gone(got["worker-0"]["pid"]), "the healthy node was not stopped after the failure"
    finally:
        if cluster.state != "stopped":
            cluster.__exit__(RuntimeError, RuntimeError("test failed"), None)
        wait_for_executors(sc, 3, 180)  # the standalone worker replaces the killed executor


def test_tensorboard_ends_with_a_killed_tf_process(sc, tmp_path):
    out = str(tmp_path)
    cluster = tfos.run(sc, lifetime_mains.record_and_wait, {"out": out, "max_wait": 300}, 1, tensorboard=True,
                       log_dir=os.path.join(out, "tb"))
    try:
        rec = _wait_results(out, ["worker-0"])["worker-0"]
        assert rec["children"], "TensorBoard was not started as a child of the TF process"
        os.kill(rec["pid"], signal.SIGKILL)
        with pytest.raises(NodeFailure):
            cluster.shutdown(timeout=120)
        for child in rec["children"]:
            assert _gone(child, 20), f"TensorBoard (pid {child}) outlived its SIGKILLed TF process"
    finally:
        if cluster.state != "stopped":
            cluster.__exit__(RuntimeError, RuntimeError("test failed"), None)
