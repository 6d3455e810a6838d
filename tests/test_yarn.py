"""tfos on a real YARN (scripts/hadoop.sh: ResourceManager with CPU_Q / GPU_Q and node labels, two
NodeManagers, HDFS), submitted with spark-submit in cluster and client deploy mode, as users do.

Every application is checked for its final status and, through the aggregated logs, for what its
driver and nodes printed; after each, no process of its executors may be left on the machine.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.hdfs_fixture import run_script
from tests.process_check import wait_until_none_owned_by
from tfos.packaging import build_zip, pack_env

# A YARN application takes one to several minutes on a 2-core machine; the archive test also packs the venv.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[1]
JOB = str(REPO / "tests" / "yarn_jobs" / "tfos_job.py")
MNIST = REPO / "examples" / "mnist"
DISCOVERY = str(REPO / "tests" / "resources" / "gpu_discovery.sh")
# What a tfos executor needs on YARN: one core, and memory beside the JVM's heap for its TF process
# (the TF launcher and the TF process it forks count against the container).
EXECUTOR = ["--executor-cores", "1", "--executor-memory", "512m", "--conf", "spark.executor.memoryOverhead=1536m",
            "--conf", "spark.dynamicAllocation.enabled=false", "--conf", "spark.driver.memoryOverhead=768m"]


def records(text: str, tag: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(rf"^.*?{tag} (\{{.*\}})\s*$", text, re.M)]


@pytest.fixture(scope="session")
def tfos_zip(tmp_path_factory) -> str:
    return str(build_zip(tmp_path_factory.mktemp("zip") / "tfos.zip"))


# InputMode.SPARK executors also run the feed tasks' Python workers beside the TF process: with 1536m their
# 2 GB containers were killed by YARN's physical-memory check ("2.0 GB of 2 GB physical memory used").
SPARK_MODE_MEMORY = ("--conf", "spark.executor.memoryOverhead=2560m")


def submit(yarn, *args: str, queue: str = "CPU_Q", deploy: str = "cluster", executors: int = 2,
           py_files: str | None = None, options: tuple[str, ...] = (), timeout: float = 600, **kw):
    """spark-submit ARGS (the script and its arguments) with tfos's executor settings and ``options``."""
    cmd = ["--deploy-mode", deploy, "--queue", queue, "--num-executors", str(executors), *EXECUTOR, *options]
    if py_files:
        cmd += ["--py-files", py_files]
    return yarn.spark_submit([*cmd, *args], timeout=timeout, **kw)


def assert_no_leftovers(*node_records: dict) -> None:
    owners = {r["owner"] for r in node_records if r.get("owner")}
    assert owners, "the nodes recorded no executor pid"
    left = wait_until_none_owned_by(owners, timeout=60)
    assert not left, f"processes of the application's executors still running: {left}"


def test_main_that_raises_fails_the_application_with_its_traceback(yarn_cluster, tfos_zip):
    result = submit(yarn_cluster, JOB, "raise", py_files=tfos_zip)
    assert result.returncode != 0, result.output
    app = yarn_cluster.wait_for_app(result.app_id)
    assert app["finalStatus"] == "FAILED", app
    logs = yarn_cluster.logs(result.app_id)
    detected = records(logs, "TFOS_DETECTED")
    assert detected and detected[0]["type"] == "NodeFailure" and detected[0]["node"] == "worker:1"
    assert "ValueError: tfos-yarn-test: bad input in shard 1" in logs  # the node's traceback, in the driver's log
    assert "tfos.cluster.cluster.NodeFailure" in logs or "NodeFailure: TF node worker:1" in logs
    placed = yarn_cluster.app_containers(result.app_id)
    assert placed and {p.node_label for p in placed} == {"CPU"}, placed
    assert_no_leftovers(*records(logs, "TFOS_NODE_RECORD"))


