"""GPU assignment: Spark task resources, nvidia-smi with host-local locks, CPU fallback.

nvidia-smi is replaced by ``tests/resources/fake_nvidia_smi.sh`` and Spark's GPU discovery by
``tests/resources/gpu_discovery.sh`` (fake addresses), so these run on machines without GPUs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from tfos.cluster import gpus
from tfos.cluster.gpus import GpuAssignmentError, assign_gpus, host_local_index, requested_gpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESOURCES = os.path.join(ROOT, "tests", "resources")


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    """A fake nvidia-smi; ``set(rows, apps)`` writes what it reports. Locks go under tmp_path."""
    smi = tmp_path / "nvidia-smi"
    shutil.copy(os.path.join(RESOURCES, "fake_nvidia_smi.sh"), smi)
    smi.chmod(0o755)
    monkeypatch.setenv("FAKE_NVIDIA_SMI_DIR", str(tmp_path))
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    class Fake:
        path = str(smi)

        @staticmethod
        def set(n_free: int, busy: dict[int, str] | None = None, apps: list[int] | None = None) -> None:
            rows = []
            for i in range(n_free + len(busy or {}) + len(apps or [])):
                used, util = ("70000", "3") if (busy or {}).get(i) == "memory" else ("1", "99") \
                    if (busy or {}).get(i) == "util" else ("1", "0")
                rows.append(f"{i}, GPU-fake-{i}, {used}, 81559, {util}")
            (tmp_path / "gpus.csv").write_text("\n".join(rows) + "\n")
            (tmp_path / "apps.csv").write_text("".join(f"GPU-fake-{i}, {4000 + i}\n" for i in apps or []))

    return Fake()


def test_no_nvidia_smi_means_cpu_with_a_log_line(caplog, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with caplog.at_level(logging.INFO, logger="tfos.cluster.gpus"):
        gpu = assign_gpus(None, None, nvidia_smi="/nonexistent/nvidia-smi")
    assert gpu.devices == [] and gpu.source == "cpu" and gpu.env() == {"CUDA_VISIBLE_DEVICES": ""}
    assert "running on CPU" in caplog.text and "no nvidia-smi" in caplog.text


def test_requesting_gpus_on_a_host_without_any_runs_on_cpu_with_a_warning(caplog, fake_smi):
    fake_smi.set(0)
    with caplog.at_level(logging.WARNING, logger="tfos.cluster.gpus"):
        gpu = assign_gpus(2, None, nvidia_smi=fake_smi.path)
    assert gpu.devices == []
    assert "asked for 2 GPU(s) but this host has none" in caplog.text


def test_nodes_on_one_host_get_distinct_gpus_and_locks_end_with_release(fake_smi):
    fake_smi.set(3)
    a = assign_gpus(1, None, worker_index=0, nvidia_smi=fake_smi.path)
    b = assign_gpus(1, None, worker_index=0, nvidia_smi=fake_smi.path)  # same preference: lock moves it on
    c = assign_gpus(1, None, worker_index=2, nvidia_smi=fake_smi.path)
    assert (a.devices, b.devices, c.devices) == (["0"], ["1"], ["2"])
    assert a.source == "nvidia-smi"
    assert a.env() == {"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    with pytest.raises(GpuAssignmentError, match=r"only 0 of 3 were free .*GPU 0: held by tfos node pid"):
        assign_gpus(1, None, nvidia_smi=fake_smi.path, wait_secs=0)
    b.release()
    with assign_gpus(1, None, nvidia_smi=fake_smi.path, wait_secs=0) as d:
        assert d.devices == ["1"]
    a.release()
    c.release()


def test_several_gpus_per_node(fake_smi):
    fake_smi.set(4)
    with assign_gpus(2, None, worker_index=0, nvidia_smi=fake_smi.path) as a, \
            assign_gpus(2, None, worker_index=1, nvidia_smi=fake_smi.path) as b:
        assert a.devices == ["0", "1"] and b.devices == ["2", "3"]
        assert a.env()["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_busy_gpus_are_skipped(fake_smi):
    fake_smi.set(1, busy={0: "memory", 1: "util"}, apps=[2])  # GPU 3 is the only free one
    with assign_gpus(1, None, nvidia_smi=fake_smi.path) as gpu:
        assert gpu.devices == ["3"]
    with pytest.raises(GpuAssignmentError) as err:
        assign_gpus(2, None, nvidia_smi=fake_smi.path, wait_secs=0)
    message = str(err.value)
    assert "only 1 of 4 were free" in message
    assert "GPU 0: 70000/81559 MiB in use" in message and "GPU 1: 99% utilised" in message
    assert "GPU 2: 1 compute process(es) running" in message


def test_a_node_waits_for_a_gpu_to_become_free(fake_smi):
    fake_smi.set(1)
    holder = assign_gpus(1, None, nvidia_smi=fake_smi.path)
    import threading

    threading.Timer(0.5, holder.release).start()
    begin = time.monotonic()
    with assign_gpus(1, None, nvidia_smi=fake_smi.path, wait_secs=20) as gpu:
        assert gpu.devices == ["0"]
    assert 0.4 < time.monotonic() - begin < 15


def test_more_gpus_than_the_host_has_fails_at_once(fake_smi):
    fake_smi.set(2)
    begin = time.monotonic()
    with pytest.raises(GpuAssignmentError, match=r"num_gpus=3 but this host has 2 GPU\(s\) \(0, 1\)"):
        assign_gpus(3, None, nvidia_smi=fake_smi.path, wait_secs=30)
    assert time.monotonic() - begin < 10


def test_executor_cuda_visible_devices_limits_the_candidates(fake_smi):
    fake_smi.set(4)
    with assign_gpus(None, None, nvidia_smi=fake_smi.path, cuda_visible_devices="GPU-fake-2,3") as gpu:
        assert gpu.devices == ["2"]
    assert assign_gpus(None, None, nvidia_smi=fake_smi.path, cuda_visible_devices="").devices == []
    with pytest.raises(GpuAssignmentError, match="this host has 1 GPU"):
        assign_gpus(2, None, nvidia_smi=fake_smi.path, cuda_visible_devices="1")


def test_parameter_servers_and_num_gpus_0_use_cpu(fake_smi):
    fake_smi.set(2)
    assert assign_gpus(1, {"gpu": ["0"]}, job_name="ps").devices == []
    assert assign_gpus(0, None, nvidia_smi=fake_smi.path).source == "cpu"
    with pytest.raises(GpuAssignmentError, match=">= 0"):
        assign_gpus(-1, None)


def test_spark_task_resources_win_over_nvidia_smi(fake_smi):
    fake_smi.set(2)

    class ResourceInformation:  # the shape of pyspark.resource.ResourceInformation
        addresses = ["3", "5"]

    assert assign_gpus(None, {"gpu": ResourceInformation()}).devices == ["3", "5"]
    one = assign_gpus(1, {"gpu": ["3", "5"]}, nvidia_smi=fake_smi.path)
    assert one.devices == ["3"] and one.source == "spark" and one.env() == {"CUDA_VISIBLE_DEVICES": "3"}
    assert one.lock_fds == ()  # Spark made them distinct: nothing to lock
    with pytest.raises(GpuAssignmentError, match=r"spark.task.resource.gpu.amount=3"):
        assign_gpus(3, {"gpu": ["3", "5"]})
    # a task without GPU resources falls back to nvidia-smi
    with assign_gpus(1, {"fpga": ["0"]}, nvidia_smi=fake_smi.path) as gpu:
        assert gpu.source == "nvidia-smi"


def test_the_tf_process_keeps_the_lock_after_the_node_releases_its_copy(fake_smi):
    fake_smi.set(1)
    gpu = assign_gpus(1, None, nvidia_smi=fake_smi.path)
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE,
                             pass_fds=gpu.lock_fds)
    gpu.release()
    try:
        with pytest.raises(GpuAssignmentError, match="held by tfos node"):
            assign_gpus(1, None, nvidia_smi=fake_smi.path, wait_secs=0)
    finally:
        child.communicate(b"")
    with assign_gpus(1, None, nvidia_smi=fake_smi.path, wait_secs=0) as again:  # lock ended with the child
        assert again.devices == ["0"]


def test_concurrent_processes_on_one_host_never_share_a_gpu(fake_smi, tmp_path):
    fake_smi.set(4)
    script = textwrap.dedent(f"""
        import sys, time
        from tfos.cluster.gpus import assign_gpus
        gpu = assign_gpus(1, None, worker_index=0, nvidia_smi={fake_smi.path!r}, wait_secs=20)
        print(",".join(gpu.devices), flush=True)
        sys.stdin.read()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    got = [p.stdout.readline().strip() for p in procs]
    for p in procs:
        p.communicate("")
    assert sorted(got) == ["0", "1", "2", "3"]


