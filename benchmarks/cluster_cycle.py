"""Time one InputMode.TENSORFLOW cluster cycle: run + a main that builds MultiWorkerMirroredStrategy + shutdown.

2 nodes on a real Spark standalone cluster (2 single-core workers on 127.0.0.1), warm
SparkContext, median of N cycles after one warm-up. In the same run, when it is installed,
the same work through spark-tensorflow-distributor's ``MirroredStrategyRunner`` for comparison.

    .venv/bin/python benchmarks/cluster_cycle.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.spark_standalone import StandaloneCluster, session_on  # noqa: E402


def build_mwms(args, ctx):
    import tensorflow as tf

    tf.distribute.MultiWorkerMirroredStrategy()


def build_mwms_runner():
    import tensorflow as tf

    tf.distribute.MultiWorkerMirroredStrategy()


def time_tfos(sc, repeats: int) -> list[float]:
    import tfos

    times = []
    for i in range(repeats + 1):
        begin = time.perf_counter()
        tfos.run(sc, build_mwms, {}, 2).shutdown(timeout=300)
        elapsed = time.perf_counter() - begin
        if i:  # the first cycle warms the Python workers
            times.append(elapsed)
        print(f"tfos cycle {i}{' (warm-up)' if not i else ''}: {elapsed:.2f}s", flush=True)
    return times


def time_runner(repeats: int) -> list[float] | str:
    try:
        from spark_tensorflow_distributor import MirroredStrategyRunner
    except ImportError:
        return "spark-tensorflow-distributor is not installed (pip install -e '.[bench]')"
    times = []
    for i in range(repeats + 1):
        begin = time.perf_counter()
        try:
            MirroredStrategyRunner(num_slots=2, use_gpu=False, use_custom_strategy=True).run(build_mwms_runner)
        except Exception as exc:  # noqa: BLE001 - report the comparison's failure instead of crashing
            return f"MirroredStrategyRunner failed on cycle {i}: {type(exc).__name__}: {str(exc)[:300]}"
        elapsed = time.perf_counter() - begin
        if i:
            times.append(elapsed)
        print(f"MirroredStrategyRunner cycle {i}{' (warm-up)' if not i else ''}: {elapsed:.2f}s", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    standalone = StandaloneCluster(workers=2).start()
    try:
        spark = session_on(standalone, "tfos-cluster-cycle", 2)
        ours = time_tfos(spark.sparkContext, args.repeats)
        theirs = time_runner(args.repeats)
        spark.stop()
    finally:
        standalone.stop()
    ours_median = statistics.median(ours)
    print(f"\ntfos run+shutdown, 2 nodes, median of {len(ours)}: {ours_median:.2f}s")
    if isinstance(theirs, str):
        print(f"comparison: {theirs}")
    else:
        theirs_median = statistics.median(theirs)
        print(f"MirroredStrategyRunner, 2 slots, median of {len(theirs)}: {theirs_median:.2f}s")
        verdict = "no slower than" if ours_median <= theirs_median else "SLOWER than"
        print(f"tfos / comparison = {ours_median / theirs_median:.2f}: tfos is {verdict} the comparison")


if __name__ == "__main__":
    main()
