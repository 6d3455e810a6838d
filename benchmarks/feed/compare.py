"""The ``compare`` sub-command (the default): :class:`Bench` runs each measurement of
``feed_throughput`` ((a)'s old-way baseline, (b), (c); (a)'s tfos path and bounds are in
``benchmarks.feed.training``, (d) in ``benchmarks.feed.inference``) for each size on a Spark
standalone cluster, alternating the paths, and :func:`compare` drives a run."""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from functools import partial
from typing import Any

from benchmarks.feed import data, workloads
from benchmarks.feed.data import expected_sums, mnist, model
from benchmarks.feed.figures import best_of, check, phases, round_ratios, summarize
from benchmarks.feed.harness import (
    MARKER_ENV,
    WORKERS,
    RssSampler,
    Watchdog,
    kill_marked,
    read_results,
    wait_ready,
)
from benchmarks.feed.inference import d_inference
from benchmarks.feed.report import print_report
from benchmarks.feed.training import a_training
from benchmarks.feed.workloads import (
    arrow_images,
    baseline_feed,
    baseline_final,
    count_batches,
    main_b,
    main_baseline,
)

ROWS_PER_PARTITION = 25_000


class Bench:
    def __init__(self, opts: argparse.Namespace):
        self.opts = opts
        self.t_start = time.monotonic()
        self.load_start = [round(x, 1) for x in os.getloadavg()]
        self.run_id = uuid.uuid4().hex
        self.marker = f"{MARKER_ENV}={self.run_id}".encode()
        self.tmp = tempfile.mkdtemp(prefix="fb-", dir="/tmp")  # the executors' TMPDIR: short socket paths
        self.out = tempfile.mkdtemp(prefix="tfos-feed-bench-")
        self.sampler = RssSampler(self.marker, self.out)
        self.standalone = None
        self.spark = None
        self.results: dict[int, dict] = {}
        self.cleaned = False
        self.conf: dict | None = None

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t_start:7.1f}s] {message}", flush=True)

    # ---- lifecycle --------------------------------------------------------------------------
    def start_spark(self, n: int, what: str) -> Any:
        self.log(f"size {n:,}, ({what}): starting a Spark application of {WORKERS} executors")
        from pyspark.sql import SparkSession

        from tests.spark_standalone import spark_conf, wait_for_executors

        if self.conf is None:
            # Computed once: every SparkContext adds its own SparkFiles directory to the driver's
            # sys.path, which spark_conf() ships as the executors' PYTHONPATH; the applications
            # of one run get the same one.
            self.conf = spark_conf(self.standalone.master_url, WORKERS)
        conf = dict(self.conf)
        conf.update({"spark.executor.memory": self.opts.executor_memory, "spark.ui.showConsoleProgress": "false",
                     "spark.executorEnv.TMPDIR": self.tmp,
                     f"spark.executorEnv.{MARKER_ENV}": self.run_id})
        builder = SparkSession.builder.appName(f"tfos-feed-throughput-{n}-{what.replace(',', '')}")
        for key, value in conf.items():
            builder = builder.config(key, value)
        self.spark = builder.getOrCreate()
        sc = self.spark.sparkContext
        sc.setLogLevel("ERROR")
        wait_for_executors(sc, WORKERS, 180, self.standalone.log_dir)
        return sc

    def stop_spark(self) -> None:
        if self.spark is not None:
            try:
                self.spark.stop()
            finally:
                self.spark = None

    def cleanup(self) -> None:
        if self.cleaned:
            return
        self.cleaned = True
        self.sampler.stop()
        try:
            self.stop_spark()
        finally:
            if self.standalone is not None:
                self.standalone.stop()
            left = kill_marked(self.marker)
            if left:
                self.log(f"stopped {len(left)} left-over process(es) of this run: "
                         f"{', '.join(f'{pid} ({cmd})' for pid, cmd in left)}")
            shutil.rmtree(self.tmp, ignore_errors=True)
            shutil.rmtree(self.out, ignore_errors=True)

    def tf_cluster(self, sc: Any, main_fun: Any, args: dict) -> Any:
        import tfos

        return tfos.run(sc, main_fun, args, WORKERS, input_mode=tfos.InputMode.SPARK,
                        reservation_timeout=min(self.opts.timeout, 600))

    def node_args(self, tag: str, **extra: Any) -> dict:
        args = {"out": self.out, "tag": tag, "batch_size": self.opts.batch_size, "timeout": self.opts.timeout}
        args.update(extra)
        return args

    # ---- one size ---------------------------------------------------------------------------
    def run_size(self, n: int) -> dict:
        parts = self.opts.only
        res: dict[str, Any] = {"rows": n, "partitions": partitions_for(n, self.opts.partitions)}
        expected = expected_sums(n)
        res["expected"] = expected
        # (a) and (b)+(d) each in a fresh application, so that the RSS of the feeding Python
        # workers sampled during (a)-tfos and (b) starts from the same state at every size
        # (Python workers are reused within an application and keep their peak).
        if "a" in parts:
            sc = self.start_spark(n, "a")
            try:
                self.warm_up(sc)
                res.update(a_training(self, sc, n, expected))
            finally:
                self.stop_spark()
        if parts & {"b", "d"}:
            sc = self.start_spark(n, ",".join(sorted(parts & {"b", "d"})))
            try:
                self.warm_up(sc)
                if "b" in parts:
                    res["b"] = self.b_dataframe(n, expected)
                if "d" in parts:
                    res["d"] = d_inference(self, sc, n)
            finally:
                self.stop_spark()
        return res

    def warm_up(self, sc: Any) -> None:
        def warm(_):
            import pyarrow  # noqa: F401

            import tfos.feed.train_task  # noqa: F401

            mnist()
            model()
            yield os.getpid()

        with Watchdog(self.opts.timeout, "warm-up", sc):
            t0 = time.time()
            pids = sc.parallelize(range(4 * WORKERS), 4 * WORKERS).mapPartitions(warm).collect()
        self.log(f"warm-up job: {time.time() - t0:.1f}s ({len(set(pids))} Python workers)")

    def index_rdd(self, sc: Any, n: int) -> Any:
        return sc.range(0, n, numSlices=partitions_for(n, self.opts.partitions))

    # ---- (a) the old-way baseline (the tfos path and the bounds: benchmarks.feed.training) --------
    def a_baseline(self, sc: Any, n: int, run: int = 0) -> dict:
        cap = self.opts.baseline_max_rows
        nb = min(n, cap) if cap else n
        tag = f"base-{n}-{run}"
        expected = expected_sums(nb)
        note = f" (capped at {nb:,} of {n:,} rows by --baseline-max-rows)" if nb < n else ""
        style = "put/get" if self.opts.baseline_lean else "put/get/task_done, join per partition"
        self.log(f"(a) baseline: manager queue, {style} per pickled row, {nb:,} rows{note}")
        timeout = self.opts.timeout
        with Watchdog(timeout, "(a) baseline", sc), \
                self.tf_cluster(sc, main_baseline, self.node_args(tag, queue_rows=self.opts.queue_rows,
                                                                baseline_lean=self.opts.baseline_lean)) as cluster:
            cid = cluster.cluster_id
            wait_ready(self.out, tag, WORKERS, 120, cluster)
            t0 = time.time()
            fed = self.index_rdd(sc, nb).mapPartitionsWithIndex(
                partial(baseline_feed, cid, self.out, tag, timeout, self.opts.baseline_lean)).collect()
            feed_s = time.time() - t0
            per_node: dict[int, tuple[int, int]] = {}
            for eid, _, rows in fed:
                r, p = per_node.get(eid, (0, 0))
                per_node[eid] = (r + rows, p + 1)
            told = sc.parallelize(range(WORKERS), WORKERS).barrier().mapPartitions(
                partial(baseline_final, cid, self.out, tag, timeout, per_node)).collect()
            if sorted(told) != list(range(WORKERS)):
                raise RuntimeError(f"baseline: the final markers reached executors {told}, not each of the "
                                   f"{WORKERS} nodes once")
            cluster.shutdown(timeout=timeout)
        nodes = read_results(self.out, tag, WORKERS, 60)
        out = summarize(nodes, t0, nb)
        bad = [nd["node"] for nd in nodes if nd["rows"] != nd["expected_rows"] or nd["rows"] != nd["partition_rows"]
               or nd["partitions"] != nd["expected_partitions"]]
        out.update(rows_fed=sum(r for _, _, r in fed), feed_job_s=round(feed_s, 2), capped=nb < n,
                   rows_per_node={str(e): v[0] for e, v in sorted(per_node.items())},
                   check=check(out["consumed"], expected) + (f"; node counts disagree on {bad}" if bad else ""))
        self.log(f"(a) baseline: {out['rows_per_s']:,} rows/s ({out['seconds']:.1f}s) [{out['check']}]")
        return out

    # ---- (b) ----------------------------------------------------------------------------------
    def b_dataframe(self, n: int, expected: dict) -> dict:
        spark = self.spark
        sc = spark.sparkContext
        kind = self.opts.image_column
        repeats = self.opts.repeats
        ddl = "image binary, label int" if kind == "binary" else "image array<tinyint>, label int"
        tag = f"b-{n}"
        self.log(f"(b) building and caching a DataFrame ({ddl}) of {n:,} rows")
        with Watchdog(self.opts.timeout * repeats, "(b) DataFrame", sc):
            df = spark.range(0, n, numPartitions=partitions_for(n, self.opts.partitions)) \
                .mapInArrow(partial(arrow_images, kind), ddl).cache()
            try:
                t = time.time()
                assert df.count() == n
                cache_s = time.time() - t
                mem = disk = 0
                for info in sc._jsc.sc().getRDDStorageInfo():
                    mem, disk = mem + info.memSize(), disk + info.diskSize()
                self.log(f"(b) cached in {cache_s:.1f}s: {mem / 2**20:.0f} MB in memory, {disk / 2**20:.0f} MB on disk")
                self.log(f"(b) tfos: cluster.train(DataFrame) -> dataset({self.opts.batch_size}) decoded in TF, "
                         f"alternating with Spark alone scanning it ({repeats} runs each after a warm-up scan)")
                t = time.time()
                self.scan(df, n)
                self.log(f"(b) warm-up scan: {time.time() - t:.2f}s")
                scans, runs = [], []
                with self.tf_cluster(sc, main_b, self.node_args(tag, image_column=kind, runs=repeats)) as cluster:
                    wait_ready(self.out, tag, WORKERS, 120, cluster)
                    self.sampler.begin(tag)
                    try:
                        for i in range(repeats):
                            t = time.time()
                            self.scan(df, n)
                            scans.append(time.time() - t)
                            t0 = time.time()
                            report = cluster.train(df, num_epochs=1)
                            train_s = time.time() - t0
                            out = summarize(read_results(self.out, f"{tag}-{i}", WORKERS, 60), t0, n)
                            dropped = report["inputs"]["input"]["remainder_rows_per_epoch"]
                            out.update(train_call_s=round(train_s, 2), rows_fed=report["inputs"]["input"]["rows_fed"],
                                       phases=phases(report), route=report.get("route", "shuffle"),
                                       first_batch_s=report["inputs"]["input"].get("first_batch_seconds"), check=check(out["consumed"], expected) if not dropped
                                       else f"{dropped} remainder rows dropped")
                            runs.append(out)
                            self.log(f"(b) run {i + 1}: Spark scan {n / scans[-1]:,.0f} rows/s ({scans[-1]:.2f}s), "
                                     f"tfos {out['rows_per_s']:,} rows/s ({out['seconds']:.1f}s, train() "
                                     f"{train_s:.1f}s, first batch {out['first_batch_s']}s after train()) "
                                     f"[{out['check']}]")
                        cluster.shutdown(timeout=self.opts.timeout)
                    finally:
                        rss = self.sampler.end()
            finally:
                df.unpersist()
        out = best_of(runs)
        scan_s = min(scans)
        out.update(scan_s=round(scan_s, 3), scan_rows_per_s=round(n / scan_s),
                   scan_runs=[round(n / s) for s in scans], cache_s=round(cache_s, 2),
                   cached_mb={"memory": round(mem / 2**20), "disk": round(disk / 2**20)}, image_column=kind, rss=rss)
        self.log(f"(b) best of {repeats}: tfos {out['rows_per_s']:,} rows/s, Spark scan {out['scan_rows_per_s']:,} "
                 f"rows/s [{out['check']}]; tfos / scan {round_ratios(out['runs'], out['scan_runs'])}")
        return out

    @staticmethod
    def scan(df: Any, n: int) -> None:
        """Spark alone: ``mapInArrow`` counting the rows of ``df`` (each must be there)."""
        from pyspark.sql import functions as F  # noqa: N812

        scanned = df.mapInArrow(count_batches, "n long").agg(F.sum("n")).collect()[0][0]
        if scanned != n:
            raise RuntimeError(f"the scan counted {scanned} rows of {n}")

