"""The ``channel`` micro-benchmark: the shard feeder (``tfos.feed.train_task.feed_input``)
replaying a local spill file into one consumer process that reads with ``DataFeed.batches()``
or ``next_batch()``; no Spark."""

from __future__ import annotations

import multiprocessing as mp
import resource
import tempfile
import threading
import time

import numpy as np

from benchmarks.feed.harness import consume


def _rows(n: int, width: int):
    rng = np.random.default_rng(0)
    base = rng.random((1024, width), dtype=np.float32)
    for i in range(n):
        yield (base[i % 1024], i % 10)


def channel(args) -> dict:
    from tfos.feed import arrow_codec as codec
    from tfos.feed.chunking import DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_ROWS, ChunkSizer, iter_chunks
    from tfos.feed.plans import TrainPlan
    from tfos.feed.spill import SpillFile
    from tfos.feed.targets import NodeTarget
    from tfos.feed.train_task import feed_input

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    feed_dir = tempfile.mkdtemp(prefix="bench-feed-")
    proc = ctx.Process(target=consume, args=(feed_dir, "worker:0", args.read, args.batch_size, out))
    proc.start()
    spill = SpillFile(tempfile.mkdtemp(prefix="bench-spill-"), "0")
    encoder = codec.RowEncoder(0)
    sizer = ChunkSizer(DEFAULT_CHUNK_ROWS, DEFAULT_CHUNK_BYTES)
    t0 = time.monotonic()
    nbytes = 0
    for first, chunk in iter_chunks(_rows(args.rows, args.width), sizer):
        batch = encoder.encode(chunk, first)
        sizer.learn(batch)
        payload = codec.to_ipc(batch).to_pybytes()
        nbytes += len(payload)
        spill.append(payload, batch.num_rows)
    spill.finish()
    encode_s = time.monotonic() - t0
    plan = TrainPlan(cluster_id="bench", qnames=["input"], num_epochs=args.epochs, feed_timeout=600)
    target = NodeTarget({"job_name": "worker", "task_index": 0, "feed_dir": feed_dir, "executor_id": 0})
    t1 = time.monotonic()
    feed_input(plan, target, 0, 0, spill, spill.rows, None, threading.Event())
    result = out.get(timeout=600)
    feed_s = time.monotonic() - t1
    proc.join(30)
    total_rows = args.rows * args.epochs
    return {"bench": "channel", "read": args.read, "rows": total_rows, "width": args.width,
            "encode_rows_per_s": round(args.rows / encode_s), "feed_rows_per_s": round(total_rows / feed_s),
            "feed_mb_per_s": round(nbytes * args.epochs / feed_s / 2**20, 1),
            "feeder_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "consumer_peak_rss_mb": round(result["peak_rss_mb"])}
