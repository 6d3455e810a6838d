"""Driver side of a training feed without a shuffle: one ordinary Spark job over the inputs'
partitions, whose tasks send every shard straight to its node's feed hub.

:func:`run_direct` starts the job (:func:`~tfos.feed.direct_task.send_partition` per partition,
every input in one job) and follows the hubs' reports on the feed's progress server. It
returns the hubs' statistics once every hub has fed its last epoch or stopped early; when
every hub stopped early (``terminate()``), it cancels the job, so partitions not yet started
are never computed. A hub or a feed task that fails cancels the job at once (its report reaches
``on_task_error``); the caller turns what went wrong into a :class:`FeedJobError`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from tfos.feed import direct_task
from tfos.feed.errors import FeedError, FeedTimeout
from tfos.feed.hub_link import HubLink
from tfos.feed.plans import DirectPlan
from tfos.feed.progress import ProgressServer

logger = logging.getLogger("tfos.feed")

POLL_SECS = 0.05
JOB_END_WAIT = 30.0
LATE_REPORT_SECS = 3.0  # how long a feed task's error waits for the hubs' reports that would explain it
ENDED = ("done", "terminated", "failed", "cancelled")


def run_direct(sc: Any, inputs: list[tuple[str, Any]], plans: list[DirectPlan], server: ProgressServer, *,
               group: str, failures: list[str], failure_known: Callable[[], bool] | None,
               on_plan: Callable[[list], None]) -> list[dict]:
    """Feed ``inputs`` through the hubs (see the module doc); returns one statistics dict per hub
    (as the shuffle feed's feed tasks report them)."""
    hubs = plans[0].hubs
    names = [q for q, _ in inputs]
    feed_id = plans[0].feed_id
    timeout = max(p.feed_timeout for p in plans)
    sent = []
    for (_, data), plan in zip(inputs, plans, strict=True):
        # set before the function is pickled (mapInArrow pickles it at once): where this input's
        # partitions start in the job's stage (several inputs are one union), and how many it has
        plan.partition_offset = sum(r.getNumPartitions() for r in sent)
        if hasattr(data, "mapInArrow"):  # a DataFrame: its Arrow batches as Spark hands them over
            plan.num_partitions = 0  # known once planned: the hubs are told when the job ended
            rdd = data.mapInArrow(partial(direct_task.send_arrow, plan), "line string").rdd.map(_line)
        else:
            plan.num_partitions = data.getNumPartitions()
            rdd = data.mapPartitionsWithIndex(partial(direct_task.send_partition, plan))
        sent.append(rdd)
    counts = [r.getNumPartitions() for r in sent]
    job_rdd = sent[0] if len(sent) == 1 else sc.union(sent)
    outcome: dict[str, Any] = {}

    description = sc.getLocalProperty("spark.job.description") or f"tfos: feeding {'/'.join(names)}"

    def run_job() -> None:
        try:  # a new thread has no job group of its own: without it the job could not be cancelled
            sc.setJobGroup(group, description, interruptOnCancel=True)
            outcome["lines"] = job_rdd.collect()
        except BaseException as exc:  # noqa: BLE001 - handed to the driver thread
            outcome["error"] = exc

    job = threading.Thread(target=run_job, name=f"tfos-feed-{feed_id}", daemon=True)
    job.start()
    planned = False
    last_rows: dict[str, int] = {}
    last_change = time.monotonic()
    failed_at = None
    announced = False
    while True:
        infos = server.infos()
        told = {(q, k): infos.get((f"{feed_id}:{q}", k), {}).get(q, {}) for q in names for k in range(len(hubs))}
        if failures and not all(t.get("state") in ("done", "terminated") for t in told.values()):
            # a feed task that found its node gone may only be late: the node stopped reading and
            # exited, and its hub's last report is on its way. Wait for it a moment, else fail.
            failed_at = failed_at or time.monotonic()
            if time.monotonic() - failed_at > LATE_REPORT_SECS:
                _cancel(sc, group, job)
                raise FeedError(failures[0])
        if not planned and all(any("shard_sizes" in told[q, k] for k in range(len(hubs))) for q in names):
            planned = True
            sizes = [next(told[q, k]["shard_sizes"] for k in range(len(hubs)) if "shard_sizes" in told[q, k])
                     for q in names]
            on_plan([[sizes[qi][k] for qi in range(len(names))] for k in range(len(hubs))])
        if all(t.get("state") in ENDED for t in told.values()):
            if all(t.get("state") == "done" for t in told.values()):
                job.join(JOB_END_WAIT)  # every partition ended at every hub: its tasks are returning
            if job.is_alive():
                logger.info("feed %s: every node stopped reading; cancelling the rest of the input", feed_id)
                _cancel(sc, group, job)
            if any(t.get("state") in ("failed", "cancelled") for t in told.values()):
                raise FeedError(failures[0] if failures else "a node's feed hub failed: " + ", ".join(
                    f"{hubs[k]['node']} ({q!r}: {t.get('state')})" for (q, k), t in told.items()
                    if t.get("state") in ("failed", "cancelled")))
            if failures:
                logger.info("feed %s: after every node stopped reading, a feed task said: %s", feed_id, failures[0])
            return _statistics(hubs, names, told, outcome.get("lines") or [])
        if "error" in outcome:
            raise outcome["error"]
        if "lines" in outcome and not announced:
            announced = True
            _announce_job_end(plans, counts, outcome["lines"])
        if failure_known is not None and failure_known():
            _cancel(sc, group, job)
            raise FeedError("a node of the cluster failed while it was being fed (the cluster names it)")
        rows = server.rows()
        if rows != last_rows:
            last_rows, last_change = rows, time.monotonic()
        elif time.monotonic() - last_change > timeout + JOB_END_WAIT:
            waiting = sorted({hubs[k]["node"] for (q, k), t in told.items() if t.get("state") not in ENDED})
            _cancel(sc, group, job)
            raise FeedTimeout(f"no rows were fed for {time.monotonic() - last_change:.0f}s (feed_timeout "
                              f"{timeout:g}s): {', '.join(waiting)} did not finish reading "
                              f"{'/'.join(map(repr, names))} (is main_fun reading its DataFeed?)")
        time.sleep(POLL_SECS)


def _line(row: Any) -> str:
    return row[0]


def _announce_job_end(plans: list[DirectPlan], counts: list[int], lines: list[str]) -> None:
    """The job ended: tell the hubs how many partitions an input had where they did not know (a
    DataFrame's) and which partitions no feed task ran for (Spark runs no Python for an empty
    DataFrame partition), so they count those as empty instead of waiting for them."""
    ran: dict[str, set[int]] = {}
    for line in lines:
        stats = json.loads(line)
        ran.setdefault(stats["qname"], set()).add(int(stats["partition"]))
    for plan, count in zip(plans, counts, strict=True):
        unsent = sorted(set(range(count)) - ran.get(plan.qname, set()))
        if unsent or not plan.num_partitions:
            logger.debug("feed %s: input %r had %d partitions, no feed task ran for %s", plan.feed_id, plan.qname,
                         count, unsent)
            _tell_hubs(plan, lambda k, plan=plan, count=count, unsent=unsent: {
                **plan.hello(-1, k, 0), "job_ended": count, "empty": unsent})


def cancel_hubs(plan: DirectPlan, reason: str, timeout: float = 5.0) -> None:
    """Tell every hub the driver gave feed ``plan.feed_id`` up (best effort, in parallel): a node that was
    fed nothing yet stays ready for a later feed; one inside an epoch fails its DataFeed."""
    _tell_hubs(plan, lambda k: {"cancel": True, "reason": reason[:2000]}, timeout)


def _tell_hubs(plan: DirectPlan, message: Callable[[int], dict], timeout: float = 5.0) -> None:
    """Send ``message(k)`` (about feed ``plan.feed_id``) to every hub ``k`` over an authenticated link, in
    parallel."""
    def tell(k: int, hub: dict) -> None:
        try:
            HubLink(hub, {"feed": plan.feed_id, **message(k), "driver": True}, plan.secret,
                    timeout).close()
        except Exception as exc:  # noqa: BLE001 - its node may be gone already
            logger.debug("could not tell %s about feed %s: %s", hub["node"], plan.feed_id, exc)

    threads = [threading.Thread(target=tell, args=(k, hub), daemon=True) for k, hub in enumerate(plan.hubs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 1.0)


def _cancel(sc: Any, group: str, job: threading.Thread) -> None:
    try:
        sc.cancelJobGroup(group)
    except Exception:  # noqa: BLE001 - the SparkContext may be stopping
        pass
    job.join(JOB_END_WAIT)


def _statistics(hubs: list[dict], names: list[str], told: dict, lines: list[str]) -> list[dict]:
    """Per hub, what the shuffle feed's feed tasks report (``shard``, ``node``, sizes, per-input states)."""
    tasks = [json.loads(line) for line in lines]
    shards = []
    for k, hub in enumerate(hubs):
        facts = [told[q, k] for q in names]
        sizes = [f.get("shard_sizes") or [0] * len(hubs) for f in facts]
        shards.append({
            "shard": k, "node": hub["node"], "route": "direct",
            "rows_in_shard": [f.get("rows_in_shard", 0) for f in facts],
            # what the hub wrote to local disk, per input: chunks beyond what it holds in memory
            "spilled_bytes": [f.get("spilled_bytes", 0) for f in facts],
            "all_shard_sizes": [[sizes[qi][j] for qi in range(len(names))] for j in range(len(hubs))],
            "rows_per_epoch": [f.get("rows_per_epoch") or 0 for f in facts],
            "inputs": {q: {"state": f.get("state"), "rows": f.get("rows", 0),
                           "first_batch_at": f.get("first_batch_at")} for q, f in zip(names, facts, strict=True)},
            "partitions_sent": sum(1 for t in tasks if t.get("complete")),
            # how the feed tasks reached this hub: its Unix socket from its own host, else TCP
            "links": {"unix_socket": (local := sum(1 for t in tasks if hub["node"] in t.get("unix_socket", []))),
                      "tcp": len(tasks) - local},
        })
    return shards
