"""Feed throughput: rows/s and MB/s from a feed task into a TF-side DataFeed, and peak memory.

Two measurements, both with real processes and a real Unix socket:

``channel``  the shard feeder (``tfos.feed.feeder``) replaying a local spill file into one
             consumer process that reads with ``DataFeed.batches()`` (columnar, what
             ``dataset()`` uses) or ``next_batch()`` (rows, TensorFlowOnSpark style).
``spark``    ``tfos.feed.feed_job.train`` on ``local[N]`` (count, shuffle, barrier feed) into
             N consumer processes.

Usage::

    python benchmarks/feed_throughput.py channel --rows 200000 --width 784 --read batches
    python benchmarks/feed_throughput.py spark --rows 100000 --workers 2 --epochs 2

Prints one JSON line per run (rows/s, MB/s, peak RSS of feeder and consumer in MB).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _consume(feed_dir: str, node: str, read: str, batch_size: int, out) -> None:
    from types import SimpleNamespace

    from tfos.feed.datafeed import DataFeed

    job, index = node.split(":")
    feed = DataFeed(SimpleNamespace(feed_dir=feed_dir, job_name=job, task_index=int(index)))
    rows, started = 0, None
    while not feed.should_stop():
        if read == "batches":
            for batch in feed.batches(batch_size):
                started = started or time.monotonic()
                rows += len(batch[0])
        else:
            batch = feed.next_batch(batch_size)
            started = started or time.monotonic()
            rows += len(batch)
    elapsed = time.monotonic() - (started or time.monotonic())
    out.put({"node": node, "rows": rows, "seconds": elapsed,
             "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _rows(n: int, width: int):
    rng = np.random.default_rng(0)
    base = rng.random((1024, width), dtype=np.float32)
    for i in range(n):
        yield (base[i % 1024], i % 10)


def channel(args) -> dict:
    from tfos.feed import arrow_codec as codec
    from tfos.feed import feeder

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    feed_dir = tempfile.mkdtemp(prefix="bench-feed-")
    proc = ctx.Process(target=_consume, args=(feed_dir, "worker:0", args.read, args.batch_size, out))
    proc.start()
    spill = feeder.SpillFile(tempfile.mkdtemp(prefix="bench-spill-"), "0")
    encoder = codec.RowEncoder(0)
    sizer = feeder._ChunkSizer(feeder.DEFAULT_CHUNK_ROWS, feeder.DEFAULT_CHUNK_BYTES)
    t0 = time.monotonic()
    nbytes = 0
    for first, chunk in feeder._chunks(_rows(args.rows, args.width), sizer):
        batch = encoder.encode(chunk, first)
        sizer.learn(batch)
        payload = codec.to_ipc(batch).to_pybytes()
        nbytes += len(payload)
        spill.append(payload, batch.num_rows)
    spill.finish()
    encode_s = time.monotonic() - t0
    plan = feeder.TrainPlan(cluster_id="bench", qnames=["input"], num_epochs=args.epochs, feed_timeout=600)
    target = feeder.NodeTarget({"job_name": "worker", "task_index": 0, "feed_dir": feed_dir, "executor_id": 0})
    t1 = time.monotonic()
    feeder._feed_input(plan, target, 0, 0, spill, spill.rows, None, threading.Event())
    result = out.get(timeout=600)
    feed_s = time.monotonic() - t1
    proc.join(30)
    total_rows = args.rows * args.epochs
    return {"bench": "channel", "read": args.read, "rows": total_rows, "width": args.width,
            "encode_rows_per_s": round(args.rows / encode_s), "feed_rows_per_s": round(total_rows / feed_s),
            "feed_mb_per_s": round(nbytes * args.epochs / feed_s / 2**20, 1),
            "feeder_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "consumer_peak_rss_mb": round(result["peak_rss_mb"])}


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
        proc = ctx.Process(target=_consume, args=(feed_dir, f"worker:{i}", args.read, args.batch_size, out))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", choices=["channel", "spark"])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=784, help="float32 values per row (plus an int label)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--read", choices=["batches", "next_batch"], default="batches")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(channel(args) if args.bench == "channel" else spark(args)))


if __name__ == "__main__":
    main()