def _kill_while_running(yarn, tmp_path, tfos_zip, mode: str, victim_pid_key: str, kill: bool = True,
                        extra: tuple[str, ...] = ()):
    """Submit a sleeping (or memory-hungry) job, wait for its nodes, kill worker:1's ``victim_pid_key``."""
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(submit, yarn, JOB, mode, "--pid_dir", str(pid_dir), "--max_wait", "240", *extra,
                             py_files=tfos_zip)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not future.done():
            if all((pid_dir / f"worker-{i}.json").exists() for i in (0, 1)):
                break
            time.sleep(0.5)
        else:
            result = future.result() if future.done() else None
            pytest.fail(f"the nodes never wrote their pids to {pid_dir}\n{result.output if result else ''}")
        nodes = {i: json.loads((pid_dir / f"worker-{i}.json").read_text()) for i in (0, 1)}
        killed_at = time.time()
        if kill:
            os.kill(nodes[1][victim_pid_key], signal.SIGKILL)
        result = future.result()
    return result, nodes, killed_at


def _detected(yarn, result) -> tuple[dict, str]:
    assert result.returncode != 0, result.output
    app = yarn.wait_for_app(result.app_id)
    assert app["finalStatus"] == "FAILED", app
    logs = yarn.logs(result.app_id)
    found = records(logs, "TFOS_DETECTED")
    assert found, f"the driver printed no TFOS_DETECTED line\n{logs[-5000:]}"
    return found[0], logs


def test_kill_of_a_tf_process_is_a_node_failure_within_30s(yarn_cluster, tmp_path, tfos_zip):
    result, nodes, killed_at = _kill_while_running(yarn_cluster, tmp_path, tfos_zip, "sleep", "pid")
    detected, _ = _detected(yarn_cluster, result)
    assert detected["type"] == "NodeFailure" and detected["node"] == "worker:1", detected
    assert "killed by signal 9" in detected["message"]
    assert detected["time"] - killed_at < 30, f"detected {detected['time'] - killed_at:.1f}s after the kill"
    assert_no_leftovers(*nodes.values())


def test_kill_of_a_container_is_a_node_failure_naming_yarns_reason(yarn_cluster, tmp_path, tfos_zip):
    result, nodes, killed_at = _kill_while_running(yarn_cluster, tmp_path, tfos_zip, "sleep", "owner")
    detected, _ = _detected(yarn_cluster, result)
    assert detected["type"] == "NodeFailure" and detected["node"] == "worker:1", detected
    assert "was lost" in detected["message"] and nodes[1]["container"] in detected["message"], detected
    assert "Exit status: 137" in detected["message"] or "exited" in detected["message"], detected
    assert detected["time"] - killed_at < 30, f"detected {detected['time'] - killed_at:.1f}s after the kill"
    assert_no_leftovers(*nodes.values())


def test_a_killed_container_with_a_restart_left_restarts_the_cluster_and_the_application_succeeds(
        yarn_cluster, tmp_path, tfos_zip):
    """max_restarts=1: YARN replaces the lost executor's container and tfos starts the next generation on it."""
    result, nodes, killed_at = _kill_while_running(yarn_cluster, tmp_path, tfos_zip, "restart", "owner",
                                                   extra=("--max_restarts", "1"))
    assert result.returncode == 0, result.output[-8000:]
    app = yarn_cluster.wait_for_app(result.app_id)
    assert app["finalStatus"] == "SUCCEEDED", app
    logs = yarn_cluster.logs(result.app_id)
    assert "running -> restarting" in logs and "restarting -> starting" in logs, logs[-8000:]
    restarted = records(logs, "TFOS_RESTARTED")
    # each line is in the executor's log and, relayed, in the driver's
    assert sorted({r["node"] for r in restarted}) == ["worker:0", "worker:1"], restarted
    assert nodes[1]["container"] not in {r["container"] for r in restarted}  # the killed container is gone
    assert min(r["time"] for r in restarted) - killed_at < 180
    assert "TFOS_JOB_DONE mode=restart" in logs
    print(f"\nYARN restart: {result.app_id}, killed container {nodes[1]['container']}; generation 1 ran "
          f"{min(r['time'] for r in restarted) - killed_at:.1f}s after the kill")
    assert_no_leftovers(*records(logs, "TFOS_NODE_RECORD"))  # both generations' executors


