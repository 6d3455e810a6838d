"""Time to the first batch: how long after ``cluster.train()`` a node's ``next_batch(128)`` first
returns rows, for a cached RDD fed several times into one running TF cluster.

On a Spark standalone cluster of 2 single-core workers (127.0.0.1), 2 TF nodes; a cached RDD of
``--rows`` MNIST-shaped Python rows (784 ints, a label) in 4 partitions; ``--calls`` ``train()``
calls one after the other. Prints per call the ``train()`` time, when each node's first batch
came (measured in the node) and the report's ``first_batch_seconds``; and, before each call, the
floor Spark itself sets: the round trip of a job of one empty Python task per executor. The first
call of a fresh Spark application also pays the Python workers' first imports (``tfos.feed``,
pyarrow, and pandas, which pyarrow imports on its first ``pa.array``): 0.3-0.8 s. So does a call
that follows a job whose tasks left input unread (Spark then does not reuse their Python workers).

    .venv/bin/python benchmarks/first_batch.py [--rows 60000] [--calls 4]
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


def read_calls(args, ctx):
    """Read ``rows_per_call`` rows per train() call; note when each call's first batch came."""
    feed = ctx.get_data_feed(train_mode=True)
    call = 0
    while not feed.should_stop():
        left = (call + 1) * args["rows_per_call"] - feed.rows_read  # never a batch across two calls
        batch = feed.next_batch(min(128, left))
        if batch:
            path = os.path.join(args["out"], f"{ctx.task_index}-{call}")
            if not os.path.exists(path):
                with open(path, "w") as f:
                    json.dump({"t": time.time()}, f)
        if feed.rows_read >= (call + 1) * args["rows_per_call"]:
            call += 1


def nothing(_row) -> None:
    """The task of the floor job."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--calls", type=int, default=4)
    opts = parser.parse_args()

    import tfos
    from tfos import InputMode

    with standalone_app("tfos-first-batch", WORKERS) as sc:
        rdd = cached_pixel_rows(sc, opts.rows)
        out = tempfile.mkdtemp(prefix="tfos-first-batch-")
        args = {"out": out, "rows_per_call": opts.rows // WORKERS}
        with tfos.run(sc, read_calls, args, WORKERS, input_mode=InputMode.SPARK) as cluster:
            for call in range(opts.calls):
                t0 = time.time()
                sc.parallelize(range(WORKERS), WORKERS).foreach(nothing)
                floor = time.time() - t0
                t0 = time.time()
                report = cluster.train(rdd, 1)
                took = time.time() - t0
                firsts = [json.load(open(os.path.join(out, f"{k}-{call}")))["t"] - t0 for k in range(WORKERS)]
                print(f"call {call}: train() {took:.2f} s; first batch at the nodes "
                      f"{', '.join(f'{f:.2f}' for f in firsts)} s after train(); report "
                      f"{report['inputs']['input']['first_batch_seconds']} s; an empty Spark job "
                      f"{floor:.2f} s", flush=True)


if __name__ == "__main__":
    main()
