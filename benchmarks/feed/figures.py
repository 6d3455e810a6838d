"""Figures of one measurement of ``feed_throughput compare``, from the TF nodes' JSON files and the
feed report: rate and checksums (:func:`summarize`, :func:`check`), the best of several runs
(:func:`best_of`) and where a ``train`` call's time went (:func:`phases`)."""

from __future__ import annotations


def summarize(nodes: list[dict], t0: float, expected_rows: int) -> dict:
    """Rows and checksums consumed by ``nodes``, and the rate from ``t0`` to the last row consumed."""
    consumed = {k: sum(nd[k] for nd in nodes) for k in ("rows", "label_sum", "pixel_sum")}
    t_end = max(nd["t_last"] for nd in nodes if nd.get("t_last")) if any(nd.get("t_last") for nd in nodes) else t0
    seconds = max(t_end - t0, 1e-6)
    return {"seconds": round(seconds, 2), "rows_per_s": round(consumed["rows"] / seconds), "consumed": consumed,
            "rows_per_node": [nd["rows"] for nd in nodes],
            "tf_ru_maxrss_mb": [round(nd["ru_maxrss_mb"]) for nd in nodes]}


def best_of(runs: list[dict]) -> dict:
    """The fastest of ``runs`` (each with ``rows_per_s``), with every run's rate under ``runs`` and,
    for (c), the largest RSS peaks seen in any of them."""
    out = dict(max(runs, key=lambda r: r["rows_per_s"]))
    out["runs"] = [r["rows_per_s"] for r in runs]
    rsses = [r["rss"] for r in runs if r.get("rss")]
    if rsses:
        out["rss"] = {g: ({k: max(r[g][k] for r in rsses) for k in rsses[0][g]} if isinstance(rsses[0][g], dict)
                          else max(r[g] for r in rsses)) for g in rsses[0]}
    return out


def round_ratios(ours: list[float], theirs: list[float]) -> str:
    """Each round's ratio (ours / theirs, measured back to back) and their median: how far the best-of
    verdict depends on the host's moment (on a shared 2-core host a path's speed swings 20-40% between
    rounds)."""
    ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True) if b)
    if not ratios:
        return "no rounds"
    mid = len(ratios) // 2
    median = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
    per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(ours, theirs, strict=True) if b)
    return f"per round {per_round}; median {median:.2f}"


def phases(report: dict) -> dict:
    """Where a ``train`` call's time went, from its report: each barrier task spilling its shard,
    agreeing the shard sizes with the others, and feeding it; the rest of the call (``map_s``) is
    the map stage that makes, encodes and routes the rows, the shuffle, and the barrier stage's start."""
    tasks = [shard.get("spill_seconds", 0) + shard.get("agree_seconds", 0) + shard.get("feed_seconds", 0)
             for shard in report["shards"]]
    return {"map_s": round(report["seconds"] - max(tasks, default=0), 2),
            "spill_s": [shard.get("spill_seconds") for shard in report["shards"]],
            "agree_s": [shard.get("agree_seconds") for shard in report["shards"]],
            "feed_s": [shard.get("feed_seconds") for shard in report["shards"]]}


def check(consumed: dict, expected: dict) -> str:
    diffs = [k for k in ("rows", "label_sum", "pixel_sum") if consumed.get(k) != expected[k]]
    return "rows and checksums ok" if not diffs else f"MISMATCH in {diffs}: {consumed} vs {expected}"


