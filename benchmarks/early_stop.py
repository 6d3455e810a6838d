"""Early stop (issue 15): how long ``cluster.train(rdd)`` takes when every node calls
``DataFeed.terminate()`` after a few batches, against Spark counting the same RDD.

On a Spark standalone cluster of 2 single-core workers (127.0.0.1), 2 TF nodes; the RDD has
``--rows`` MNIST-shaped Python rows (784 ints, a label) made in the map stage over
``--partitions`` partitions (nothing cached: what a pass over the input costs). Each round times
``rdd.count()`` and then ``train()`` into a running cluster whose nodes read ``--batches``
batches of 128 and terminate; each task that starts on a partition leaves a mark, to count them.
Target: ``train()`` < 0.3 of ``count()``, partitions not yet started never computed.

    .venv/bin/python benchmarks/early_stop.py [--rows 2000000 --partitions 16 --batches 20 --rounds 2]
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

from benchmarks.standalone_app import standalone_app  # noqa: E402

WORKERS = 2


def read_then_terminate(args, ctx):
    feed = ctx.get_data_feed(train_mode=True)
    for call in range(args["calls"]):
        rows = sum(len(feed.next_batch(128)) for _ in range(args["batches"]))
        feed.terminate()
        with open(os.path.join(args["out"], f"{ctx.task_index}-{call}.json"), "w") as f:
            json.dump({"rows": rows, "t": time.time()}, f)
        if call + 1 < args["calls"]:
            feed = ctx.get_data_feed(train_mode=True, qname_in=f"input{call + 1}")


def make_rows(marks, rows_per_partition):
    def make(p, _):
        if marks:  # a task that starts on a partition says so (a killed task's accumulator updates are lost)
            open(os.path.join(marks, str(p)), "w").close()
        base = p * rows_per_partition
        for j in range(rows_per_partition):
            g = base + j
            yield ([(g + i) % 256 for i in range(784)], g % 10)
    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args()

    import tfos
    from tfos import InputMode

    with standalone_app("tfos-early-stop", WORKERS) as sc:
        per = opts.rows // opts.partitions
        out = tempfile.mkdtemp(prefix="tfos-early-stop-")
        args = {"out": out, "batches": opts.batches, "calls": opts.rounds}
        results = []
        with tfos.run(sc, read_then_terminate, args, WORKERS, input_mode=InputMode.SPARK) as cluster:
            for r in range(opts.rounds):
                rdd = sc.parallelize(range(opts.partitions), opts.partitions).mapPartitionsWithIndex(
                    make_rows("", per))
                t = time.monotonic()
                n = rdd.count()
                count_s = time.monotonic() - t
                marks = tempfile.mkdtemp(prefix="started-", dir=out)
                rdd = sc.parallelize(range(opts.partitions), opts.partitions).mapPartitionsWithIndex(
                    make_rows(marks, per))
                qname = "input" if r == 0 else f"input{r}"
                t = time.monotonic()
                report = cluster.train(rdd, num_epochs=1, qname=qname, feed_timeout=600)
                train_s = time.monotonic() - t
                row = {"round": r + 1, "rows": n, "count_s": round(count_s, 2), "train_s": round(train_s, 2),
                       "ratio": round(train_s / count_s, 3), "partitions_started": len(os.listdir(marks)),
                       "partitions": opts.partitions,
                       "first_batch_s": report["inputs"][qname]["first_batch_seconds"],
                       "terminated": report["inputs"][qname]["terminated"], "route": report.get("route")}
                results.append(row)
                print(json.dumps(row), flush=True)
        best = min(results, key=lambda x: x["ratio"])
        print(f"early stop after {opts.batches} batches of 128 per node, {opts.rows:,} rows in "
              f"{opts.partitions} partitions: train() {best['train_s']}s vs count() {best['count_s']}s = "
              f"{best['ratio']} (target < 0.3); partitions started {best['partitions_started']} of "
              f"{opts.partitions}", flush=True)


if __name__ == "__main__":
    main()