def test_a_memory_kill_is_a_node_failure_naming_the_node_and_the_setting(yarn_cluster, tmp_path, tfos_zip):
    """worker:1 allocates past its 2 GB container; YARN's physical-memory check kills the container."""
    result, nodes, began = _kill_while_running(yarn_cluster, tmp_path, tfos_zip, "hog", "pid", kill=False)
    detected, logs = _detected(yarn_cluster, result)
    assert detected["type"] == "NodeFailure" and detected["node"] == "worker:1", detected
    assert nodes[1]["container"] in detected["message"], detected
    assert "physical memory" in detected["message"], detected  # YARN's diagnostic
    assert "spark.executor.memoryOverhead" in detected["message"], detected  # the setting to raise
    assert detected["time"] - began < 30, f"detected {detected['time'] - began:.1f}s after the allocation began"
    assert_no_leftovers(*nodes.values())


@pytest.fixture(scope="module")
def env_archive(tmp_path_factory) -> str:
    """This venv packed with ``tfos pack-env`` (tfos itself left out: it travels as --py-files)."""
    return str(pack_env(tmp_path_factory.mktemp("env") / "env.tar.gz", compress_level=0))  # stored: faster to pack and unpack


def test_run_from_the_shipped_environment_archive_and_tfos_zip(yarn_cluster, tfos_zip, env_archive):
    python = "./env/bin/python"
    result = submit(yarn_cluster, JOB, "record", py_files=tfos_zip, timeout=900,
                    options=("--archives", f"{env_archive}#env"),
                    conf={"spark.yarn.appMasterEnv.PYSPARK_PYTHON": python, "spark.executorEnv.PYSPARK_PYTHON": python})
    assert result.returncode == 0, result.output
    app = yarn_cluster.wait_for_app(result.app_id)
    assert app["finalStatus"] == "SUCCEEDED", app
    logs = yarn_cluster.logs(result.app_id)
    nodes = records(logs, "TFOS_NODE_RECORD")
    assert {n["node"] for n in nodes} == {"worker:0", "worker:1"}
    for node in nodes:
        assert node["prefix"].endswith("/env") and "appcache" in node["prefix"], node  # unpacked by YARN
        assert "/tfos.zip/" in node["tfos"], node  # tfos from --py-files, not from a venv
    assert "TFOS_JOB_DONE mode=record" in logs
    assert_no_leftovers(*nodes)


# ------------------------------------------------------------------ the MNIST examples on YARN
@pytest.fixture(scope="module")
def mnist_on_hdfs(yarn_cluster, tfos_zip, tmp_path_factory) -> str:
    """README's data set-up line on YARN (cluster mode, CPU_Q): TFRecords in hdfs:///user/$USER/mnist/tfr.

    The raw IDX files travel as an archive unpacked next to the script (``#data``), where
    ``mnist_data_setup.py`` looks by default.
    """
    import tarfile

    archive = tmp_path_factory.mktemp("mnist") / "mnist_data.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted((MNIST / "data").glob("*-ubyte.gz")):
            tar.add(path, arcname=path.name)
    result = submit(yarn_cluster, str(MNIST / "mnist_data_setup.py"), "--output", "mnist/tfr", "--format", "tfr",
                    executors=3, py_files=tfos_zip, options=("--archives", f"{archive}#data"))
    assert result.returncode == 0, result.output
    assert yarn_cluster.wait_for_app(result.app_id)["finalStatus"] == "SUCCEEDED"
    return f"hdfs:///user/{os.environ.get('USER') or 'root'}/mnist/tfr"


