"""GPU assignment on a Spark standalone cluster whose workers report FAKE GPUs (run as a subprocess).

    python -m tests.example_gpu_cluster RESULT.json [--workers 2]

Starts its own standalone cluster (a SparkContext is per process, and the test session's
``sc`` already exists) whose workers each run ``tests/resources/gpu_discovery.sh`` and own one
distinct fake GPU address, then two applications on it:

* ``spark``: with ``spark.executor.resource.gpu.amount=1`` and ``spark.task.resource.gpu.amount=1``
  (GPUs from Spark resource scheduling);
* ``nvidia_smi``: without them, the executors' PATH holding ``tests/resources/fake_nvidia_smi.sh``
  as ``nvidia-smi`` reporting as many idle GPUs as workers (GPUs from nvidia-smi plus host-local
  locks, all executors on one host), with ``num_gpus=1``.

For each it records, as JSON: ``barrier``, what ``assign_gpus`` picks in each task of a barrier
stage (like tfos start tasks), with ``too_many``, the error when asking for more than there is;
``nodes``, ``ctx.gpus`` and ``CUDA_VISIBLE_DEVICES`` seen by each TF node of ``tfos.run`` (only
meaningful once ``tfos/cluster/node.py`` calls ``assign_gpus``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
DISCOVERY = os.path.join(HERE, "resources", "gpu_discovery.sh")
FAKE_SMI = os.path.join(HERE, "resources", "fake_nvidia_smi.sh")


def record_gpus(args: dict, ctx: Any) -> None:
    """main_fun: write the node's ctx.gpus and CUDA_VISIBLE_DEVICES."""
    path = os.path.join(args["out"], f"{ctx.job_name}-{ctx.task_index}.json")
    with open(path, "w") as f:
        json.dump({"gpus": list(ctx.gpus), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                   "executor_id": ctx.executor_id}, f)


def _assign_in_task(index: int, _rows) -> list:
    """In a barrier task: what assign_gpus picks, holding the choice until every task has chosen."""
    from pyspark import BarrierTaskContext

    from tfos.cluster.gpus import GpuAssignmentError, assign_gpus, spark_task_resources

    resources = spark_task_resources()
    with assign_gpus(None, resources, worker_index=index) as gpu:
        picked = {"partition": index, "resources": resources, "devices": gpu.devices, "source": gpu.source,
                  "env": gpu.env()}
        BarrierTaskContext.get().barrier()  # nvidia-smi path: the others choose while this one holds its lock
    try:
        assign_gpus(2 if resources else 3, resources, wait_secs=0)
        picked["too_many"] = None
    except GpuAssignmentError as exc:
        picked["too_many"] = str(exc)
    return [picked]


def _phase(sc, workers: int, tf_args: dict) -> dict:
    import tfos
    from tests.example_gpu_cluster import record_gpus as main_fun  # by reference, not __main__

    rdd = sc.parallelize(range(workers), workers)
    result = {"barrier": rdd.barrier().mapPartitionsWithIndex(_assign_in_task).collect(), "nodes": {}}
    out = tempfile.mkdtemp(prefix="tfos-gpu-nodes-")
    tfos.run(sc, main_fun, dict(tf_args, out=out), workers, reservation_timeout=120).shutdown(timeout=120)
    for name in sorted(os.listdir(out)):
        with open(os.path.join(out, name)) as f:
            result["nodes"][name[:-5]] = json.load(f)
    return result


def _fake_nvidia_smi(gpus: int) -> dict[str, str]:
    """Executor environment with a fake nvidia-smi on PATH that reports ``gpus`` idle GPUs."""
    base = tempfile.mkdtemp(prefix="tfos-fake-smi-")
    bindir = os.path.join(base, "bin")
    os.makedirs(bindir)
    shutil.copy(FAKE_SMI, os.path.join(bindir, "nvidia-smi"))
    os.chmod(os.path.join(bindir, "nvidia-smi"), 0o755)
    with open(os.path.join(base, "gpus.csv"), "w") as f:
        f.writelines(f"{i}, GPU-fake-{i}, 1, 81559, 0\n" for i in range(gpus))
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "FAKE_NVIDIA_SMI_DIR": base,
            "TFOS_GPU_LOCK_DIR": os.path.join(base, "locks")}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("result")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)

    from tests.spark_standalone import StandaloneCluster, spark_conf

    claims = tempfile.mkdtemp(prefix="tfos-fake-gpus-")
    os.environ.update({
        "FAKE_GPU_CLAIM_DIR": claims,
        "FAKE_GPUS_PER_WORKER": "1",
        "SPARK_WORKER_OPTS": f"-Dspark.worker.resource.gpu.amount=1 "
                             f"-Dspark.worker.resource.gpu.discoveryScript={DISCOVERY}",
    })
    cluster = StandaloneCluster(workers=args.workers).start()
    result: dict = {}
    try:
        from pyspark import SparkConf, SparkContext

        base = spark_conf(cluster.master_url, args.workers)
        # 1. Spark GPU scheduling: one GPU per executor and task
        conf = SparkConf(loadDefaults=False).setAppName("tfos-gpu-spark").setAll(list(base.items()))
        conf.set("spark.executor.resource.gpu.amount", "1").set("spark.task.resource.gpu.amount", "1")
        sc = SparkContext(conf=conf)
        sc.setLogLevel("WARN")
        try:
            result["spark"] = _phase(sc, args.workers, {})
        finally:
            sc.stop()
        # 2. no Spark GPU scheduling: nvidia-smi (fake, 2 GPUs) and host-local locks
        conf = SparkConf(loadDefaults=False).setAppName("tfos-gpu-smi").setAll(list(base.items()))
        for key, value in _fake_nvidia_smi(args.workers).items():
            conf.set(f"spark.executorEnv.{key}", value)
        sc = SparkContext(conf=conf)
        sc.setLogLevel("WARN")
        try:
            result["nvidia_smi"] = _phase(sc, args.workers, {"num_gpus": 1})
        finally:
            sc.stop()
    finally:
        cluster.stop()
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
