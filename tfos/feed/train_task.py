"""Training, feed side: the shard feed task (a barrier stage of exactly ``num_workers`` tasks,
one per worker executor).

:func:`feed_shard` claims the local TF node, spills its shard to local disk, exchanges the
shard sizes with the other feed tasks through the driver (every worker then feeds the same
rows per epoch, :func:`~tfos.feed.sharding.agreed_rows`), and feeds every named input to the
node in its own thread and connection, epoch after epoch, from the spill file
(:func:`feed_input`). :func:`feed_shard_arrow` and :func:`feed_rows_arrow` are its
``mapInArrow`` forms. A TF process that dies or raises while being fed fails the task within
a few seconds with an error naming the node; one that called ``terminate()`` or finished
``main_fun`` ends it quietly.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from tfos.feed import arrow_codec as codec
from tfos.feed import channel as ch
from tfos.feed.claims import TaskAttempt, claim_node
from tfos.feed.errors import FeedError, FeedTerminated, PeerGone
from tfos.feed.plans import TrainPlan
from tfos.feed.progress import ProgressReporter, exchange_sizes, report_error
from tfos.feed.registry import pick_local_node
from tfos.feed.sharding import SHARD_COLUMN, agreed_rows
from tfos.feed.spill import SpillFile, reap_spills, spill_dir
from tfos.feed.targets import NodeTarget, open_feed

logger = logging.getLogger("tfos.feed")


def _agree(plan: TrainPlan, shard: int, sizes: list[int]) -> list[list[int]]:
    """Every shard's sizes (``[shard][input]``), exchanged with the other feed tasks through the
    driver (:func:`exchange_sizes`); waits at most ``feed_timeout``."""
    if plan.progress is None:
        raise FeedError("the feed plan has no driver address to exchange the shard sizes with")
    try:
        got = exchange_sizes(plan.progress, plan.feed_id, shard, plan.num_workers, sizes, plan.feed_timeout)
    except (OSError, ValueError, KeyError) as exc:
        raise FeedError(f"feed task {shard} could not exchange shard sizes with the driver at "
                        f"{plan.progress[0]}:{plan.progress[1]}: {exc}") from exc
    missing = [k for k, x in enumerate(got) if x is None]
    if missing:
        raise FeedError(f"feed task {shard} waited {plan.feed_timeout:.0f}s (feed_timeout) for the feed tasks of "
                        f"shards {missing} to read their shards and report their sizes")
    return got


def feed_shard(plan: TrainPlan, pairs: Iterable[tuple[int, tuple]]) -> Iterator[str]:
    """Barrier ``mapPartitions`` function: feed one shard of every input to the local TF node.

    Yields one JSON line of statistics for the driver.
    """
    from pyspark import BarrierTaskContext

    shard = BarrierTaskContext.get().partitionId()
    task = TaskAttempt.current(shard)
    directory = None
    spills: list[SpillFile] = []
    reporter = None
    claim = None
    target = None
    try:
        target = NodeTarget(pick_local_node(plan.cluster_id, shard))
        claim = claim_node(target, plan, task)
        reap_spills()
        directory = spill_dir()
        spills.extend(SpillFile(directory, f"{i}.arrows") for i in range(len(plan.qnames)))
        began = time.monotonic()
        for _, (qi, rows, payload) in pairs:
            spills[qi].append(payload, rows)
        for spill in spills:
            spill.finish()
        spilled = time.monotonic()
        all_sizes = _agree(plan, shard, [s.rows for s in spills])
        agreed = time.monotonic()
        targets = [agreed_rows(plan.remainder, [sizes[qi] for sizes in all_sizes]) for qi in range(len(spills))]
        if plan.progress:
            reporter = ProgressReporter(plan.progress, {"feed": plan.feed_id, "shard": shard, "node": target.name})
        results = _feed_inputs(plan, target, shard, spills, targets, reporter)
        stats = {"shard": shard, "node": target.name, "rows_in_shard": [s.rows for s in spills],
                 "all_shard_sizes": all_sizes, "rows_per_epoch": targets, "inputs": results,
                 "spill_seconds": round(spilled - began, 3), "agree_seconds": round(agreed - spilled, 3),
                 "feed_seconds": round(time.monotonic() - agreed, 3)}
        yield json.dumps(stats)
    except Exception as exc:
        where = f"feed task of shard {shard}" + (f" ({target.name})" if target is not None else "") + \
            f" on {socket.gethostname()}"
        report_error(plan.progress, {"feed": plan.feed_id, "shard": shard},
                     f"{type(exc).__name__}: {exc}" if _names_shard_and_node(str(exc), shard, target) else
                     f"{type(exc).__name__}: {where}: {exc}")
        raise
    finally:
        if reporter is not None:
            reporter.close()
        for spill in spills:
            spill.close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        if claim is not None:
            claim.release()


def _names_shard_and_node(message: str, shard: int, target: NodeTarget | None) -> bool:
    """Whether an error message already names the shard and the node it was fed to."""
    return f"shard {shard}" in message and (target is None or target.name in message)


def feed_shard_arrow(plan: TrainPlan, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Barrier ``mapInArrow`` function over the routed chunks ``(shard, q, rows, payload, ...)``:
    :func:`feed_shard`, with a check that Spark routed exactly this task's shard here."""
    from pyspark import BarrierTaskContext

    shard = BarrierTaskContext.get().partitionId()

    def pairs() -> Iterator[tuple[int, tuple]]:
        for batch in batches:
            shards, qs, rows, payloads = (batch.column(i) for i in range(4))
            for k, q, n, payload in zip(shards.to_pylist(), qs.to_pylist(), rows.to_pylist(), payloads,
                                        strict=True):
                if k != shard:
                    raise FeedError(f"feed task {shard} received a chunk of shard {k}: Spark's hash routing of "
                                    f"the shards did not hold (please report this)")
                yield k, (q, n, payload.as_buffer())

    yield from _as_line_batches(feed_shard(plan, pairs()))


