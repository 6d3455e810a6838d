"""The ``spark`` micro-benchmark: ``tfos.feed.feed_job.train`` on ``local[N]`` into N stand-in
consumer processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time

import numpy as np

from benchmarks.feed.harness import consume


def spark(args) -> dict:
    from pyspark.sql import SparkSession

    registry = tempfile.mkdtemp(prefix="bench-registry-")
    os.environ["TFOS_FEED_REGISTRY_DIR"] = registry
    from tfos.feed import feed_job
    from tfos.feed.registry import register_local_node

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = []
    for i in range(args.workers):
        feed_dir = tempfile.mkdtemp(prefix=f"bench-feed-{i}-")
        register_local_node("bench", i, "worker", i, feed_dir)
        proc = ctx.Process(target=consume, args=(feed_dir, f"worker:{i}", args.read, args.batch_size, out))
        proc.start()
        procs.append(proc)
    session = (SparkSession.builder.master(f"local[{args.workers}]").config("spark.ui.enabled", "false")
               .config("spark.executorEnv.TFOS_FEED_REGISTRY_DIR", registry).getOrCreate())
    sc = session.sparkContext
    sc.setLogLevel("WARN")
    width = args.width
    data = sc.range(0, args.rows, numSlices=args.partitions).map(
        lambda i: (np.full(width, i % 255, dtype=np.float32), int(i % 10)))
    t0 = time.monotonic()
    report = feed_job.train(sc, data, cluster_id="bench", num_workers=args.workers, num_epochs=args.epochs,
                            progress=False, end_feed=True)
    seconds = time.monotonic() - t0
    consumers = [out.get(timeout=600) for _ in procs]
    session.stop()
    fed = report["inputs"]["input"]["rows_fed"]
    return {"bench": "spark", "workers": args.workers, "rows_fed": fed, "epochs": args.epochs,
            "seconds": round(seconds, 1), "rows_per_s": round(fed / seconds),
            "consumer_peak_rss_mb": [round(c["peak_rss_mb"]) for c in consumers]}
