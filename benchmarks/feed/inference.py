"""Measurement (d) of ``feed_throughput compare``: ``cluster.inference(rdd)`` against a direct
``rdd.mapPartitions`` running the same numpy model on the same rows, for each kind of input in
``--d-inputs``:

* ``cached``: the Python rows are made once, cached and materialised (``count()``) before any
  timing, so both paths pay only Spark's read of the cache (unpickling the rows) and their own work;
* ``computed``: the rows are made inside the map stage of each job (``make_rows`` over
  ``sc.range``), so both paths also pay the generation.

One TF cluster serves every run. Runs alternate direct / tfos for each kind in turn, ``--repeats``
times; the best run of each path counts, and the ratio is taken per kind from those best runs.
Both paths end in the same ``mapPartitions(count_and_sum).collect()``; outputs and the sum of
the predictions must agree."""

from __future__ import annotations

import os
from functools import partial
from typing import TYPE_CHECKING, Any

from benchmarks.feed.data import make_rows
from benchmarks.feed.harness import WORKERS, Watchdog, cache_rdd, cpu_text, read_results, timed, wait_ready
from benchmarks.feed.workloads import count_and_sum, main_d, predict_partition

if TYPE_CHECKING:
    from benchmarks.feed.compare import Bench

INPUTS = ("cached", "computed")


def parse_inputs(text: str) -> list[str]:
    """``--d-inputs``: a comma-separated subset of ``cached,computed`` (in that order)."""
    import argparse

    kinds = {s.strip() for s in text.split(",") if s.strip()}
    if not kinds or kinds - set(INPUTS):
        raise argparse.ArgumentTypeError(f"--d-inputs takes a comma-separated subset of {','.join(INPUTS)}")
    return [k for k in INPUTS if k in kinds]


def _one_run(bench: Bench, cluster: Any, rdd: Any, n: int, bs: int) -> dict:
    """One direct run followed by one tfos run: their seconds, CPU per row and the check."""
    direct_s, direct_cpu, direct = timed(
        bench.marker, bench.out, n, lambda: rdd.mapPartitions(partial(predict_partition, bs)).mapPartitions(count_and_sum).collect())
    tfos_s, tfos_cpu, ours = timed(bench.marker, bench.out, n, lambda: cluster.inference(rdd).mapPartitions(count_and_sum).collect())
    d_rows, d_sum = (sum(x) for x in zip(*direct, strict=True))
    t_rows, t_sum = (sum(x) for x in zip(*ours, strict=True))
    check = {"outputs": {"direct": d_rows, "tfos": t_rows}, "prediction_sum": {"direct": d_sum, "tfos": t_sum},
             "ok": d_rows == t_rows == n and d_sum == t_sum}
    return {"direct_s": direct_s, "tfos_s": tfos_s, "cpu_us_per_row": {"direct": direct_cpu, "tfos": tfos_cpu},
            "check": check}


def d_inference(bench: Bench, sc: Any, n: int) -> dict:
    """Measurement (d) for ``n`` rows: ``{kind: figures}`` for each kind of input, plus the RSS peaks."""
    opts = bench.opts
    tag = f"d-{n}"
    bs, repeats, kinds = opts.batch_size, opts.repeats, opts.d_inputs
    computed = bench.index_rdd(sc, n).mapPartitions(make_rows)
    bench.log(f"(d) inference of {n:,} rows ({', '.join(kinds)}), {repeats} time(s) each, alternating: direct "
              f"rdd.mapPartitions(numpy model) and tfos cluster.inference(rdd) -> batches({bs}) -> numpy model -> "
              f"batch_results")
    rdds: dict[str, Any] = {}
    out: dict[str, Any] = {}
    times: dict[str, dict[str, list[float]]] = {k: {"direct": [], "tfos": []} for k in kinds}
    checks: dict[str, list[dict]] = {k: [] for k in kinds}
    with Watchdog(opts.timeout * repeats * len(kinds), "(d) inference", sc):
        try:
            for kind in kinds:
                if kind == "cached":
                    rdds[kind], out[kind] = cache_rdd(bench.log, "(d)", bench.index_rdd(sc, n).mapPartitions(make_rows), n)
                else:
                    rdds[kind], out[kind] = computed, {}
            with bench.tf_cluster(sc, main_d, bench.node_args(tag)) as cluster:
                wait_ready(bench.out, tag, WORKERS, 120, cluster)
                bench.sampler.begin(tag)
                try:
                    for i in range(repeats):
                        for kind in kinds:
                            run = _one_run(bench, cluster, rdds[kind], n, bs)
                            direct_s, tfos_s, check = run["direct_s"], run["tfos_s"], run["check"]
                            times[kind]["direct"].append(direct_s)
                            times[kind]["tfos"].append(tfos_s)
                            checks[kind].append(dict(check, cpu_us_per_row=run["cpu_us_per_row"]))
                            bench.log(f"(d) {kind} run {i + 1}: direct {n / direct_s:,.0f} rows/s ({direct_s:.1f}s), "
                                      f"tfos {n / tfos_s:,.0f} rows/s ({tfos_s:.1f}s), ratio {direct_s / tfos_s:.2f} "
                                      f"[outputs {check['outputs']['tfos']:,} and {check['outputs']['direct']:,}; "
                                      f"prediction sums {'equal' if check['ok'] else 'DIFFER'}]; CPU us/row "
                                      f"{cpu_text(run['cpu_us_per_row'])}; load {os.getloadavg()[0]:.1f}")
                    cluster.shutdown(timeout=opts.timeout)
                finally:
                    rss = bench.sampler.end()
        finally:
            if "cached" in rdds:
                rdds["cached"].unpersist()
    nodes = read_results(bench.out, tag, WORKERS, 60)
    for kind in kinds:
        direct_s, tfos_s = times[kind]["direct"], times[kind]["tfos"]
        out[kind].update(direct_s=[round(x, 2) for x in direct_s], tfos_s=[round(x, 2) for x in tfos_s],
                         direct_rows_per_s=round(n / min(direct_s)), tfos_rows_per_s=round(n / min(tfos_s)),
                         rate=f"best of {repeats}", runs=checks[kind],
                         check="ok" if all(c["ok"] for c in checks[kind]) else "MISMATCH")
        bench.log(f"(d) {kind}, best of {repeats}: tfos {out[kind]['tfos_rows_per_s']:,} rows/s, direct "
                  f"{out[kind]['direct_rows_per_s']:,} rows/s, ratio "
                  f"{out[kind]['tfos_rows_per_s'] / out[kind]['direct_rows_per_s']:.2f} [{out[kind]['check']}]")
    out.update(rows_per_node=[nd["rows"] for nd in nodes], rss=rss)
    return out