def test_mnist_tensorflow_mode_cluster_deploy_on_cpu_q(yarn_cluster, tfos_zip, mnist_on_hdfs, tmp_path):
    """README's YARN line: TFRecords and checkpoints on HDFS, no test-set flag, driver in the ApplicationMaster."""
    begin = time.time()
    result = submit(yarn_cluster, str(MNIST / "mnist_tf.py"), "--images", f"{mnist_on_hdfs}/train", "--format", "tfr",
                    "--mode", "train", "--model", f"mnist_model_{tmp_path.name}_{int(begin)}", "--steps", "200",
                    "--export_dir", f"mnist_export_{tmp_path.name}_{int(begin)}", executors=2, py_files=tfos_zip,
                    timeout=900)  # fresh HDFS directories: a model left by an earlier run would resume at step 200
    assert result.returncode == 0, result.output
    app = yarn_cluster.wait_for_app(result.app_id)
    assert app["finalStatus"] == "SUCCEEDED", app
    logs = yarn_cluster.logs(result.app_id)
    accuracy = re.findall(r"test accuracy: ([0-9.]+)", logs)
    assert accuracy and float(accuracy[-1]) > 0.8, logs[-5000:]
    placed = yarn_cluster.app_containers(result.app_id)
    assert {p.node_label for p in placed} == {"CPU"}, placed
    (tmp_path / "spark-submit.log").write_text(result.stdout + result.stderr)  # for benchmarks/yarn_phases.py
    print(f"\nMNIST TENSORFLOW mode on YARN (cluster mode, CPU_Q): {result.app_id}, submit log "
          f"{tmp_path / 'spark-submit.log'}: spark-submit to exit {result.elapsed_s:.1f}s, "
          f"app {app['elapsedTime'] / 1000:.1f}s in YARN, test accuracy {accuracy[-1]}, "
          f"started {time.strftime('%H:%M:%S', time.localtime(begin))}")


def test_mnist_spark_mode_on_gpu_q_with_fake_gpus(yarn_cluster, tfos_zip, mnist_on_hdfs, tmp_path):
    """Executors land on the GPU-labelled NodeManager; each TF node gets the distinct GPU YARN and Spark gave it."""
    claims = tmp_path / "gpu-claims"
    result = submit(
        yarn_cluster, str(MNIST / "mnist_spark.py"), "--cluster_size", "2", "--images_labels",
        f"{mnist_on_hdfs}/train", "--format", "tfr", "--epochs", "1", "--model_dir", str(tmp_path / "model"),
        "--export_dir", str(tmp_path / "export"), queue="GPU_Q", deploy="client", executors=2, py_files=tfos_zip,
        timeout=900, options=SPARK_MODE_MEMORY,
        conf={"spark.executor.resource.gpu.amount": "1", "spark.task.resource.gpu.amount": "1",
              "spark.executor.resource.gpu.discoveryScript": DISCOVERY,
              "spark.executorEnv.FAKE_GPU_CLAIM_DIR": str(claims)})
    assert result.returncode == 0, result.output
    app = yarn_cluster.wait_for_app(result.app_id)
    assert app["finalStatus"] == "SUCCEEDED", app
    placed = yarn_cluster.app_containers(result.app_id)
    assert len(placed) >= 3 and {p.node_label for p in placed} == {"GPU"}, placed  # AM + 2 executors
    logs = yarn_cluster.logs(result.app_id)
    # each TF process logs what it sees (executor stderr, aggregated; relayed to the driver's console too)
    seen = re.findall(r"\[((?:chief|worker):\d+)\].*TF process sees GPU\(s\) (\S+) \(CUDA_VISIBLE_DEVICES=(\S+)\)", logs)
    gpus = {node: (ctx_gpus, visible) for node, ctx_gpus, visible in seen}
    assert len(gpus) == 2, gpus
    assert all(ctx_gpus == visible and ctx_gpus != "none" for ctx_gpus, visible in gpus.values()), gpus
    assert len({v for v, _ in gpus.values()}) == 2, f"two TF nodes were given the same GPU: {gpus}"
    assert re.search(r"test accuracy: 0\.[89]", result.stdout + result.stderr), result.output[-5000:]