def test_requested_gpus_and_host_local_index():
    assert requested_gpus(argparse.Namespace(num_gpus=2)) == 2
    assert requested_gpus({"num_gpus": "1"}) == 1
    assert requested_gpus({"out": "x"}) is None and requested_gpus(argparse.Namespace()) is None
    with pytest.raises(GpuAssignmentError):
        requested_gpus({"num_gpus": "two"})
    nodes = [{"executor_id": 0, "hostname": "a"}, {"executor_id": 1, "hostname": "b"},
             {"executor_id": 2, "hostname": "a"}, {"executor_id": 3, "hostname": "a"}]
    assert [host_local_index(nodes, e) for e in range(4)] == [0, 0, 1, 2]


@pytest.mark.slow
def test_spark_gpu_scheduling_and_nvidia_smi_give_each_node_distinct_devices(tmp_path):
    """Own standalone cluster in a subprocess: workers report fake GPUs (discovery script), and a
    fake nvidia-smi on the executors' PATH for the application without Spark GPU scheduling."""
    result = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "tests.example_gpu_cluster", str(result), "--workers", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(result.read_text())
    for phase, source, too_many in (("spark", "spark", "spark.task.resource.gpu.amount=2"),
                                    ("nvidia_smi", "nvidia-smi", "num_gpus=3 but this host has 2 GPU(s)")):
        tasks = got[phase]["barrier"]
        assert len(tasks) == 2
        assert all(t["source"] == source and len(t["devices"]) == 1 for t in tasks), tasks
        assert sorted(t["devices"][0] for t in tasks) == ["0", "1"], tasks
        assert all(t["env"]["CUDA_VISIBLE_DEVICES"] == t["devices"][0] for t in tasks)
        assert all(too_many in t["too_many"] for t in tasks), tasks

    for phase in ("spark", "nvidia_smi"):
        nodes = got[phase]["nodes"]
        assert sorted(n["gpus"][0] for n in nodes.values()) == ["0", "1"], (phase, nodes)
        assert all(n["cuda_visible_devices"] == ",".join(n["gpus"]) for n in nodes.values()), (phase, nodes)


