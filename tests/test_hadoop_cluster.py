"""The single-host Hadoop 3 of scripts/hadoop.sh, as a user sees it: real daemons, real PySpark on YARN.

The session's HDFS + YARN (``yarn_cluster``) serves the queue, node and job tests; the lifecycle
test starts and stops a second, private instance on its own ports and state directory.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.hdfs_fixture import REPO, SCRIPT
from tests.yarn_fixture import YarnCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

JOB = REPO / "tests" / "resources" / "yarn_count_job.py"
GPU_DISCOVERY = REPO / "tests" / "resources" / "gpu_discovery.sh"
# small containers: AM/driver and executors of 512 MB (+ 384 MB overhead), one core each
SMALL = ["--driver-memory", "512m", "--executor-memory", "512m", "--executor-cores", "1"]


def _queues(cluster: YarnCluster) -> dict[str, dict[str, Any]]:
    info = cluster.rest("/ws/v1/cluster/scheduler")["scheduler"]["schedulerInfo"]
    assert info["type"] == "capacityScheduler"
    return {q["queueName"]: q for q in info["queues"]["queue"]}


def _partition(queue: dict[str, Any], label: str) -> dict[str, Any]:
    for part in queue["capacities"]["queueCapacitiesByPartition"]:
        if part["partitionName"] == label:
            return part
    raise AssertionError(f"queue {queue['queueName']} has no capacities for partition {label!r}")


def _gpus(node: dict[str, Any]) -> int:
    infos = node["totalResource"]["resourceInformations"]["resourceInformation"]
    return sum(int(i["value"]) for i in infos if i["name"] == "yarn.io/gpu")


def test_scheduler_has_the_reference_queues_labels_and_capacities(yarn_cluster):
    labels = yarn_cluster.rest("/ws/v1/cluster/get-node-labels")["nodeLabelInfo"]
    assert {(label["name"], label["exclusivity"]) for label in labels} == {("CPU", True), ("GPU", True)}
    queues = _queues(yarn_cluster)
    assert set(queues) == {"CPU_Q", "GPU_Q"}
    for name, label in (("CPU_Q", "CPU"), ("GPU_Q", "GPU")):
        queue = queues[name]
        assert (queue["capacity"], queue["maxCapacity"], queue["state"]) == (50.0, 100.0, "RUNNING"), name
        assert queue["nodeLabels"] == [label], name
        assert queue["defaultNodeLabelExpression"] == label, name
        own = _partition(queue, label)
        assert (own["capacity"], own["maxCapacity"]) == (100.0, 100.0), (name, own)


def test_gpu_node_has_label_gpu_and_gpus_cpu_node_label_cpu(yarn_cluster):
    nodes = {",".join(n.get("nodeLabels") or []): n for n in yarn_cluster.nodes()}
    assert set(nodes) == {"CPU", "GPU"}, [(n["id"], n.get("nodeLabels")) for n in yarn_cluster.nodes()]
    assert _gpus(nodes["GPU"]) == 4
    assert _gpus(nodes["CPU"]) == 0
    for node in nodes.values():
        # room for three single-core executors and an ApplicationMaster on each node
        assert node["totalResource"]["vCores"] >= 4 and node["totalResource"]["memory"] >= 4 * 1408
        assert node["id"].split(":")[0] in ("localhost", "127.0.0.1")


@pytest.mark.parametrize(("queue", "label"), [("CPU_Q", "CPU"), ("GPU_Q", "GPU")])
def test_pyspark_job_in_cluster_mode_runs_on_its_queues_node(yarn_cluster, queue, label, tmp_path):
    marker = f"TFOS-MARK-{uuid.uuid4().hex[:8]}"
    conf: dict[str, str] = {}
    if label == "GPU":  # YARN really schedules yarn.io/gpu: each executor asks for one fake GPU
        conf = {"spark.executor.resource.gpu.amount": "1", "spark.task.resource.gpu.amount": "1",
                "spark.executor.resource.gpu.discoveryScript": str(GPU_DISCOVERY),
                "spark.executorEnv.FAKE_GPU_CLAIM_DIR": str(tmp_path / "gpu-claims")}
    result = yarn_cluster.spark_submit(["--deploy-mode", "cluster", "--queue", queue, "--num-executors", "1",
                                        *SMALL, str(JOB), marker], conf=conf, timeout=600)
    assert result.app_id, f"no application id in the output\n{result.output}"
    report = yarn_cluster.wait_for_app(result.app_id, timeout=60)
    assert (report["state"], report["finalStatus"]) == ("FINISHED", "SUCCEEDED"), (report, result.output[-6000:])
    assert result.returncode == 0, result.output[-6000:]
    assert report["queue"] == f"root.{queue}" and report["amNodeLabelExpression"] == label
    containers = yarn_cluster.app_containers(result.app_id)
    assert len(containers) >= 2, containers  # the ApplicationMaster (driver) and an executor
    assert {c.node_label for c in containers} == {label}, containers
    logs = yarn_cluster.logs(result.app_id)
    assert f"{marker} count=500" in logs  # the driver's stdout, inside the ApplicationMaster
    task_lines = [line for line in logs.splitlines() if line.startswith(f"{marker} task gpus=")]
    assert len(task_lines) == 2, logs[-4000:]  # both partitions' tasks, from the executor's stdout
    if label == "GPU":
        assert all(line.split("=", 1)[1].strip().isdigit() for line in task_lines), task_lines
    print(f"{queue}: spark-submit took {result.elapsed_s:.0f} s; containers {containers}")


def test_unknown_queue_fails_fast_naming_the_queue(yarn_cluster):
    result = yarn_cluster.spark_submit(["--deploy-mode", "cluster", "--queue", "NO_SUCH_Q", *SMALL, str(JOB), "x"],
                                       timeout=180)
    assert result.returncode != 0
    assert result.elapsed_s < 90, f"took {result.elapsed_s:.0f} s"
    assert "to unknown queue: NO_SUCH_Q" in result.stderr, result.output[-4000:]


# ---------------------------------------------------------------- lifecycle of a private instance
def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _private_ports() -> dict[str, str]:
    """Ports for a second instance: HDFS, a YARN base (B..B+3, B+20..22, B+30..32) and the RM web port."""
    for _ in range(200):
        base = random.randrange(20000, 30000, 100)
        hdfs, web = base + 90, base + 91
        wanted = [*range(base, base + 4), *range(base + 20, base + 23), *range(base + 30, base + 33), hdfs, web]
        if all(_free(p) for p in wanted):
            return {"TFOS_HDFS_PORT": str(hdfs), "TFOS_YARN_PORT_BASE": str(base), "TFOS_YARN_WEB_PORT": str(web)}
    raise AssertionError("no free port range found for a second Hadoop instance")


def _jvms_of(state_dir: Path) -> list[str]:
    """Command lines of running JVMs whose command line names the instance's state directory."""
    ps = subprocess.run(["ps", "-ww", "-eo", "pid,args", "--no-headers"], capture_output=True, text=True, check=True)
    return [line.strip()[:300] for line in ps.stdout.splitlines()
            if "java" in line and "org.apache.hadoop" in line and str(state_dir) in line]