# ------------------------------------------------------------------ the CIFAR-10 and Criteo examples on YARN
CIFAR = REPO / "examples" / "cifar10"
CRITEO = REPO / "examples" / "criteo"
FAKE_GPU = {"spark.executor.resource.gpu.amount": "1", "spark.task.resource.gpu.amount": "1",
            "spark.executor.resource.gpu.discoveryScript": DISCOVERY}


def _hdfs_home() -> str:
    return f"hdfs:///user/{os.environ.get('USER') or 'root'}"


@pytest.fixture(scope="module")
def cifar10_on_hdfs(yarn_cluster, tfos_zip) -> str:
    """README's data set-up line on YARN (client mode, CPU_Q): the shipped sample's binary batches, read on
    the submitting host, become TFRecords in hdfs:///user/$USER/cifar10_data/{train,test}."""
    result = submit(yarn_cluster, str(CIFAR / "cifar10_data_setup.py"), "--output", "cifar10_data",
                    "--num_partitions", "2", deploy="client", executors=2,
                    py_files=f"{tfos_zip},{CIFAR / 'cifar10_model.py'}")
    assert result.returncode == 0, result.output[-8000:]
    assert "wrote 820 train records" in result.stdout and "wrote 164 test records" in result.stdout, result.output
    assert yarn_cluster.wait_for_app(result.app_id)["finalStatus"] == "SUCCEEDED"
    print(f"\nCIFAR-10 data set-up on YARN (client mode, CPU_Q): {result.elapsed_s:.1f}s")
    return "cifar10_data"


@pytest.fixture(scope="module")
def cifar10_trained(yarn_cluster, tfos_zip, cifar10_on_hdfs, tmp_path_factory) -> str:
    """README's GPU_Q training line (cluster mode, fake GPUs: TF itself runs on CPU), a few steps."""
    train_dir = f"cifar10_train_{int(time.time())}"  # fresh: a checkpoint left by an earlier run would resume
    claims = tmp_path_factory.mktemp("cifar-gpu-claims")
    result = submit(yarn_cluster, str(CIFAR / "cifar10_train.py"), "--data_dir", cifar10_on_hdfs,
                    "--train_dir", train_dir, "--max_steps", "4", "--save_steps", "2", "--batch_size", "16",
                    "--num_gpus", "1", queue="GPU_Q", executors=2, py_files=f"{tfos_zip},{CIFAR / 'cifar10_model.py'}",
                    timeout=900, conf={**FAKE_GPU, "spark.executorEnv.FAKE_GPU_CLAIM_DIR": str(claims)})
    assert result.returncode == 0, result.output[-8000:]
    app = yarn_cluster.wait_for_app(result.app_id)
    assert app["finalStatus"] == "SUCCEEDED", app
    logs = yarn_cluster.logs(result.app_id)
    assert re.search(r"trained 4 steps on 2 node\(s\) in [0-9.]+s; checkpoints in " + train_dir, logs), logs[-8000:]
    placed = yarn_cluster.app_containers(result.app_id)
    assert len(placed) >= 3 and {p.node_label for p in placed} == {"GPU"}, placed  # AM + 2 executors
    print(f"\nCIFAR-10 training on YARN (cluster mode, GPU_Q): {result.app_id}, spark-submit {result.elapsed_s:.1f}s, "
          f"app {app['elapsedTime'] / 1000:.1f}s in YARN")
    return train_dir


def test_cifar10_data_setup_on_cpu_q(yarn_cluster, cifar10_on_hdfs):
    """README's data set-up line (the fixture) wrote both splits to HDFS."""
    listing = run_script("fs", "-ls", f"{_hdfs_home()}/{cifar10_on_hdfs}/train", timeout=120)
    assert listing.returncode == 0 and "part-" in listing.stdout, listing.stdout + listing.stderr


