"""Feed throughput (issue 3): tfos's InputMode.SPARK feed side by side with the old way, in one run.

``compare`` (the default sub-command) runs on a real Spark standalone cluster (2 single-core
workers on 127.0.0.1) with MNIST-shaped rows built from the real training images in
``examples/mnist/data`` (row ``i`` is image ``i mod 22699`` and its label), for each size in
``--sizes`` (default 60,000 and 1,000,000 rows):

(a) RDD of Python rows ``(784 Python ints, label)``, 2 TF workers, every consumer building
    ``float32``/``int64`` numpy batches of 128 from the rows (one shared ``consume`` function):
    - **tfos**: ``cluster.train(rdd)``, the TF side looping ``feed.next_batch(128)`` until
      ``should_stop()``;
    - **baseline, the old way** (TensorFlowOnSpark 1.x/2.x): each node's ``main_fun`` starts a
      ``multiprocessing`` manager serving a queue; ``rdd.mapPartitions`` feed tasks connect to
      the manager of their executor and ``put`` every row (pickled by the proxy), the consumer
      ``get``\\ s one row at a time. After the feed job the driver runs one barrier task per
      executor that puts a final marker with the rows that node was sent (as TFoS's shutdown
      job fed ``None``), so every consumer knows it has seen everything;
    - **single-process bound**: the same rows (same ``make_rows``) through the same consumer
      in the driver process, no Spark, no transport.
    The tfos path runs for a **computed** RDD (rows made in the map stage of each ``train``
    call, as above) and for a **cached** one (made, cached and ``count()``-ed before any timing:
    the feed then pays reading the cache, not making the rows), ``--a-inputs``; both are also
    compared with issue 15's bound, the consumer alone over rows already in memory, and each
    tfos run records where its wall time and CPU went (map stage + shuffle, spill, feed; Spark
    Python workers, TF processes, executor JVMs) and when the first batch reached a TF node
    (``benchmarks.feed.training``). The baseline runs with the computed RDD.
(b) DataFrame ``image binary`` (784 raw bytes; ``--image-column array`` for ``array<tinyint>``)
    + ``label int``, cached and materialised first: tfos ``cluster.train(df)`` into
    ``feed.dataset(128)`` decoded and reduced in TensorFlow (no per-row Python in main_fun),
    against Spark alone scanning the same cached DataFrame through Arrow
    (``mapInArrow`` counting rows).
(c) Peak RSS, sampled from ``/proc`` every 0.2 s during (a)-tfos and (b): the TF processes
    and the feeding side (every Spark Python worker of this run), each as the largest process
    and as the sum over the group. Target: the largest process of each group grows by < 200 MB
    from the smallest to the largest size (the growth of the sums is reported too; a single
    size reports the peaks only).
(d) Inference: ``cluster.inference(rdd)`` with a numpy nearest-centroid model on the TF side
    (``feed.batches(128)`` -> predictions -> ``feed.batch_results``) against
    ``rdd.mapPartitions`` running the same model per 128-row batch with no TF cluster; both
    counted by the same ``mapPartitions`` + ``collect``, alternately, best of ``--repeats`` (2),
    for a **cached** RDD of the rows (materialised before timing: both paths pay only reading the
    cache) and a **computed** one (rows made in the map stage of each job), ``--d-inputs``.

Every comparison alternates its paths, best of ``--repeats`` each: (a)'s tfos path, baseline
and single-process bound; (b)'s tfos feed and the Spark scan (after one untimed warm-up scan;
the tfos runs are ``train`` calls into the same TF cluster, one epoch each); (d) as above. This
machine's speed drifts by tens of percent within minutes, and a bound measured in a fast minute
against a feed measured in a slow one (or the reverse) says nothing about either.

Rates are rows / wall seconds from the start of the feeding call (``cluster.train``, the
baseline's feed job, ``inference``...) to the moment the last consumer has consumed its last row
(``main_fun`` writes its counts, checksums and that time to a JSON file in a shared temporary
directory). Row counts and label/pixel checksums of every path are checked against the expected
values. For each size, (a) and then (b)+(d) run in their own Spark application (fresh executors
and Python workers, so RSS peaks start from the same state), after a warm-up job; each
measurement starts its own TF cluster and waits until every ``main_fun`` has opened its feed
(none of that is timed).

Notes. The baseline does what TensorFlowOnSpark's feed did per row: the feed task puts
each row (one manager round trip, the row pickled), the consumer gets it and calls
``task_done()`` (two more round trips), and the feed task joins the queue at the end of
its partition; ``--baseline-lean`` leaves out ``task_done``/``join`` (a faster old way than
TFoS's own). The queue is bounded (``--queue-rows``) so that memory stays flat. The
(a)-tfos consumer asks for its last short batch by its size (``next_batch(48)``, say), as the
rows per worker are known, so that its clock stops when the data is consumed rather than when
the feed is ended by ``shutdown``; the baseline consumer's clock likewise stops at its last row
(plus the time to consume the final short batch). The executors get a private ``TMPDIR`` and a
marker in their environment: RSS sampling finds the run's processes by it, and at exit every
process still carrying it (tfos's per-executor TF launcher, which otherwise idles for 5
minutes) is stopped, after the Spark application and the standalone cluster.

    .venv/bin/python benchmarks/feed_throughput.py --sizes 60000,1000000
    .venv/bin/python benchmarks/feed_throughput.py --sizes 6000 --only a,d
    .venv/bin/python benchmarks/feed_throughput.py --sizes 200000 --only d --partitions 4 --batch-size 256
    # (d) alone, in issue 15's set-up (add --d-inputs cached for the cached RDD only)
    .venv/bin/python benchmarks/feed_throughput.py --baseline-max-rows 200000   # shorter baseline at 1M
    .venv/bin/python benchmarks/feed_throughput.py --sizes 60000,200000 --only a --partitions 4 --a-inputs cached
    # (a) for a cached RDD alone (issue 15), with where its time and CPU go

Prints progress lines, then one table per size (rows/s, ratios, targets, PASS/FAIL) and one
JSON line with every figure. The exit status is 0 whether or not targets are met.

The earlier micro-benchmarks stay available as sub-commands:

``channel``  the shard feeder (``tfos.feed.train_task.feed_input``) replaying a local spill file into one
             consumer process that reads with ``DataFeed.batches()`` or ``next_batch()``.
``spark``    ``tfos.feed.feed_job.train`` on ``local[N]`` into N stand-in consumer processes.

    .venv/bin/python benchmarks/feed_throughput.py channel --rows 200000 --width 784 --read batches
    .venv/bin/python benchmarks/feed_throughput.py spark --rows 100000 --workers 2 --epochs 2

This file is the command line; the code is in ``benchmarks/feed/`` (one module per sub-command:
``compare``, ``channel``, ``spark``; (a) in ``training``, (d) in ``inference``; and ``report``,
``figures``, ``workloads``, ``data``, ``harness``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.feed.compare import compare, parse_only, parse_sizes  # noqa: E402
from benchmarks.feed.data import make_rows  # noqa: E402, F401 - benchmarks/feed_parts.py imports it from here
from benchmarks.feed.inference import INPUTS, parse_inputs  # noqa: E402
from benchmarks.feed.training import INPUTS as A_INPUTS  # noqa: E402
from benchmarks.feed.training import parse_a_inputs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("compare", "channel", "spark", "-h", "--help"):
        argv.insert(0, "compare")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    cmp_ = sub.add_parser("compare", help="the issue-3 side-by-side benchmark (default)")
    cmp_.add_argument("--sizes", type=parse_sizes, default=[60_000, 1_000_000], help="rows, comma-separated")
    cmp_.add_argument("--only", type=parse_only, default=set("abcd"), help="subset of a,b,c,d (default all)")
    cmp_.add_argument("--batch-size", type=int, default=128)
    cmp_.add_argument("--partitions", type=int, default=None,
                      help="input partitions (default max(8, rows / 25,000))")
    cmp_.add_argument("--baseline-max-rows", type=int, default=None,
                      help="feed at most this many rows through the old-way baseline (its rate is per row)")
    cmp_.add_argument("--baseline-lean", action="store_true",
                      help="old way without TFoS's task_done() per row and join() per partition (faster)")
    cmp_.add_argument("--queue-rows", type=int, default=4096,
                      help="bound of the baseline's manager queue (TFoS's was unbounded, with a join per partition)")
    cmp_.add_argument("--a-inputs", type=parse_a_inputs, default=list(A_INPUTS),
                      help="(a): the RDDs to train on, a subset of cached,computed (default both; the old-way "
                           "baseline runs with computed)")
    cmp_.add_argument("--d-inputs", type=parse_inputs, default=list(INPUTS),
                      help="(d): the RDDs to infer over, a subset of cached,computed (default both)")
    cmp_.add_argument("--image-column", choices=["binary", "array"], default="binary",
                      help="(b): the image as 784 raw bytes or as array<tinyint>")
    cmp_.add_argument("--executor-memory", default="3g", help="spark.executor.memory (the (b) cache lives there)")
    cmp_.add_argument("--worker-memory", default="4g", help="memory of each standalone worker")
    cmp_.add_argument("--repeats", type=int, default=2,
                      help="(a) tfos and the single-process bound, and (d)'s two paths: runs of each, "
                           "alternating; the best counts")
    cmp_.add_argument("--timeout", type=float, default=1800, help="limit per measurement, seconds")
    cmp_.add_argument("--verbose", action="store_true", help="tfos's INFO log lines (feed progress, timings)")
    for name in ("channel", "spark"):
        p = sub.add_parser(name, help=f"the {name} micro-benchmark")
        p.add_argument("--rows", type=int, default=100_000)
        p.add_argument("--width", type=int, default=784, help="float32 values per row (plus an int label)")
        p.add_argument("--epochs", type=int, default=1)
        p.add_argument("--batch-size", type=int, default=128)
        p.add_argument("--read", choices=["batches", "next_batch"], default="batches")
        p.add_argument("--workers", type=int, default=2)
        p.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args(argv)
    if args.bench == "compare":
        compare(args)
    else:
        from benchmarks.feed import channel, spark

        print(json.dumps(channel.channel(args) if args.bench == "channel" else spark.spark(args)))


if __name__ == "__main__":
    main()