def partitions_for(n: int, override: int | None = None) -> int:
    """8 partitions, more for big inputs so that a partition stays near 25,000 rows."""
    return override or max(8, math.ceil(n / ROWS_PER_PARTITION))


def compare(opts: argparse.Namespace) -> None:
    from pyspark import cloudpickle

    for module in (data, workloads):  # shipped by value, as when they lived in the __main__ script
        cloudpickle.register_pickle_by_value(module)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if opts.verbose:
        logging.getLogger("tfos").setLevel(logging.INFO)
    from tests.spark_standalone import StandaloneCluster

    def on_sigterm(*_: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)
    bench = Bench(opts)
    bench.sampler.start()
    try:
        bench.log(f"sizes {', '.join(f'{n:,}' for n in opts.sizes)}; measurements {','.join(sorted(opts.only))}; "
                  f"starting a Spark standalone cluster of {WORKERS} single-core workers")
        bench.standalone = StandaloneCluster(workers=WORKERS, worker_memory=opts.worker_memory).start()
        for n in opts.sizes:
            bench.results[n] = bench.run_size(n)
    except BaseException:
        if bench.results:
            print("\nthe run failed; figures of the sizes that completed:")
            bench.cleanup()
            print_report(bench, time.monotonic() - bench.t_start)
        raise
    finally:
        bench.cleanup()
    if bench.standalone is not None:
        shutil.rmtree(bench.standalone.log_dir, ignore_errors=True)
    print_report(bench, time.monotonic() - bench.t_start)


def parse_sizes(text: str) -> list[int]:
    sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    if not sizes or min(sizes) < WORKERS:
        raise argparse.ArgumentTypeError(f"sizes must be integers >= {WORKERS}")
    return sorted(set(sizes))


def parse_only(text: str) -> set[str]:
    parts = {s.strip() for s in text.split(",") if s.strip()}
    if not parts or parts - set("abcd"):
        raise argparse.ArgumentTypeError("--only takes a comma-separated subset of a,b,c,d")
    if "c" in parts and not parts & {"a", "b"}:
        parts |= {"a", "b"}  # (c) is sampled during (a) and (b)
    return parts
