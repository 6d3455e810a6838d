"""The report of ``feed_throughput compare``: ratios and PASS/FAIL against the issue's targets
(:func:`evaluate`), one table per size, the targets table and one JSON line (:func:`print_report`)."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from benchmarks.feed.harness import WORKERS
from benchmarks.feed.training import breakdown_text

if TYPE_CHECKING:
    from benchmarks.feed.compare import Bench

TARGETS = {"a_vs_baseline": 4.0, "a_vs_bound": 0.70, "b_vs_baseline": 20.0, "b_vs_scan": 0.50,
           "c_growth_mb": 200.0, "d_vs_direct": 0.70}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def evaluate(results: dict[int, dict]) -> tuple[dict, list[tuple]]:
    """Ratios and PASS/FAIL per target; returns (figures, table rows)."""
    figures: dict[str, Any] = {}
    rows: list[tuple] = []

    def target(size: Any, name: str, value: float | None, goal: float, higher: bool = True) -> None:
        if value is None:
            verdict = "n/a"
        else:
            verdict = "PASS" if (value >= goal if higher else value < goal) else "FAIL"
        figures.setdefault(str(size), {})[name] = {"value": value, "target": goal, "verdict": verdict}
        rows.append((size, name, value, (">= " if higher else "< ") + f"{goal:g}", verdict))

    for n, res in results.items():
        a, base, bound = res.get("a_tfos"), res.get("a_baseline"), res.get("a_bound")
        b, d = res.get("b"), res.get("d")
        a_rate = a and a["rows_per_s"]
        base_rate = base and base["rows_per_s"]
        if a or base or bound:
            target(n, "(a) tfos / baseline", _ratio(a_rate, base_rate), TARGETS["a_vs_baseline"])
            target(n, "(a) tfos / single-process bound", _ratio(a_rate, bound and bound["rows_per_s"]),
                   TARGETS["a_vs_bound"])
        in_memory = res.get("a_bound_in_memory")
        for kind, run in (("cached", res.get("a_cached")), ("computed", a)):
            if run and in_memory:
                target(n, f"(a) tfos / bound over rows in memory, {kind} RDD",
                       _ratio(run["rows_per_s"], in_memory["rows_per_s"]), TARGETS["a_vs_bound"])
        if b:
            target(n, "(b) tfos DataFrame / (a) baseline", _ratio(b["rows_per_s"], base_rate), TARGETS["b_vs_baseline"])
            target(n, "(b) tfos DataFrame / mapInArrow scan", _ratio(b["rows_per_s"], b["scan_rows_per_s"]),
                   TARGETS["b_vs_scan"])
        for kind in _d_kinds(d):
            target(n, f"(d) tfos inference / direct mapPartitions, {kind} RDD",
                   _ratio(d[kind]["tfos_rows_per_s"], d[kind]["direct_rows_per_s"]), TARGETS["d_vs_direct"])
    sizes = sorted(results)
    names = {"a_tfos": "(a)", "a_cached": "(a) cached", "b": "(b)"}
    for phase in ("a_tfos", "a_cached", "b"):
        have = [n for n in sizes if results[n].get(phase, {}).get("rss")]
        for group in ("tf", "feed"):
            label = f"(c) {names[phase]} {'TF process' if group == 'tf' else 'feeding worker'} peak RSS growth, MB"
            if len(have) < 2:
                if have:
                    target("all", label, None, TARGETS["c_growth_mb"], higher=False)
                continue
            lo, hi = results[have[0]][phase]["rss"][group], results[have[-1]][phase]["rss"][group]
            growth = round(hi["peak_single_mb"] - lo["peak_single_mb"], 1)
            target(f"{have[0]:,}->{have[-1]:,}", label, growth, TARGETS["c_growth_mb"], higher=False)
            figures[f"{have[0]:,}->{have[-1]:,}"][label]["sum_over_processes_growth_mb"] = \
                round(hi["peak_sum_mb"] - lo["peak_sum_mb"], 1)
    return figures, rows


def _d_kinds(d: dict | None) -> list[str]:
    """The kinds of input (``cached``, ``computed``) measured in (d)."""
    return [k for k in ("cached", "computed") if d and k in d]


def _cpu_median(runs: list[dict], path: str) -> str:
    """Median CPU microseconds per row of ``path`` over (d)'s runs, per process group and summed."""
    per_run = [r["cpu_us_per_row"][path] for r in runs if r.get("cpu_us_per_row")]
    if not per_run:
        return "-"

    def median(values: list[float]) -> float:
        values = sorted(values)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    groups = {"tf": "TF process", "feed": "Spark Python worker", "jvm": "executor JVM"}
    parts = [f"{label} {median([r.get(g, 0.0) for r in per_run]):.1f}" for g, label in groups.items()]
    return ", ".join(parts) + f" (sum {median([sum(r.values()) for r in per_run]):.1f})"