def test_cifar10_train_on_gpu_q_then_eval_on_cpu_q(yarn_cluster, tfos_zip, cifar10_on_hdfs, cifar10_trained):
    """README's evaluation line (cluster mode, CPU_Q): the driver evaluates the GPU_Q run's checkpoint on HDFS."""
    eval_dir = f"cifar10_eval_{int(time.time())}"
    result = submit(yarn_cluster, str(CIFAR / "cifar10_eval.py"), "--data_dir", cifar10_on_hdfs,
                    "--checkpoint_dir", cifar10_trained, "--eval_dir", eval_dir, "--run_once", executors=1,
                    py_files=f"{tfos_zip},{CIFAR / 'cifar10_model.py'}",
                    options=("--conf", "spark.driver.memoryOverhead=1536m"))
    assert result.returncode == 0, result.output[-8000:]
    app = yarn_cluster.wait_for_app(result.app_id)
    assert app["finalStatus"] == "SUCCEEDED", app
    logs = yarn_cluster.logs(result.app_id)
    precision = re.findall(r"^precision @ 1: ([0-9.]+)$", logs, re.M)
    assert precision and 0.0 <= float(precision[-1]) <= 1.0, logs[-8000:]
    assert {p.node_label for p in yarn_cluster.app_containers(result.app_id)} == {"CPU"}
    print(f"\nCIFAR-10 evaluation on YARN (cluster mode, CPU_Q): {result.app_id}, spark-submit "
          f"{result.elapsed_s:.1f}s, precision @ 1: {precision[-1]}")


@pytest.fixture(scope="module")
def criteo_on_hdfs(yarn_cluster) -> str:
    """The shipped Criteo samples in hdfs:///user/$USER/criteo: train.tsv and validation/ (two files)."""
    home = _hdfs_home()
    for args in (("-mkdir", "-p", f"{home}/criteo/validation"),
                 ("-put", "-f", str(CRITEO / "data" / "train_head1000.tsv"), f"{home}/criteo/train.tsv"),
                 ("-put", "-f", str(CRITEO / "data" / "sample_a.tsv"), str(CRITEO / "data" / "sample_b.tsv"),
                  f"{home}/criteo/validation/")):
        proc = run_script("fs", *args, timeout=120)
        assert proc.returncode == 0, f"hadoop.sh fs {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return "criteo"


def test_criteo_train_with_a_parameter_server_on_cpu_q(yarn_cluster, tfos_zip, criteo_on_hdfs):
    """README's Criteo line (cluster mode, CPU_Q, InputMode.SPARK): 1 ps + 2 workers on 3 executors."""
    model = f"criteo_model_{int(time.time())}"
    result = submit(yarn_cluster, str(CRITEO / "criteo_spark.py"), "--mode", "train", "--input_mode", "spark",
                    "--data", f"{criteo_on_hdfs}/train.tsv", "--validation", f"{criteo_on_hdfs}/validation",
                    "--model", model, "--steps", "60", "--validation_every", "30", "--cluster_size", "3",
                    executors=3, py_files=f"{tfos_zip},{CRITEO / 'criteo_data.py'},{CRITEO / 'criteo_model.py'}",
                    timeout=900)
    assert result.returncode == 0, result.output[-8000:]
    app = yarn_cluster.wait_for_app(result.app_id)
    assert app["finalStatus"] == "SUCCEEDED", app
    logs = yarn_cluster.logs(result.app_id)
    loss = re.findall(r"^validation loss: ([0-9.]+)$", logs, re.M)
    assert loss and float(loss[-1]) < 0.6699, logs[-8000:]  # beats the base rate
    assert re.search(r"\[ps:0\]", logs), "no line from the parameter server in the logs"
    assert {p.node_label for p in yarn_cluster.app_containers(result.app_id)} == {"CPU"}
    print(f"\nCriteo training on YARN (cluster mode, CPU_Q, 1 ps + 2 workers): {result.app_id}, spark-submit "
          f"{result.elapsed_s:.1f}s, app {app['elapsedTime'] / 1000:.1f}s in YARN, validation loss {loss[-1]}")


