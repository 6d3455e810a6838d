"""What a fault costs with ``max_restarts=1``: detection, recovery, wall time lost.

On a real Spark standalone cluster (3 single-core workers on 127.0.0.1), in the same run, each
case once unfaulted and once faulted:

- ``tf-process``: InputMode.TENSORFLOW, real MNIST under MultiWorkerMirroredStrategy on 2
  workers, a checkpoint per epoch (``tests/chaos_mains.py``); worker:1's TF process SIGKILLed
  right after the first checkpoint;
- ``executor``: the same job; worker:1's whole executor JVM SIGKILLed after the first checkpoint
  (Spark's standalone worker starts a new executor);
- ``start``: the same job, 2 epochs; in the faulted run worker:1's start task is held back 10 s
  before it registers and worker:0's start task is SIGKILLed while it waits for it (2 s after
  worker:1's start task began), so the wall time lost includes those 2 s;
- ``export``: the same job, 2 epochs, then a SavedModel export; the chief (worker:0) SIGKILLed
  as it starts exporting;
- ``spark``: InputMode.SPARK, 12,000 real MNIST rows fed for 2 epochs to 3 workers; worker:1's TF
  process killed after it consumed 500 rows.

For each faulted run: kill -> the driver's detection, kill -> the first main of the next
generation running and -> its first training step (or fed batch; an export-only generation
trains no step), and the wall time lost against the unfaulted run.

    .venv/bin/python benchmarks/chaos.py [--cases tf-process,executor,start,export,spark]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests import chaos_mains  # noqa: E402
from tests.cluster_mains import load_mnist  # noqa: E402
from tests.spark_standalone import StandaloneCluster, session_on  # noqa: E402

DETECTION_GOAL_SECS = 10.0


def wait_for(path: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        time.sleep(0.02)


def pid_of(out: Path, node: str, timeout: float = 300.0) -> int:
    wait_for(out / f"pid-{node}-gen0", timeout)
    return int((out / f"pid-{node}-gen0").read_text())


def executor_jvm_of(tf_pid: int) -> int:
    from tfos.cluster import lifetime

    with open(f"/proc/{tf_pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return int(env[lifetime.OWNER_ENV.encode()])


def killer(target, box: dict) -> threading.Thread:
    """In the background: ``target()`` waits for its moment and returns the pid to SIGKILL."""
    def kill() -> None:
        pid = target()
        os.kill(pid, signal.SIGKILL)
        box["killed_wall"], box["killed"] = time.time(), time.monotonic()

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def first_of_gen1(out: Path, what: str) -> float | None:
    marks = [float(p.read_text()) for p in out.glob(f"{what}-*-gen1")]
    return min(marks) if marks else None


def outcome(cluster, begin: float, thread: threading.Thread | None, box: dict, out: Path, first: str) -> dict:
    """Wall time and restarts of a run; for a faulted one also kill -> detection, -> generation 1's
    mains running (their pid files) and -> its first ``first`` mark."""
    result = {"wall": time.monotonic() - begin, "restarts": cluster.restart_count}
    if thread is not None:
        thread.join(5)
        result["detect"] = cluster.restarts[0]["detected_at"] - box["killed"]
        mains = [p.stat().st_mtime for p in out.glob("pid-*-gen1")]
        result["gen1_main"] = min(mains) - box["killed_wall"] if mains else None
        step = first_of_gen1(out, first)
        result["first_step"] = step - box["killed_wall"] if step is not None else None
    return result


def tensorflow_run(sc, case: str, fault: bool) -> dict:
    """One InputMode.TENSORFLOW MNIST job of ``case`` (see the module doc), faulted or not."""
    import tfos
    from tfos.cluster import cluster as cluster_module

    work = Path(tempfile.mkdtemp(prefix="tfos-chaos-"))
    out = work / "out"
    out.mkdir()
    args = {"out": str(out), "model_dir": str(work / "model"), "epochs": 6, "steps_per_epoch": 60}
    if case in ("start", "export"):
        args["epochs"] = 2
    if case == "export":
        args["export_dir"] = str(work / "export")
    box: dict = {}
    thread = None
    saved = cluster_module.SparkLauncher
    if case == "start" and fault:
        from tests.chaos_hooks import DelayedStartLauncher

        cluster_module.SparkLauncher = lambda context: DelayedStartLauncher(context, str(out), {1: 10.0})

        def start_task_of_worker_0() -> int:
            wait_for(out / "start-task-1-gen0")
            time.sleep(2)  # worker:0 registered and waits for worker:1
            return int((out / "start-task-0-gen0").read_text())

        target = start_task_of_worker_0
    elif case == "executor":
        def target() -> int:
            pid = pid_of(out, "worker-1")
            wait_for(work / "model" / "checkpoint")
            return executor_jvm_of(pid)
    elif case == "export":
        def target() -> int:
            pid = pid_of(out, "worker-0")
            wait_for(out / "exporting-worker-0-gen0")
            return pid
    else:
        def target() -> int:
            pid = pid_of(out, "worker-1")
            wait_for(work / "model" / "checkpoint")
            return pid
    begin = time.monotonic()
    try:
        if fault:
            thread = killer(target, box)
        cluster = tfos.run(sc, chaos_mains.mnist_resuming_fit, args, 2, max_restarts=1)
    finally:
        cluster_module.SparkLauncher = saved
    cluster.shutdown(timeout=600)
    return outcome(cluster, begin, thread, box, out, "first-step")


def spark_run(sc, rows, fault: bool) -> dict:
    import tfos

    out = Path(tempfile.mkdtemp(prefix="tfos-chaos-")) / "out"
    out.mkdir()
    box: dict = {}

    def target() -> int:
        pid = pid_of(out, "worker-1")
        wait_for(out / "fed-worker-1-gen0")
        return pid

    begin = time.monotonic()
    cluster = tfos.run(sc, chaos_mains.feed_consumer, {"out": str(out), "sleep": 0.02}, 3,
                       input_mode=tfos.InputMode.SPARK, max_restarts=1)
    thread = killer(target, box) if fault else None
    cluster.train(rows, num_epochs=2, feed_timeout=300)
    cluster.shutdown(timeout=600)
    return outcome(cluster, begin, thread, box, out, "first-batch")


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}s"


def report(name: str, clean: dict, faulted: dict) -> bool:
    lost = faulted["wall"] - clean["wall"]
    ok = faulted["detect"] <= DETECTION_GOAL_SECS and faulted["restarts"] == 1
    print(f"{name}: unfaulted {clean['wall']:.1f}s; faulted {faulted['wall']:.1f}s "
          f"(kill -> detection {faulted['detect']:.2f}s, goal <= {DETECTION_GOAL_SECS:.0f}s; "
          f"kill -> generation 1 running main {seconds(faulted['gen1_main'])}, -> its first step "
          f"{seconds(faulted['first_step'])}; wall time lost {lost:.1f}s) "
          f"-> {'meets' if ok else 'MISSES'} the detection goal", flush=True)
    return ok


CASES = {
    "tf-process": "InputMode.TENSORFLOW, kill -9 of worker:1's TF process after the first checkpoint",
    "executor": "InputMode.TENSORFLOW, kill -9 of worker:1's executor JVM after the first checkpoint",
    "start": "InputMode.TENSORFLOW, kill -9 of worker:0's start task before worker:1 registered",
    "export": "InputMode.TENSORFLOW, kill -9 of the chief as it exports the SavedModel",
    "spark": "InputMode.SPARK, kill -9 of worker:1's TF process mid-feed",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    opts = parser.parse_args()
    cases = [c.strip() for c in opts.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    logging.basicConfig(level=logging.WARNING)
    print(f"load average at the start: {os.getloadavg()}", flush=True)
    standalone = StandaloneCluster(workers=3).start()
    results = {}
    try:
        spark = session_on(standalone, "tfos-chaos-benchmark", 3)
        sc = spark.sparkContext
        import tfos

        tfos.run(sc, chaos_mains.write_pid, {"out": tempfile.mkdtemp()}, 3).shutdown(timeout=300)  # warm-up
        for case in cases:
            if case == "spark":
                images, labels = load_mnist("train", limit=12000)
                rows = sc.parallelize([(img.reshape(-1).tolist(), int(y))
                                       for img, y in zip(images, labels, strict=True)], 4).cache()
                print(f"cached {rows.count()} MNIST rows", flush=True)
                results[case] = (spark_run(sc, rows, False), spark_run(sc, rows, True))
            else:
                results[case] = (tensorflow_run(sc, case, False), tensorflow_run(sc, case, True))
            print(f"{case}: done", flush=True)
        spark.stop()
    finally:
        standalone.stop()
    print(f"\nload average at the end: {os.getloadavg()}")
    ok = [report(CASES[case], *runs) for case, runs in results.items()]
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