def test_gpu_locks_are_private_to_the_user(fake_smi, tmp_path, monkeypatch):
    monkeypatch.delenv(gpus.LOCK_DIR_ENV)
    assert gpus.default_lock_dir().endswith(f"tfos-gpu-locks-{os.getuid()}")
    lock_dir = tmp_path / "locks"
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(lock_dir))
    fake_smi.set(1)
    with assign_gpus(1, None, nvidia_smi=fake_smi.path) as gpu:
        assert gpu.devices == ["0"]
        assert stat.S_IMODE(os.stat(lock_dir).st_mode) == 0o700
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in lock_dir.iterdir())


def test_a_shared_lock_directory_is_refused(fake_smi, tmp_path):
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    lock_dir.chmod(0o1777)  # what tfos made before: any local user could plant files there
    fake_smi.set(1)
    with pytest.raises(gpus.GpuAssignmentError, match="not a private directory of this user"):
        assign_gpus(1, None, nvidia_smi=fake_smi.path)


def test_a_planted_symlink_is_not_followed(fake_smi, tmp_path):
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (lock_dir / "gpu-GPU-fake-0.lock").symlink_to(victim)
    fake_smi.set(1)
    with pytest.raises(OSError):
        assign_gpus(1, None, nvidia_smi=fake_smi.path, wait_secs=0)
    assert victim.read_text() == "precious\n"