# ------------------------------------------------------------------ bad input
def test_a_full_queue_is_explained_while_the_driver_waits_for_executors(yarn_cluster, tmp_path, tfos_zip):
    """Another application holds CPU_Q's node (ApplicationMaster + 2 executors: 3 of its 4 vcores); a second one
    gets its ApplicationMaster but no executors. Its driver says every 10 s what it waits for, and fails after
    60 s with YARN's view of the queue (its use of the CPU partition, what the application asked for)."""
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        holder = pool.submit(submit, yarn_cluster, JOB, "sleep", "--pid_dir", str(pid_dir), "--max_wait", "200",
                             py_files=tfos_zip)
        deadline = time.monotonic() + 300
        while not all((pid_dir / f"worker-{i}.json").exists() for i in (0, 1)):
            assert time.monotonic() < deadline and not holder.done(), "the application holding the queue never started"
            time.sleep(0.5)
        try:
            waiting = submit(yarn_cluster, JOB, "record", deploy="client", py_files=tfos_zip, timeout=300)
        finally:
            held = json.loads((pid_dir / "worker-0.json").read_text())["container"]
            app = "application_" + "_".join(held.split("_")[1:3])
            run_script("yarn", "application", "-kill", app, timeout=120)
            holder.result()
    out = waiting.stdout + waiting.stderr
    assert waiting.returncode != 0, out[-5000:]
    assert "ClusterConfigError" in out and "only 0 joined" in out, out[-5000:]
    assert re.search(r"queue 'CPU_Q' uses [0-9.]+% of node label 'CPU' \(capacity 100\.0%, maximum 100\.0%\)", out), \
        out[-5000:]
    assert re.search(r"this application asked for \d+ MB, \d+ vcore\(s\) more than it was given", out), out[-5000:]
    stamps = [time.mktime(time.strptime(t, "%Y-%m-%d %H:%M:%S"))
              for t in re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ INFO tfos\.cluster\.validation: waiting up to",
                                  out, re.M)]
    assert len(stamps) >= 4, out[-5000:]
    assert max(b - a for a, b in itertools.pairwise(stamps)) <= 15, stamps


def test_unknown_queue_fails_fast_naming_it(yarn_cluster, tfos_zip):
    result = submit(yarn_cluster, JOB, "record", queue="NO_SUCH_Q", deploy="client", py_files=tfos_zip, timeout=180)
    assert result.returncode != 0
    assert "NO_SUCH_Q" in result.stderr + result.stdout
    assert result.elapsed_s < 120


def test_missing_archive_fails_fast_naming_the_path(yarn_cluster, tfos_zip):
    result = submit(yarn_cluster, JOB, "record", deploy="client", py_files=tfos_zip, timeout=180,
                    options=("--archives", "/nonexistent/tfos-env.tar.gz#env"))
    assert result.returncode != 0
    assert "/nonexistent/tfos-env.tar.gz" in result.stderr + result.stdout
    assert result.elapsed_s < 120