def _rates(result: dict) -> str:
    return ", ".join(f"{r:,}" for r in result.get("runs", [result["rows_per_s"]]))


def print_report(bench: Bench, elapsed: float) -> None:
    results = bench.results
    print()
    for n, res in results.items():
        print(f"=== {n:,} rows, {res['partitions']} partitions, {WORKERS} workers, batch {bench.opts.batch_size} ===")
        lines = []
        if "a_cached" in res:
            ac = res["a_cached"]
            lines.append(("(a) tfos cached RDD -> DataFeed.next_batch", ac["rows_per_s"],
                          f"{ac['check']}; runs {_rates(ac)}; cache {ac['cache'].get('memory_mb')} MB in memory, "
                          f"{ac['cache'].get('disk_mb')} MB on disk"))
            lines.append(("(a) Spark alone reading the cache (count)", ac["cache_read"]["rows_per_s"],
                          f"runs {', '.join(f'{r:,}' for r in ac['cache_read_runs'])}; CPU us/row "
                          + ", ".join(f"{g} {us:g}" for g, us in ac["cache_read"]["cpu_us_per_row"].items())))
        if "a_bound_in_memory" in res:
            lines.append(("(a) bound: consumer alone, rows in memory", res["a_bound_in_memory"]["rows_per_s"],
                          f"runs {_rates(res['a_bound_in_memory'])}; CPU "
                          f"{res['a_bound_in_memory'].get('cpu_us_per_row')} us/row (best run)"))
        if "a_tfos" in res:
            lines.append(("(a) tfos RDD -> DataFeed.next_batch", res["a_tfos"]["rows_per_s"],
                          f"{res['a_tfos']['check']}; runs {_rates(res['a_tfos'])}"))
        if "a_baseline" in res:
            base = res["a_baseline"]
            lines.append(("(a) baseline: manager queue per row", base["rows_per_s"],
                          base["check"] + f"; runs {_rates(base)}"
                          + (f"; {base['consumed']['rows']:,} rows (capped)" if base["capped"] else "")))
        if "a_bound" in res:
            lines.append(("(a) single-process bound", res["a_bound"]["rows_per_s"],
                          f"runs {_rates(res['a_bound'])}; consume alone "
                          f"{res['a_bound']['consume_only_rows_per_s']:,} rows/s"))
        if "b" in res:
            b = res["b"]
            lines.append((f"(b) tfos DataFrame ({b['image_column']}) -> dataset", b["rows_per_s"],
                          f"{b['check']}; runs {_rates(b)}"))
            lines.append(("(b) Spark mapInArrow scan (cached)", b["scan_rows_per_s"],
                          f"runs {', '.join(f'{r:,}' for r in b['scan_runs'])}; cache {b['cached_mb']['memory']} MB "
                          f"in memory, {b['cached_mb']['disk']} MB on disk"))
        for kind in _d_kinds(res.get("d")):
            d = res["d"][kind]
            runs = " / ".join(f"{n / t:,.0f}" for t in d["tfos_s"])
            lines.append((f"(d) tfos cluster.inference, {kind} RDD", d["tfos_rows_per_s"],
                          f"{d['rate']}; {d['check']}; runs {runs}"))
            runs = " / ".join(f"{n / t:,.0f}" for t in d["direct_s"])
            lines.append((f"(d) direct mapPartitions, {kind} RDD", d["direct_rows_per_s"], f"{d['rate']}; runs {runs}"))
        for name, rate, note in lines:
            print(f"  {name:<44} {rate:>10,} rows/s   {note}")
        for kind in _d_kinds(res.get("d")):
            print(f"  CPU per row during (d), {kind} RDD (median of the runs, microseconds): "
                  + "; ".join(f"{path}: {_cpu_median(res['d'][kind]['runs'], path)}" for path in ("tfos", "direct")))
        for key, label in (("a_cached", "cached RDD"), ("a_tfos", "computed RDD")):
            for i, b in enumerate(res.get(key, {}).get("breakdowns", [])):
                print(f"  (a) {label}, run {i + 1}: {breakdown_text(b)}")
        for key, label in (("a_tfos", "(a) tfos"), ("b", "(b) tfos")):
            ph = res.get(key, {}).get("phases")
            if ph and res[key].get("route") == "direct":
                print(f"  {label:<9} train() {res[key]['train_call_s']}s through the feed hubs (no shuffle); first batch "
                      f"{res[key].get('first_batch_s')}s after train()")
            elif ph:
                print(f"  phases of {label:<9} train() {res[key]['train_call_s']}s: map stage, shuffle and barrier "
                      f"start {ph['map_s']}s; per barrier task: spill {ph['spill_s']}s, agree {ph['agree_s']}s, "
                      f"feed {ph['feed_s']}s")
        for key, label in (("a_tfos", "(a) tfos"), ("b", "(b) tfos"), ("d", "(d) tfos")):
            rss = res.get(key, {}).get("rss")
            if rss:
                print(f"  peak RSS during {label:<9} TF processes {rss['tf']['peak_sum_mb']:7.0f} MB "
                      f"(largest {rss['tf']['peak_single_mb']:.0f}), feeding Python workers "
                      f"{rss['feed']['peak_sum_mb']:.0f} MB (largest {rss['feed']['peak_single_mb']:.0f}), "
                      f"executor JVMs {rss['jvm']['peak_sum_mb']:.0f} MB")
    figures, rows = evaluate(results)
    print("\n=== targets ===")
    print(f"  {'size':<20} {'measure':<52} {'value':>9} {'target':>8}  verdict")
    for size, name, value, goal, verdict in rows:
        size_text = f"{size:,}" if isinstance(size, int) else str(size)
        value_text = "-" if value is None else f"{value:g}"
        print(f"  {size_text:<20} {name:<52} {value_text:>9} {goal:>8}  {verdict}")
    for size, entries in figures.items():
        for name, entry in entries.items():
            if "sum_over_processes_growth_mb" in entry:
                print(f"  {size:<20} {name.replace('peak RSS growth', 'sum over the group'):<52} "
                      f"{entry['sum_over_processes_growth_mb']:>9g}           (information)")
    failed = [f"{size}: {name}" for size, name, _, _, verdict in rows if verdict == "FAIL"]
    print(f"\nfailed targets: {'; '.join(failed) if failed else 'none'}")
    load = [round(x, 1) for x in os.getloadavg()]
    print(f"whole run: {elapsed:.0f}s; load average (1/5/15 min) at the start {bench.load_start}, at the end {load} "
          f"on {os.cpu_count()} CPUs")
    print(json.dumps({"bench": "feed_throughput", "workers": WORKERS, "batch_size": bench.opts.batch_size,
                      "argv": sys.argv[1:], "seconds": round(elapsed, 1), "cpus": os.cpu_count(),
                      "load_average": {"start": bench.load_start, "end": load},
                      "results": {str(k): v for k, v in results.items()},
                      "targets": figures, "failed": failed}))
