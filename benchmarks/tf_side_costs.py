"""Where the TF process's CPU goes while it is fed: ``next_batch(128)`` against the consumer.

On a Spark standalone cluster of 2 single-core workers (127.0.0.1), 2 TF nodes, one ``train()``
of a cached RDD of ``--rows`` MNIST-shaped Python rows (784 ints, a label) into the consumer of
``feed_throughput.py``'s (a) (a float32 batch from the rows). Each node times its own main thread
around every call (``time.thread_time()``) and the garbage collector's runs (``gc.callbacks``),
and takes the whole process's CPU (``getrusage``): per row, ``next_batch``, the consumer, the
main thread, the process (the difference is the hub's and the DataFeed's threads) and the
collector.

    .venv/bin/python benchmarks/tf_side_costs.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.standalone_app import cached_pixel_rows, standalone_app  # noqa: E402

WORKERS = 2


def timed_consumer(args, ctx):
    import gc
    import resource

    sys.path.insert(0, args["root"])
    from benchmarks.feed.data import Consumer

    collector = {"seconds": 0.0, "runs": 0, "began": 0.0}

    def on_gc(phase, _info):
        if phase == "start":
            collector["began"] = time.process_time()
        else:
            collector["seconds"] += time.process_time() - collector["began"]
            collector["runs"] += 1

    gc.callbacks.append(on_gc)
    feed = ctx.get_data_feed(train_mode=True)
    consumer = Consumer()
    in_next_batch = in_consume = 0.0
    mine = args["rows"] // WORKERS
    usage0, thread0 = resource.getrusage(resource.RUSAGE_SELF), time.thread_time()
    while not feed.should_stop() and consumer.rows < mine:
        a = time.thread_time()
        batch = feed.next_batch(min(128, mine - consumer.rows))
        b = time.thread_time()
        if batch:
            consumer.consume(batch)
        in_next_batch, in_consume = in_next_batch + b - a, in_consume + time.thread_time() - b
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    n = max(1, consumer.rows)
    process = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    with open(os.path.join(args["out"], f"{ctx.task_index}.json"), "w") as f:
        json.dump({"rows": consumer.rows, "next_batch": in_next_batch / n * 1e6, "consume": in_consume / n * 1e6,
                   "main_thread": (time.thread_time() - thread0) / n * 1e6, "process": process / n * 1e6,
                   "gc": collector["seconds"] / n * 1e6, "gc_runs": collector["runs"]}, f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    opts = parser.parse_args()

    import tfos
    from tfos import InputMode

    with standalone_app("tfos-tf-side-costs", WORKERS) as sc:
        rdd = cached_pixel_rows(sc, opts.rows)
        out = tempfile.mkdtemp(prefix="tfos-tf-side-")
        with tfos.run(sc, timed_consumer, {"out": out, "rows": opts.rows, "root": ROOT}, WORKERS,
                      input_mode=InputMode.SPARK) as cluster:
            t0 = time.time()
            cluster.train(rdd, 1)
            print(f"train() {time.time() - t0:.2f} s, {opts.rows / (time.time() - t0):,.0f} rows/s")
        for k in range(WORKERS):
            d = json.load(open(os.path.join(out, f"{k}.json")))
            print(f"worker:{k}: {d['rows']:,} rows; CPU us/row: next_batch {d['next_batch']:.2f}, consumer "
                  f"{d['consume']:.2f}, main thread {d['main_thread']:.2f}, whole process {d['process']:.2f}; "
                  f"garbage collector {d['gc']:.2f} ({d['gc_runs']} runs)")


if __name__ == "__main__":
    main()