def test_hadoop_conf_dir_unset_says_so(yarn_cluster):
    import subprocess

    env = {k: v for k, v in yarn_cluster.env.items() if k not in ("HADOOP_CONF_DIR", "YARN_CONF_DIR")}
    proc = subprocess.run([f"{yarn_cluster.spark_home}/bin/spark-submit", "--master", "yarn", JOB, "record"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "HADOOP_CONF_DIR" in proc.stderr + proc.stdout


def test_label_the_queue_cannot_use_is_refused(yarn_cluster, tfos_zip):
    result = submit(yarn_cluster, JOB, "record", deploy="client", py_files=tfos_zip, timeout=300,
                    conf={"spark.yarn.executor.nodeLabelExpression": "GPU"})
    out = result.stderr + result.stdout
    assert result.returncode != 0
    assert "GPU" in out and "CPU_Q" in out, out[-5000:]
    assert result.elapsed_s < 240


def test_more_executors_than_the_queue_can_hold_fails_at_once(yarn_cluster, tfos_zip):
    result = submit(yarn_cluster, JOB, "record", "--nodes", "5", deploy="client", executors=5, py_files=tfos_zip,
                    timeout=300)
    out = result.stderr + result.stdout
    assert result.returncode != 0
    assert "ClusterConfigError" in out and "queue 'CPU_Q' can never run more than 3" in out, out[-5000:]
    assert result.elapsed_s < 180


def test_more_gpus_than_the_queue_has_fails_at_once(yarn_cluster, tfos_zip, tmp_path):
    result = submit(yarn_cluster, JOB, "record", queue="GPU_Q", deploy="client", py_files=tfos_zip, timeout=300,
                    conf={"spark.executor.resource.gpu.amount": "3", "spark.task.resource.gpu.amount": "3",
                          "spark.executor.resource.gpu.discoveryScript": DISCOVERY,
                          "spark.executorEnv.FAKE_GPU_CLAIM_DIR": str(tmp_path / "claims"),
                          "spark.executorEnv.FAKE_GPUS_PER_WORKER": "3"})
    out = result.stderr + result.stdout
    assert result.returncode != 0
    assert "can never run more than 1" in out and "3 GPU(s)" in out, out[-5000:]


# ------------------------------------------------------------------ tfos doctor on YARN
def test_doctor_reports_queues_labels_and_checks_inside_containers(yarn_cluster):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "tfos.cli", "doctor", "--master", "yarn", "--queue", "CPU_Q", "--executors", "2",
           "--hdfs", yarn_cluster.hdfs_url, "--conf", "spark.executor.memory=512m",
           "--conf", "spark.executor.memoryOverhead=1536m", "--conf", "spark.executor.instances=2",
           "--conf", f"spark.yarn.jars=local:{yarn_cluster.spark_home}/jars/*"]
    proc = subprocess.run(cmd, env=yarn_cluster.env, capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    assert re.search(r"YARN: ResourceManager http://\S+ \(Hadoop 3\.\S+\) reachable", out), out
    assert re.search(r"queue CPU_Q: RUNNING, capacity 50\.0% \(max 100\.0%\), labels CPU, default label CPU <- --queue",
                     out), out
    assert re.search(r"queue GPU_Q: RUNNING, .* labels GPU, default label GPU", out), out
    assert re.search(r"nodes GPU: 1 node\(s\), .* \d+ yarn.io/gpu", out), out
    containers = re.findall(r"executor task \d \(\S+, container (container_\S+),", out)
    assert len(containers) == 2, out  # the executor checks ran inside YARN containers
    assert "is reachable from the driver and 2 executor task(s)" in out, out


def test_doctor_names_an_unreachable_resource_manager(yarn_cluster, tmp_path):
    import subprocess
    import sys

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "yarn-site.xml").write_text(
        "<configuration><property><name>yarn.resourcemanager.webapp.address</name>"
        "<value>127.0.0.1:1</value></property></configuration>")
    env = dict(yarn_cluster.env, HADOOP_CONF_DIR=str(conf))
    proc = subprocess.run([sys.executable, "-m", "tfos.cli", "doctor", "--executors", "0"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "YARN: ResourceManager UNREACHABLE at http://127.0.0.1:1" in proc.stdout, proc.stdout


def test_doctor_says_the_user_may_submit_to_each_queue(yarn_cluster):
    """The real ResourceManager answers the submit-ACL check (scripts/hadoop.sh: ACLs open to all, not enforced)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "tfos.cli", "doctor", "--executors", "0", "--queue", "GPU_Q"],
                          env=yarn_cluster.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    for queue in ("CPU_Q", "GPU_Q"):
        assert re.search(rf"queue {queue}: RUNNING.*\n    submit as \S+: allowed \(ResourceManager, submit ACL '\*'\)",
                         proc.stdout), proc.stdout
