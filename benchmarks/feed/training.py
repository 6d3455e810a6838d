"""Measurement (a) of ``feed_throughput compare``: ``cluster.train(rdd)`` of MNIST-shaped Python rows
into ``DataFeed.next_batch`` (``workloads.main_a``) against the same consumer in one process, for
each kind of input in ``--a-inputs``:

* ``cached``: the rows are made once, ``cache()``\\ d and materialised (``count()``) before any
  timing, so the feed pays Spark's read of the cache (unpickling every row) and its own work;
* ``computed``: the rows are made inside the map stage of each ``train`` call (``make_rows`` over
  ``sc.range``), as (a) always measured; the old-way baseline (``Bench.a_baseline``) runs with it.

Bounds, in the driver process, no Spark, the same ``Consumer`` in batches of ``--batch-size``:

* **rows in memory** (issue 15's bound, for both kinds; with its thread's CPU per row, to set against
  the TF processes'): the consumer alone iterating rows that are already materialised (the 22,699 distinct rows made once, untimed, then cycled to ``n`` rows:
  the same rows in the same order as the RDD's);
* **made and consumed** (``computed`` only, the bound (a) always had): ``make_rows`` + consume.

Each round (``--repeats``) runs: the in-memory bound; for ``cached``, Spark alone reading the
cache (``count()``, timed with CPU per row) and the tfos run; for ``computed``, the made bound,
the tfos run and the baseline. Every tfos run starts its own TF cluster (untimed) and records
where its time and CPU went: from the ``train`` report, the map stage + shuffle write (the rest
of the call), and per barrier task the spill (which reads the shuffle), the size exchange and the
feed; from the consumers, when their first batch arrived; from ``/proc`` (:class:`CpuTimeline`,
sampled every 0.2 s), the CPU of the Spark Python workers, the TF processes and the executor JVMs
in each of those phases (the feed phase runs until both consumers have their last row)."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from typing import TYPE_CHECKING, Any

from benchmarks.feed.data import Consumer, make_rows, mnist
from benchmarks.feed.figures import best_of, check, phases, round_ratios, summarize
from benchmarks.feed.harness import WORKERS, CpuTimeline, Watchdog, cache_rdd, read_results, timed, wait_ready
from benchmarks.feed.workloads import main_a

if TYPE_CHECKING:
    from benchmarks.feed.compare import Bench

INPUTS = ("cached", "computed")
GROUPS = {"feed": "Spark Python workers", "tf": "TF processes", "jvm": "executor JVMs"}


def parse_a_inputs(text: str) -> list[str]:
    """``--a-inputs``: a comma-separated subset of ``cached,computed`` (in that order)."""
    kinds = {s.strip() for s in text.split(",") if s.strip()}
    if not kinds or kinds - set(INPUTS):
        raise argparse.ArgumentTypeError(f"--a-inputs takes a comma-separated subset of {','.join(INPUTS)}")
    return [k for k in INPUTS if k in kinds]


# ---- bounds ------------------------------------------------------------------------------------
def _consume_all(rows: Any, batch_size: int) -> Consumer:
    consumer = Consumer()
    batch: list = []
    for row in rows:
        batch.append(row)
        if len(batch) == batch_size:
            consumer.consume(batch)
            batch = []
    if batch:
        consumer.consume(batch)
    return consumer


def bound_in_memory(bench: Bench, rows: list, n: int, expected: dict) -> dict:
    """The consumer alone over ``n`` rows already in memory (``rows`` cycled), in this process."""
    bench.log(f"(a) single-process bound, rows in memory: consume {n:,} rows in this process")
    t0, c0 = time.time(), time.thread_time()
    consumer = _consume_all(itertools.islice(itertools.cycle(rows), n), bench.opts.batch_size)
    seconds, cpu = time.time() - t0, time.thread_time() - c0
    out = {"seconds": round(seconds, 2), "rows_per_s": round(n / seconds), "consumed": consumer.report(),
           "check": check(consumer.report(), expected), "cpu_us_per_row": round(cpu / n * 1e6, 1)}
    bench.log(f"(a) bound, rows in memory: {out['rows_per_s']:,} rows/s ({seconds:.1f}s; CPU "
              f"{out['cpu_us_per_row']:g} us/row) [{out['check']}]")
    return out


def bound_made(bench: Bench, n: int, expected: dict) -> dict:
    """``make_rows`` + the consumer over ``n`` rows in this process (the bound of a computed RDD)."""
    bench.log(f"(a) single-process bound: make_rows + consume, {n:,} rows in this process")
    bs = bench.opts.batch_size
    t0, c0 = time.time(), time.thread_time()
    consumer = _consume_all(make_rows(range(n)), bs)
    seconds, cpu = time.time() - t0, time.thread_time() - c0
    # for information: the consumer alone, on rows made beforehand
    sample = list(make_rows(range(min(n, 20_000))))
    t1 = time.time()
    _consume_all(sample, bs)
    consume_only = len(sample) / (time.time() - t1)
    out = {"seconds": round(seconds, 2), "rows_per_s": round(n / seconds), "consumed": consumer.report(),
           "check": check(consumer.report(), expected), "consume_only_rows_per_s": round(consume_only),
           "cpu_us_per_row": round(cpu / n * 1e6, 1)}
    bench.log(f"(a) bound: {out['rows_per_s']:,} rows/s ({seconds:.1f}s, CPU {out['cpu_us_per_row']:g} us/row; consume alone "
              f"{out['consume_only_rows_per_s']:,} rows/s) [{out['check']}]")
    return out


def read_cache(bench: Bench, cached: Any, n: int) -> dict:
    """Spark alone reading the cached RDD: ``count()`` (each row unpickled in a Python worker)."""
    seconds, cpu, count = timed(bench.marker, bench.out, n, cached.count)
    if count != n:
        raise RuntimeError(f"(a) the cached RDD counted {count} rows, not {n}")
    out = {"seconds": round(seconds, 2), "rows_per_s": round(n / seconds), "cpu_us_per_row": cpu}
    bench.log(f"(a) Spark reading the cached RDD (count): {out['rows_per_s']:,} rows/s ({seconds:.1f}s); CPU us/row "
              + ", ".join(f"{g} {us:g}" for g, us in cpu.items()))
    return out


# ---- the tfos path -------------------------------------------------------------------------------
def _wait_consumed(out: str, tag: str, timeout: float) -> float | None:
    """Wait until every node wrote its ``consumed-`` file (it has its last row); the latest time in them."""
    paths = [os.path.join(out, f"consumed-{tag}-{i}") for i in range(WORKERS)]
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(p) for p in paths):
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    times = []
    for p in paths:
        with open(p) as f:
            times.append(float(json.load(f)["t"]))
    return max(times)


def breakdown(report: dict, nodes: list[dict], t0: float, t_train: float, t_end: float, timeline: CpuTimeline,
              n: int) -> dict:
    """Where one ``train`` call's wall time and CPU went.

    Phases on the driver's clock, from the report's longest barrier task: ``map_shuffle`` from
    ``train()`` to that task's start (the map stage that reads or makes the rows, encodes and
    routes them, writes the shuffle; and the barrier stage's start), ``spill`` (its shuffle read and
    spill, and the size exchange), ``feed`` (its feed, until both consumers have their last row,
    ``t_end``)."""
    ph = phases(report)
    firsts = [nd["t_first_batch"] for nd in nodes if nd.get("t_first_batch")]
    lasts = [nd["t_last"] for nd in nodes if nd.get("t_last")]
    first = min(firsts) - t0 if firsts else None
    if report.get("route") == "direct":  # no stages to tell apart: before the first batch, and after it
        t_first = min(firsts) if firsts else t0
        bounds = {"to_first_batch": (t0, t_first), "feeding": (t_first, max(t_end, t_train))}
    else:
        longest = max(report["shards"], key=lambda s: s.get("spill_seconds", 0) + s.get("agree_seconds", 0)
                      + s.get("feed_seconds", 0))
        task_s = longest.get("spill_seconds", 0) + longest.get("agree_seconds", 0) + longest.get("feed_seconds", 0)
        t_task = t_train - task_s
        t_spilled = t_task + longest.get("spill_seconds", 0) + longest.get("agree_seconds", 0)
        bounds = {"map_shuffle": (t0, t_task), "spill": (t_task, t_spilled),
                  "feed": (t_spilled, max(t_end, t_train))}
    cpu = {name: timeline.between(a, b) for name, (a, b) in bounds.items()}
    total = timeline.between(t0, max(t_end, t_train))
    wall = {name: round(b - a, 2) for name, (a, b) in bounds.items()}
    return {
        "wall_s": dict(wall, train=round(t_train - t0, 2), to_last_row=round(max(t_end, t_train) - t0, 2)),
        "wall_share": {name: round(s / max(max(t_end, t_train) - t0, 1e-6), 3) for name, s in wall.items()},
        "per_task": ph,
        "first_batch_s": round(first, 2) if first is not None else None,
        "first_batch_report_s": report["inputs"]["input"].get("first_batch_seconds"),
        # the TF side alone: all rows over the time from the first batch either node got to the last row
        "tf_side_rows_per_s": round(n / (max(lasts) - min(firsts))) if firsts and lasts else None,
        "cpu_us_per_row": {name: {g: round(s / n * 1e6, 1) for g, s in groups.items()} for name, groups in cpu.items()}
        | {"total": {g: round(s / n * 1e6, 1) for g, s in total.items()}},
        "cores_busy": {name: round(sum(cpu[name].values()) / max(b - a, 1e-6), 2) for name, (a, b) in bounds.items()}
        | {"total": round(sum(total.values()) / max(max(t_end, t_train) - t0, 1e-6), 2)},
    }


def breakdown_text(b: dict) -> str:
    """One line: wall seconds and CPU us/row by phase and process group, first batch, TF side's rate."""
    parts = []
    for name in b["wall_share"]:
        cpu = b["cpu_us_per_row"][name]
        parts.append(f"{name} {b['wall_s'][name]}s ({b['wall_share'][name]:.0%}; CPU us/row "
                     + " ".join(f"{g} {cpu.get(g, 0):g}" for g in GROUPS) + f"; {b['cores_busy'][name]:g} cores)")
    total = b["cpu_us_per_row"]["total"]
    return ("; ".join(parts) + f"; CPU us/row in all {sum(total.values()):.1f} ("
            + " ".join(f"{g} {total.get(g, 0):g}" for g in GROUPS) + f"); first batch {b['first_batch_s'] or '-'}s after "
            f"train() (report: {b['first_batch_report_s']}); TF side "
            + (f"{b['tf_side_rows_per_s']:,} rows/s" if b["tf_side_rows_per_s"] else "-"))