def test_start_twice_then_stop_leaves_no_hadoop_jvm(tmp_path):
    state = tmp_path / "hadoop"
    env = {**os.environ, **_private_ports(), "TFOS_HADOOP_DIR": str(state)}
    for key in ("TFOS_HDFS_DIR", "HADOOP_CONF_DIR", "CLASSPATH"):
        env.pop(key, None)

    def script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)

    try:
        t0 = time.monotonic()
        start = script("start")
        took = time.monotonic() - t0
        assert start.returncode == 0, start.stderr[-6000:]
        assert took < 240, f"start took {took:.0f} s"
        assert start.stdout.strip().splitlines()[-1] == f"hdfs://127.0.0.1:{env['TFOS_HDFS_PORT']}"
        assert len(_jvms_of(state)) == 5, _jvms_of(state)  # NameNode, DataNode, RM, 2 NodeManagers

        t0 = time.monotonic()
        again = script("start")
        assert again.returncode == 0 and "already running" in again.stderr, again.stderr[-3000:]
        assert time.monotonic() - t0 < 60
        assert script("status").returncode == 0

        stop = script("stop", timeout=180)
        assert stop.returncode == 0, stop.stderr
        assert _jvms_of(state) == []
        status = script("status")
        assert status.returncode == 3 and "status: down" in status.stdout, status.stdout
    finally:
        script("clean", timeout=180)
    assert not state.exists()
    assert _jvms_of(state) == []
    print(f"private instance: start {took:.0f} s")
