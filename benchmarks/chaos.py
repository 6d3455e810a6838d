"""What a SIGKILLed TF process costs with ``max_restarts=1``: detection, recovery, wall time lost.

On a real Spark standalone cluster (3 single-core workers on 127.0.0.1), in the same run:

- InputMode.TENSORFLOW: real MNIST under MultiWorkerMirroredStrategy on 2 workers, a checkpoint
  per epoch (``tests/chaos_mains.py``), once unfaulted and once with worker:1's TF process
  SIGKILLed right after the first checkpoint;
- InputMode.SPARK: 12,000 real MNIST rows fed for 2 epochs to 3 workers, once unfaulted and once
  with worker:1 killed after it consumed 500 rows.

For each faulted run: kill -> the driver's detection, kill -> the first training step (or first
fed batch) of the next generation, and the wall time lost against the unfaulted run.

    .venv/bin/python benchmarks/chaos.py
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


def killer(out: Path, ready: Path, box: dict) -> threading.Thread:
    def kill() -> None:
        wait_for(out / "pid-worker-1-gen0")
        wait_for(ready)
        os.kill(int((out / "pid-worker-1-gen0").read_text()), signal.SIGKILL)
        box["killed_wall"], box["killed"] = time.time(), time.monotonic()

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def first_of_gen1(out: Path, what: str) -> float:
    marks = [float(p.read_text()) for p in out.glob(f"{what}-*-gen1")]
    if not marks:
        raise RuntimeError(f"no {what} mark of generation 1 in {out}")
    return min(marks)


def outcome(cluster, begin: float, thread: threading.Thread | None, box: dict, out: Path, first: str) -> dict:
    """Wall time and restarts of a run; for a faulted one also kill -> detection and -> ``first`` mark."""
    result = {"wall": time.monotonic() - begin, "restarts": cluster.restart_count}
    if thread is not None:
        thread.join(5)
        result["detect"] = cluster.restarts[0]["detected_at"] - box["killed"]
        result["first_step"] = first_of_gen1(out, first) - box["killed_wall"]
    return result


def tensorflow_run(sc, fault: bool) -> dict:
    import tfos

    work = Path(tempfile.mkdtemp(prefix="tfos-chaos-"))
    out = work / "out"
    out.mkdir()
    args = {"out": str(out), "model_dir": str(work / "model"), "epochs": 6, "steps_per_epoch": 60}
    box: dict = {}
    begin = time.monotonic()
    cluster = tfos.run(sc, chaos_mains.mnist_resuming_fit, args, 2, max_restarts=1)
    thread = killer(out, work / "model" / "checkpoint", box) if fault else None
    cluster.shutdown(timeout=600)
    return outcome(cluster, begin, thread, box, out, "first-step")


def spark_run(sc, rows, fault: bool) -> dict:
    import tfos

    out = Path(tempfile.mkdtemp(prefix="tfos-chaos-")) / "out"
    out.mkdir()
    box: dict = {}
    begin = time.monotonic()
    cluster = tfos.run(sc, chaos_mains.feed_consumer, {"out": str(out), "sleep": 0.02}, 3,
                       input_mode=tfos.InputMode.SPARK, max_restarts=1)
    thread = killer(out, out / "fed-worker-1-gen0", box) if fault else None
    cluster.train(rows, num_epochs=2, feed_timeout=300)
    cluster.shutdown(timeout=600)
    return outcome(cluster, begin, thread, box, out, "first-batch")


def report(name: str, clean: dict, faulted: dict) -> bool:
    lost = faulted["wall"] - clean["wall"]
    ok = faulted["detect"] <= DETECTION_GOAL_SECS and faulted["restarts"] == 1
    print(f"{name}: unfaulted {clean['wall']:.1f}s; faulted {faulted['wall']:.1f}s "
          f"(kill -> detection {faulted['detect']:.2f}s, goal <= {DETECTION_GOAL_SECS:.0f}s; "
          f"kill -> first step of generation 1 {faulted['first_step']:.1f}s; wall time lost {lost:.1f}s) "
          f"-> {'meets' if ok else 'MISSES'} the detection goal", flush=True)
    return ok


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    logging.basicConfig(level=logging.WARNING)
    standalone = StandaloneCluster(workers=3).start()
    try:
        spark = session_on(standalone, "tfos-chaos-benchmark", 3)
        sc = spark.sparkContext
        import tfos

        tfos.run(sc, chaos_mains.write_pid, {"out": tempfile.mkdtemp()}, 3).shutdown(timeout=300)  # warm-up
        images, labels = load_mnist("train", limit=12000)
        rows = sc.parallelize([(img.reshape(-1).tolist(), int(y)) for img, y in zip(images, labels, strict=True)],
                              4).cache()
        print(f"cached {rows.count()} MNIST rows", flush=True)
        results = {
            "TENSORFLOW": (tensorflow_run(sc, False), tensorflow_run(sc, True)),
            "SPARK": (spark_run(sc, rows, False), spark_run(sc, rows, True)),
        }
        spark.stop()
    finally:
        standalone.stop()
    print()
    ok = [report(f"InputMode.{mode}, kill -9 of worker:1's TF process", *runs) for mode, runs in results.items()]
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