def tfos_run(bench: Bench, sc: Any, rdd: Any, n: int, expected: dict, tag: str, kind: str,
             timeline: CpuTimeline) -> dict:
    """One ``cluster.train(rdd)`` into a fresh TF cluster: rate, checks, RSS peaks and :func:`breakdown`."""
    opts = bench.opts
    bench.log(f"(a) tfos, {kind} RDD: cluster.train(RDD of {n:,} Python rows) -> next_batch({opts.batch_size})")
    with Watchdog(opts.timeout, f"(a) tfos, {kind} RDD", sc), \
            bench.tf_cluster(sc, main_a, bench.node_args(tag, rows_per_worker=n // WORKERS)) as cluster:
        wait_ready(bench.out, tag, WORKERS, 120, cluster)
        bench.sampler.begin(tag)
        try:
            timeline.sample()
            t0 = time.time()
            report = cluster.train(rdd, num_epochs=1)
            t_train = time.time()
            t_end = _wait_consumed(bench.out, tag, 60) or t_train  # none if rows were dropped: the feed's end
            timeline.sample()
            cluster.shutdown(timeout=opts.timeout)
        finally:
            rss = bench.sampler.end()
    nodes = read_results(bench.out, tag, WORKERS, 60)
    out = summarize(nodes, t0, n)
    dropped = report["inputs"]["input"]["remainder_rows_per_epoch"]
    out.update(train_call_s=round(t_train - t0, 2), rows_fed=report["inputs"]["input"]["rows_fed"],
               remainder_dropped=dropped, rss=rss, phases=phases(report),
               breakdown=breakdown(report, nodes, t0, t_train, t_end, timeline, n),
               check=check(out["consumed"], expected) if not dropped else f"{dropped} remainder rows dropped")
    bench.log(f"(a) tfos, {kind} RDD: {out['rows_per_s']:,} rows/s ({out['seconds']:.1f}s, train() "
              f"{out['train_call_s']:.1f}s) [{out['check']}]; load {os.getloadavg()[0]:.1f}")
    bench.log(f"(a) tfos, {kind} RDD, where it went: {breakdown_text(out['breakdown'])}")
    return out


# ---- the measurement -------------------------------------------------------------------------------
def a_training(bench: Bench, sc: Any, n: int, expected: dict) -> dict:
    """Measurement (a) for ``n`` rows: the ``compare`` result entries ``a_bound_in_memory`` and, per kind,
    ``a_cached`` (best tfos run, with the cache's size and Spark's read of it) or ``a_tfos`` /
    ``a_bound`` / ``a_baseline`` (computed, as (a) always reported them)."""
    opts = bench.opts
    kinds = opts.a_inputs
    images, _ = mnist()
    rows = list(make_rows(range(min(n, len(images)))))  # materialised once, untimed
    cached = None
    cache_info: dict = {}
    bench.log(f"(a) {n:,} rows ({', '.join(kinds)} RDD), {opts.repeats} round(s), alternating with the bounds")
    timeline = CpuTimeline(bench.marker, bench.out)
    timeline.start()
    mem_bounds: list[dict] = []
    made_bounds: list[dict] = []
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    reads: list[dict] = []
    baselines: list[dict] = []
    try:
        if "cached" in kinds:
            with Watchdog(opts.timeout, "(a) caching the RDD", sc):
                cached, cache_info = cache_rdd(bench.log, "(a)", bench.index_rdd(sc, n).mapPartitions(make_rows), n)
        for i in range(opts.repeats):
            mem_bounds.append(bound_in_memory(bench, rows, n, expected))
            if "cached" in kinds:
                with Watchdog(opts.timeout, "(a) reading the cache", sc):
                    reads.append(read_cache(bench, cached, n))
                runs["cached"].append(tfos_run(bench, sc, cached, n, expected, f"a-cached-{n}-{i}", "cached",
                                               timeline))
            if "computed" in kinds:
                made_bounds.append(bound_made(bench, n, expected))
                runs["computed"].append(tfos_run(bench, sc, bench.index_rdd(sc, n).mapPartitions(make_rows), n,
                                                 expected, f"a-{n}-{i}", "computed", timeline))
                baselines.append(bench.a_baseline(sc, n, i))
    finally:
        timeline.stop()
        if cached is not None:
            cached.unpersist()
    res: dict[str, Any] = {"a_bound_in_memory": best_of(mem_bounds)}
    bound = res["a_bound_in_memory"]["rows_per_s"]
    if "cached" in kinds:
        best = best_of(runs["cached"])
        best.update(cache=cache_info, cache_read=min(reads, key=lambda r: r["seconds"]),
                    cache_read_runs=[r["rows_per_s"] for r in reads],
                    breakdowns=[r["breakdown"] for r in runs["cached"]])
        res["a_cached"] = best
        bench.log(f"(a) cached RDD, best of {opts.repeats}: tfos {best['rows_per_s']:,} rows/s, bound (rows in "
                  f"memory) {bound:,} rows/s, ratio {best['rows_per_s'] / bound:.2f}; "
                  f"{round_ratios(best['runs'], res['a_bound_in_memory']['runs'])}")
    if "computed" in kinds:
        best = best_of(runs["computed"])
        best["breakdowns"] = [r["breakdown"] for r in runs["computed"]]
        res.update(a_tfos=best, a_bound=best_of(made_bounds), a_baseline=best_of(baselines))
        bench.log(f"(a) computed RDD, best of {opts.repeats}: tfos {best['rows_per_s']:,} rows/s, bound (rows in "
                  f"memory) {bound:,} rows/s, ratio {best['rows_per_s'] / bound:.2f}; bound (made + consumed) "
                  f"{res['a_bound']['rows_per_s']:,} rows/s, ratio {best['rows_per_s'] / res['a_bound']['rows_per_s']:.2f}")
    return res