def _as_line_batches(lines: Iterable[str]) -> Iterator[pa.RecordBatch]:
    """The statistics lines of :func:`feed_shard` as ``mapInArrow`` output (``line string``)."""
    for line in lines:
        yield pa.RecordBatch.from_arrays([pa.array([line], pa.string())], names=["line"])


def feed_rows_arrow(plan: TrainPlan, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Barrier ``mapInArrow`` function over a DataFrame's own rows routed by shard (one input):
    :func:`feed_shard`, each batch checked to belong to this task's shard and fed as it came."""
    from pyspark import BarrierTaskContext

    shard = BarrierTaskContext.get().partitionId()

    def pairs() -> Iterator[tuple[int, tuple]]:
        for batch in batches:
            if not batch.num_rows:
                continue
            idx = batch.schema.get_field_index(SHARD_COLUMN)
            shards = batch.column(idx).to_numpy()
            if (shards != shard).any():
                raise FeedError(f"feed task {shard} received rows of shard {int(shards[shards != shard][0])}: "
                                f"Spark's hash routing of the shards did not hold (please report this)")
            keep = [i for i in range(batch.num_columns) if i != idx]
            rows = pa.RecordBatch.from_arrays([batch.column(i) for i in keep],
                                              schema=pa.schema([batch.schema.field(i) for i in keep]))
            yield shard, (0, rows.num_rows, codec.to_ipc(rows))

    yield from _as_line_batches(feed_shard(plan, pairs()))


def _feed_inputs(plan: TrainPlan, target: NodeTarget, shard: int, spills: list[SpillFile], targets: list[int],
                 reporter: ProgressReporter | None) -> dict:
    cancel = threading.Event()
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[plan.qnames[i]] = feed_input(plan, target, shard, i, spills[i], targets[i], reporter, cancel)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the task thread
            errors.append(exc)
            cancel.set()

    if len(spills) == 1:
        run(0)
    else:
        threads = [threading.Thread(target=run, args=(i,), name=f"tfos-feed-{q}", daemon=True)
                   for i, q in enumerate(plan.qnames)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        real = [e for e in errors if not isinstance(e, FeedTerminated)]
        raise (real or errors)[0]
    return results


def feed_input(plan: TrainPlan, target: NodeTarget, shard: int, qi: int, spill: SpillFile, rows_per_epoch: int,
                reporter: ProgressReporter | None, cancel: threading.Event) -> dict:
    """Feed one input of this shard (``qi``) to ``target`` from its spill file, ``rows_per_epoch`` rows
    per epoch; returns ``{"state": "done" | "terminated", "rows": fed, "first_batch_at": time.time() of
    the first rows sent (in the node's socket, ready for it to read) or None}``."""
    qname = plan.qnames[qi]
    timeout = plan.feed_timeout
    fed = 0
    what = f"shard {shard} of input {qname!r}"
    state = "done"
    try:
        conn = open_feed(target, qname, mode="train", partition=shard, feed_timeout=timeout, cancel=cancel,
                         extra={"epochs": plan.num_epochs, "rows_per_epoch": rows_per_epoch, "feed": plan.feed_id})
    except FeedTerminated as exc:
        logger.info("%s: not feeding %s: %s", target.name, what, exc)
        return {"state": "terminated", "rows": 0}
    data_done = False
    first_batch_at = None  # time.time() when the node had its first rows to read
    try:
        for epoch in range(plan.num_epochs):
            slow = (f"{target.name} to read more of {what} (epoch {epoch + 1}/{plan.num_epochs}): it stopped "
                    f"consuming; raise feed_timeout if a step can take longer")
            for payload, rows in spill.epoch(epoch, rows_per_epoch):
                conn.send(ch.DATA, payload, timeout=timeout, what=slow)
                if first_batch_at is None:
                    first_batch_at = time.time()
                fed += rows
                if reporter is not None:
                    reporter.add(qname, rows)
            if epoch == plan.num_epochs - 1:
                data_done = True
            conn.send_control(ch.END_EPOCH, {"epoch": epoch, "rows": rows_per_epoch}, timeout=timeout, what=slow)
        conn.send_control(ch.END_FEED if plan.end_feed else ch.END_PARTITION, {"rows": fed}, timeout=timeout,
                          what=f"{target.name} to read the end of {what}")
    except BaseException as exc:
        if data_done and isinstance(exc, PeerGone):
            state = "done"  # everything was delivered; the TF side left before reading the end marker
        else:
            err = target.explain(exc, qname, what, conn)
            if not isinstance(err, FeedTerminated):
                if err is exc:
                    raise
                raise err from exc
            logger.info("%s: stopped feeding %s after %d rows: %s", target.name, what, fed, err)
            state = "terminated"
    finally:
        conn.close()
    if reporter is not None:
        reporter.state(qname, state)
    return {"state": state, "rows": fed, "first_batch_at": first_batch_at}
