"""Driver side of the feed: the Spark jobs behind ``cluster.train``, ``cluster.inference`` and shutdown.

Public functions (called by ``tfos.cluster.cluster``):

``train(sc, data, *, cluster_id, num_workers, num_epochs=1, feed_timeout=600, qname="input",
job_group=None, end_feed=False, remainder="drop", chunk_rows=4096, chunk_bytes=4 MiB,
progress=True) -> dict``
    Feed ``data`` to the ``num_workers`` chief/worker nodes for ``num_epochs`` epochs and
    return a report. ``data`` is an RDD, a DataFrame, or a dict of named inputs
    (``{"train": rdd, "validation": df}``; each name is the ``qname_in`` of a DataFeed);
    a single RDD/DataFrame is fed as ``qname``. A DStream or a streaming DataFrame is fed
    micro-batch by micro-batch (one epoch each; a streaming DataFrame returns its
    ``StreamingQuery``). Every epoch ends with an end-of-epoch mark (``DataFeed.batches()`` /
    ``dataset()`` iterations end there). ``end_feed=True`` also ends the feed afterwards
    (``should_stop()``); by default, as in TensorFlowOnSpark, the feed stays open for further
    ``train`` calls until ``end_feed`` (cluster shutdown).

``inference(sc, data, *, cluster_id, num_workers=None, feed_timeout=600, qname="input",
job_group=None, output_schema=None, chunk_rows=4096) -> RDD | DataFrame``
    Lazily run ``data`` through the nodes: an RDD gives an RDD of exactly one output per
    input row, in input order within each partition; a DataFrame gives a DataFrame
    (``output_schema``, a DDL string or StructType, avoids an extra inference pass to infer it).

``end_feed(sc, *, cluster_id, num_workers, job_group=None, qnames=None, timeout=120) -> None``
    Tell every node's DataFeeds that no more data will come (``should_stop()`` becomes True);
    for ``cluster.shutdown``.

With the cluster's feed hubs (``hubs=``, as ``cluster.train`` passes them) no shuffle is
needed: :mod:`tfos.feed.direct_job` sends every partition's shards straight to the nodes. The
shuffle route below serves callers without hubs.

Exact epochs (training). Synchronous strategies hang when one worker runs out of batches
before the others, so every worker gets exactly the same number of rows per epoch:

1. One pass, no count: map tasks route row ``j`` of partition ``p`` to shard
   ``(p + j) mod num_workers`` (rotation) as Arrow chunks, through one shuffle (Spark's own for
   DataFrames, the shard computed in the JVM for a single DataFrame; PySpark's ``partitionBy``
   when an RDD is among the inputs). An RDD's rows are computed and converted once, nothing is
   persisted.
2. A barrier stage of exactly ``num_workers`` tasks (one per worker executor: parameter
   servers and evaluators keep their executors busy) feeds shard ``i`` to the node on its
   executor; each task spills its shard to local disk once and replays it per epoch, one
   thread and connection per named input, so inputs are read independently (Keras
   ``validation_freq`` etc. cannot deadlock).
3. Before feeding, the tasks exchange their shard sizes through the driver. Rotation gives every
   shard one row of each complete group of ``num_workers`` rows of a partition, so shards
   differ only by the partitions' last, incomplete groups: by at most one row per input
   partition. With ``remainder="drop"`` (default) every worker gets the smallest shard's rows
   per epoch and the surplus rows are left out, different rows each epoch; with
   ``remainder="wrap"`` every worker gets the largest shard's rows and the shorter shards
   repeat some rows. The driver logs the plan as soon as it is agreed, and the report has it.

Rows per worker may still differ from batch size multiples: with ``DataFeed.dataset(bs)``
every worker then ends each epoch with the same short batch (or none with
``drop_remainder=True``), so step counts stay equal.

Costs: the input is read (DataFrame) or computed (RDD) once, one shuffle of the
Arrow-encoded rows, local disk for one shard per worker executor. Epochs after the first
replay the local spill instead of recomputing the input.

Failure: a feed task that fails (its node died, a malformed row, a lost executor, a killed
Python worker) fails the whole feed job at once: Spark never retries a barrier result stage,
and the driver cancels the other tasks. ``train`` raises a :class:`FeedJobError` naming what
failed (the shard and node, or the task, stage and executor, and why); the nodes are then in the
middle of an epoch, so the cluster must fail too. A background clean-up job then removes what
the killed tasks left on the executors (their claims on the nodes, their spill files).

Early stop: a node's ``terminate()`` ends its shard feed task within about a second; when
all nodes terminated, the job ends and ``train`` returns.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import threading
import time
import uuid
from functools import partial
from typing import Any

import pyarrow as pa

from tfos.driver_address import driver_address
from tfos.feed import housekeeping, inference_task, sharding, train_task
from tfos.feed.chunking import DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_ROWS
from tfos.feed.direct_job import cancel_hubs, run_direct
from tfos.feed.errors import FeedError
from tfos.feed.plans import DirectPlan, InferencePlan, ShardPlan, TrainPlan
from tfos.feed.progress import ProgressServer
from tfos.feed.routing import routing_keys

logger = logging.getLogger("tfos.feed")


def _is_dataframe(data: Any) -> bool:
    try:
        from pyspark.sql import DataFrame
    except ImportError:
        return False
    return isinstance(data, DataFrame)


def _is_dstream(data: Any) -> bool:
    try:
        from pyspark.streaming import DStream
    except ImportError:
        return False
    return isinstance(data, DStream)


def _inputs(data: Any, qname: str) -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        if not data:
            raise ValueError("train(): the dict of named inputs is empty")
        items = list(data.items())
    else:
        items = [(qname, data)]
    from tfos.feed.registry import _check_name

    for name, value in items:
        _check_name("input name (qname)", name)
        if not (_is_dataframe(value) or hasattr(value, "mapPartitionsWithIndex")):
            raise TypeError(f"input {name!r}: expected an RDD or a DataFrame, got {type(value).__name__}")
    return items


class _JobGroup:
    """Run this thread's jobs in ``group`` and restore the previous group afterwards."""

    def __init__(self, sc: Any, group: str, description: str):
        self.sc, self.group, self.description = sc, group, description

    def __enter__(self) -> _JobGroup:
        sc = self.sc
        self.saved = {k: sc.getLocalProperty(k) for k in
                      ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")}
        sc.setJobGroup(self.group, self.description, interruptOnCancel=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        for key, value in self.saved.items():
            self.sc.setLocalProperty(key, value)


_ERROR_LINE = re.compile(r"tfos\.feed\.errors\.(\w+): ")
_BARRIER_TASK = re.compile(r"barrier task ResultTask\((\d+), (\d+)\) finished unsuccessfully\.?\s*([^\n]*)")
_LOST_TASK = re.compile(r"Lost task (\d+)\.\d+ in stage (\d+)\.\d+ \(TID \d+\) \(([^ )]+) executor ([^)]+)\): "
                        r"([^\n]*)")
_CANCELLED = re.compile(r"(Job \d+ cancelled[^\n]*)")
_NAMED_SHARD = re.compile(r"\bshard (\d+)\b")
_NAMED_NODE = re.compile(r"\b(?:chief|master|worker):\d+\b")


class FeedJobError(FeedError):
    """A Spark job of the feed failed. The message says which task (the feed task of a shard, or
    a task of an input stage), where and why, as far as the feed tasks or Spark told; ``task``
    (the shard or partition index), ``executor``, ``host`` and ``node`` (``worker:1``) carry what
    is known, for the cluster to name the failed node."""

    def __init__(self, message: str, *, task: int | None = None, executor: str | None = None,
                 host: str | None = None, node: str | None = None):
        super().__init__(message)
        self.task, self.executor, self.host, self.node = task, executor, host, node
        self.feed_task = False  # ``task`` is the shard of a feed task (not a partition of an input stage)
        self.rows_fed: dict[str, int] = {}  # per input, what the feed tasks had reported fed
        self.rows_per_epoch: dict[str, int] = {}  # per input, one epoch's rows over all workers (once agreed)
        self.told_by_task = False  # the message is the task's own feed error


def _feed_failure(exc: BaseException, what: str) -> FeedJobError:
    """A FeedJobError for a failed feed job: the feed task's own message when it raised a feed
    error, else which task failed (its shard, or partition and stage; its executor) and Spark's reason."""
    text = str(exc)
    lost = _LOST_TASK.search(text)
    barrier = _BARRIER_TASK.search(text)
    if barrier:  # the barrier stage is the feed stage: its task index is the shard
        task: int | None = int(barrier.group(2))
        where = f"the feed task of shard {task} (stage {barrier.group(1)})"
    elif lost:
        task = int(lost.group(1))
        where = f"task {task} of stage {lost.group(2)}"
    else:
        task, where = None, ""
    executor, host = (lost.group(4), lost.group(3)) if lost else (None, None)
    if executor:
        where += f" on executor {executor} ({host})"
    matches = list(_ERROR_LINE.finditer(text))
    if matches:
        m = matches[0]
        body = text[m.end():]
        end = len(body)
        for marker in ("\n\tat ", "\n\n\tat", "\nJVM stacktrace", "\n\nDriver stacktrace"):
            i = body.find(marker)
            if i >= 0:
                end = min(end, i)
        message = f"{what} failed: {m.group(1)}: {body[:end].strip()}"
    else:
        if lost:
            reason = lost.group(5).strip()
        elif barrier and barrier.group(3).strip():
            reason = barrier.group(3).strip()
        elif (cancelled := _CANCELLED.search(text)) is not None:
            reason = cancelled.group(1).strip()
        else:
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            reason = next((line for line in lines if "Exception" in line or "Error" in line),
                          lines[0] if lines else "") or type(exc).__name__
        message = f"{what} failed: {where or 'the Spark job'} failed: {reason[:2000]}"
    err = FeedJobError(message, task=task, executor=executor, host=host)
    err.feed_task, err.told_by_task = barrier is not None, bool(matches)
    return err


CLEANUP_TIMEOUT = 60.0
CLEANUP_NAMING_WAIT = 15.0  # how long a failure nothing explained waits for the clean-up to name the node


def _clean_up_after(sc: Any, group: str, cluster_id: str, n: int, feed_id: str) -> tuple[threading.Thread, dict]:
    """After a failed feed job, in the background: one barrier task per worker executor removes
    what the feed's killed tasks left (their claims on the nodes, their spill files; see
    :func:`housekeeping.clean_up_task`). Best effort, cancelled after :data:`CLEANUP_TIMEOUT`. Returns
    the thread and a dict that gets ``"nodes"`` (shard -> the node its killed task fed)."""
    cleanup_group = f"{group}-cleanup"
    found: dict[str, Any] = {}

    def run() -> None:
        try:
            with _JobGroup(sc, cleanup_group, f"tfos {cluster_id}: clean up after the failed feed {feed_id}"):
                rdd = sc.parallelize(range(n), n)
                lines = rdd.barrier().mapPartitions(partial(housekeeping.clean_up_task, cluster_id, feed_id)).collect()
            reports = [json.loads(line) for line in lines]
            found["nodes"] = {c["shard"]: c["node"] for r in reports for c in r["claims"]}
            removed = [p for r in reports for p in r["removed"]]
            logger.info("feed %s: removed what its killed tasks left: %s", feed_id, removed or "nothing")
        except Exception as exc:  # noqa: BLE001 - best effort; the next feed task cleans up too
            logger.info("feed %s: clean-up job did not run: %s", feed_id, str(exc).splitlines()[0] if str(exc) else exc)

    def watch() -> None:
        worker.join(CLEANUP_TIMEOUT)
        if worker.is_alive():
            try:
                sc.cancelJobGroup(cleanup_group)
            except Exception:  # noqa: BLE001 - the SparkContext may be stopping
                pass

    worker = threading.Thread(target=run, name=f"tfos-feed-cleanup-{feed_id}", daemon=True)
    worker.start()
    threading.Thread(target=watch, name=f"tfos-feed-cleanup-watch-{feed_id}", daemon=True).start()
    return worker, found


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def _tagged(df: Any) -> Any:
    from pyspark.sql import functions as F  # noqa: N812

    return df.withColumn(sharding.PARTITION_COLUMN, F.spark_partition_id())


def _chunks(data: Any, plan: ShardPlan) -> Any:
    """A DataFrame ``(shard, q, rows, payload)`` of the Arrow IPC chunks of DataFrame ``data``."""
    return _tagged(data).mapInArrow(partial(sharding.shard_arrow, plan), sharding.SHARD_SCHEMA_DDL)


def _chunk_pairs(data: Any, plan: ShardPlan) -> Any:
    """An RDD ``(shard, (q, rows, payload))`` of the Arrow IPC chunks of ``data`` (RDD or DataFrame)."""
    if _is_dataframe(data):
        return _chunks(data, plan).rdd.map(lambda r: (r[0], (r[1], r[2], r[3])))
    return data.mapPartitionsWithIndex(partial(sharding.shard_rows, plan))


def _routed_rows(df: Any, n: int) -> Any:
    """The rows of ``df`` themselves, each shard's in its partition: the shard of row ``j`` of
    partition ``p``, ``(p + j) mod n`` (:class:`ShardPlan`), is computed by Spark (``j``
    from the low 33 bits of ``monotonically_increasing_id``), so no Python touches the data
    before the feed task."""
    from pyspark.sql import functions as F  # noqa: N812

    row = F.monotonically_increasing_id().bitwiseAND(F.lit((1 << 33) - 1))
    shard = F.pmod(F.spark_partition_id().cast("bigint") + row, F.lit(n)).cast("int")
    return _routed(df.withColumn(sharding.SHARD_COLUMN, shard), n, sharding.SHARD_COLUMN)


def _routed(df: Any, n: int, shard_column: str = "shard") -> Any:
    """``df`` repartitioned by Spark so that partition ``k`` holds exactly the rows of shard ``k``."""
    from pyspark.sql import functions as F  # noqa: N812

    keys = F.array(*[F.lit(k).cast("bigint") for k in routing_keys(n)])
    return df.repartition(n, F.element_at(keys, F.col(shard_column) + 1))


def _run_feed(inputs: list[tuple[str, Any]], plans: list[ShardPlan], plan: TrainPlan,
              n: int) -> list[str]:
    """The feed job: chunks routed to ``n`` barrier tasks, one per worker; returns their statistics.

    DataFrames only: the chunks stay in a DataFrame and Spark shuffles them (no Python in the
    shuffle). With an RDD among the inputs: one Python ``partitionBy`` of (shard, chunk) pairs.
    """
    if len(inputs) == 1 and _is_dataframe(inputs[0][1]):
        feed = _routed_rows(inputs[0][1], n).mapInArrow(partial(train_task.feed_rows_arrow, plan),
                                                                "line string", barrier=True)
        return [r[0] for r in feed.collect()]
    if all(_is_dataframe(x) for _, x in inputs):
        chunks = _chunks(inputs[0][1], plans[0])
        for (_, x), shard_plan in zip(inputs[1:], plans[1:], strict=True):
            chunks = chunks.unionAll(_chunks(x, shard_plan))
        feed = _routed(chunks, n).mapInArrow(partial(train_task.feed_shard_arrow, plan), "line string",
                                                    barrier=True)
        return [r[0] for r in feed.collect()]
    pairs = [_chunk_pairs(x, shard_plan) for (_, x), shard_plan in zip(inputs, plans, strict=True)]
    shuffled = (pairs[0] if len(pairs) == 1 else pairs[0].context.union(pairs)).partitionBy(n, _identity)
    return shuffled.barrier().mapPartitions(partial(train_task.feed_shard, plan)).collect()


def _identity(key: int) -> int:
    return key


def train(sc: Any, data: Any, *, cluster_id: str, num_workers: int, num_epochs: int = 1, feed_timeout: float = 600,
          qname: str = "input", job_group: str | None = None, end_feed: bool = False, remainder: str = "drop",
          chunk_rows: int = DEFAULT_CHUNK_ROWS, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
          progress: bool = True, on_report: Any = None, on_error: Any = None, failure_known: Any = None,
          on_progress_server: Any = None, hubs: list[dict] | None = None, secret: bytes | None = None) -> Any:
    """Feed ``data`` to the workers with exactly equal rows per worker per epoch (see the module doc).

    ``hubs`` (one ``{"node", "host", "port"}`` per worker, the cluster's feed hubs) and ``secret`` (the
    cluster's) route the inputs (RDDs and DataFrames) without a shuffle: their feed tasks send each
    shard straight to its node's hub (:mod:`tfos.feed.direct_job`). Without them the shuffle routes.

    ``on_progress_server(server)`` (optional) is handed the feed's :class:`ProgressServer` as the
    feed starts (its ``rows_by_node()`` is what each node was fed so far, also after the feed ended).
    ``failure_known()`` (optional) says the caller already knows which node failed (its TF cluster's
    monitor named it): a failed feed then raises at once instead of waiting to name the node itself.

    ``on_report`` (streams only) is called with the report of every fed micro-batch, ``on_error``
    (streams only) with the exception of a micro-batch whose feed failed, before it is raised in
    Spark's streaming thread (where the caller would not see it): the cluster fails itself there.
    """
    if _is_dstream(data) or getattr(data, "isStreaming", False):
        return _train_stream(sc, data, cluster_id=cluster_id, num_workers=num_workers, feed_timeout=feed_timeout,
                             qname=qname, job_group=job_group, on_report=on_report, on_error=on_error,
                             remainder=remainder, hubs=hubs, secret=secret,
                             chunk_rows=chunk_rows, chunk_bytes=chunk_bytes, progress=progress)
    if num_workers < 1:
        raise ValueError(f"train(): num_workers must be >= 1, got {num_workers}")
    if num_epochs < 1:
        raise ValueError(f"train(): num_epochs must be >= 1, got {num_epochs}")
    if remainder not in ("drop", "wrap"):
        raise ValueError(f"train(): remainder must be 'drop' or 'wrap', got {remainder!r}")
    inputs = _inputs(data, qname)
    n = num_workers
    direct = bool(hubs) and secret is not None
    if direct and len(hubs or []) != n:
        raise ValueError(f"train(): {len(hubs or [])} feed hubs for {n} workers")
    feed_id = uuid.uuid4().hex[:12]
    group = job_group or f"tfos-feed-{cluster_id}"
    names = [q for q, _ in inputs]
    what = "/".join(repr(q) for q in names)
    desc = (f"tfos {cluster_id}: feeding {f'{num_epochs} epochs of ' if num_epochs > 1 else ''}{what} "
            f"to {n} worker{'s' if n > 1 else ''}")
    started = time.monotonic()
    started_at = time.time()  # the feed tasks say when their first rows reached the nodes, in wall time
    failures: list[str] = []

    def on_task_error(message: str) -> None:  # a task failed: stop the job now instead of after Spark's retries
        if not failures:
            failures.append(message)
            logger.error("feed task failed: %s", message)
            sc.cancelJobGroup(group)

    def on_plan(shard_sizes: list) -> None:  # every feed task sent its shard sizes: log the plan, size the progress
        agreed = {"shard_sizes": shard_sizes,
                  "rows_per_epoch": [sharding.agreed_rows(remainder, [sizes[qi] for sizes in shard_sizes])
                                     for qi in range(len(names))]}
        plan_lines = _plan_summary(names, agreed, n, remainder)
        for line in plan_lines["log"]:
            logger.log(line[0], line[1])
        server.set_totals({q: s["rows_per_worker_per_epoch"] * n * num_epochs
                           for q, s in plan_lines["summary"].items()})
        agreed_epoch.update({q: s["rows_per_worker_per_epoch"] * n for q, s in plan_lines["summary"].items()})

    agreed_epoch: dict[str, int] = {}  # rows of one epoch over all workers, per input, once agreed

    def with_progress(error: FeedJobError) -> FeedJobError:
        """What the failed feed had fed (``rows_fed``) and an epoch's rows (``rows_per_epoch``), per input:
        a restarted cluster feeds only the epochs not yet fed whole."""
        error.rows_fed, error.rows_per_epoch = server.rows(), dict(agreed_epoch)
        return error

    with _JobGroup(sc, group, desc):
        server = ProgressServer(driver_address(sc), {}, desc=f"feed {'/'.join(names)}", log=progress,
                                on_error=on_task_error, on_plan=on_plan)
        if on_progress_server is not None:
            on_progress_server(server)
        plans = [ShardPlan(qi, n, chunk_rows, chunk_bytes, server.address) for qi in range(len(inputs))]
        plan = TrainPlan(cluster_id=cluster_id, qnames=names, num_epochs=num_epochs, feed_timeout=feed_timeout,
                                end_feed=end_feed, remainder=remainder, feed_id=feed_id, progress=server.address,
                                num_workers=n)
        direct_plans = [DirectPlan(qi, q, feed_id, list(hubs or []), secret or b"", 0,
                                   num_epochs, remainder, end_feed, feed_timeout, chunk_rows, chunk_bytes,
                                   server.address) for qi, (q, x) in enumerate(inputs)] if direct else []
        try:
            if direct:
                shards = run_direct(sc, inputs, direct_plans, server, group=group, failures=failures,
                                    failure_known=failure_known, on_plan=on_plan)
            else:
                shards = sorted((json.loads(line) for line in _run_feed(inputs, plans, plan, n)),
                                key=lambda s: s["shard"])
        except Exception as exc:
            what = f"feeding {'/'.join(names)} to the workers"
            if direct:
                cancel_hubs(direct_plans[0], f"{type(exc).__name__}: {str(exc)[:500]}")
                err = _feed_failure(exc, what)
                err.feed_task = any(server.rows().values())  # rows reached a node: its epoch cannot complete
                if failures:
                    node = _NAMED_NODE.search(failures[0])
                    err = FeedJobError(f"{what} failed: {failures[0]}", task=err.task, executor=err.executor,
                                       host=err.host, node=node.group(0) if node else None)
                    # a hub's failure names its shard: the feed had reached the nodes (a feed task's
                    # failure before any row reached a node leaves the cluster ready to be fed again)
                    err.feed_task = any(server.rows().values()) or _NAMED_SHARD.search(failures[0]) is not None
                    err.told_by_task = True
                raise with_progress(err) from exc
            cleanup, found = _clean_up_after(sc, group, cluster_id, n, feed_id)
            err = _feed_failure(exc, what)
            if failures:  # a feed task said what went wrong (naming its shard and node)
                shard, node = _NAMED_SHARD.search(failures[0]), _NAMED_NODE.search(failures[0])
                told = FeedJobError(f"{what} failed: {failures[0]}", task=int(shard.group(1)) if shard else err.task,
                                    executor=err.executor, host=err.host, node=node.group(0) if node else None)
                told.feed_task, told.told_by_task = shard is not None, True
                raise with_progress(told) from exc
            named_elsewhere = "ExecutorLost" in str(exc) or (failure_known is not None and failure_known())
            if err.feed_task and not err.told_by_task and not named_elsewhere:  # the cluster names a lost node
                cleanup.join(CLEANUP_NAMING_WAIT)  # a task died without a word: which node did it feed?
                node = found.get("nodes", {}).get(err.task)
                if node:
                    named = FeedJobError(str(err).replace(f"shard {err.task} (", f"shard {err.task} ({node}, ", 1),
                                         task=err.task, executor=err.executor, host=err.host, node=node)
                    named.feed_task = True
                    err = named
            raise with_progress(err) from exc
        finally:
            server.close()
    elapsed = time.monotonic() - started
    if not direct:
        logger.info("feed stage: spilling the shuffled shards took %s s, agreeing their sizes %s s, feeding them "
                    "%s s (per shard)", [s.get("spill_seconds") for s in shards],
                    [s.get("agree_seconds") for s in shards], [s.get("feed_seconds") for s in shards])
    summary = _plan_summary(names, {"shard_sizes": shards[0]["all_shard_sizes"],
                                    "rows_per_epoch": shards[0]["rows_per_epoch"]}, n, remainder)["summary"]
    fed = {q: sum(s["inputs"].get(q, {}).get("rows", 0) for s in shards) for q in names}
    for q in names:
        states = [s["inputs"].get(q, {}).get("state") for s in shards]
        terminated = [s["node"] for s, st in zip(shards, states, strict=False) if st == "terminated"]
        firsts = [t for s in shards if (t := s["inputs"].get(q, {}).get("first_batch_at")) is not None]
        first_batch = round(max(0.0, min(firsts) - started_at), 3) if firsts else None
        summary[q].update(rows_fed=fed[q], terminated=terminated, first_batch_seconds=first_batch)
        logger.info("input %r: fed %d rows to %d workers in %.1fs (%.0f rows/s)%s%s", q, fed[q], n, elapsed,
                    fed[q] / max(elapsed, 1e-6),
                    f"; the first rows reached a worker {first_batch:.2f}s after train() began"
                    if first_batch is not None else "",
                    f"; terminated early by {terminated}" if terminated else "")
    return {"feed_id": feed_id, "inputs": summary, "shards": shards, "seconds": elapsed,
            "route": "direct" if direct else "shuffle"}


def _plan_summary(names: list[str], agreed: dict, n: int, remainder: str) -> dict:
    """Per input, from every shard's size and the agreed rows per epoch: the report's summary and
    the driver's log lines (``(level, message)``)."""
    summary, log = {}, []
    for qi, q in enumerate(names):
        sizes = [int(shard[qi]) for shard in agreed["shard_sizes"]]
        per_worker = int(agreed["rows_per_epoch"][qi])
        total = sum(sizes)
        left = total - per_worker * n
        summary[q] = {"rows": total, "shard_rows": sizes, "rows_per_worker_per_epoch": per_worker,
                      "remainder": remainder, "remainder_rows_per_epoch": abs(left)}
        head = f"input {q!r}: {total} rows over {n} workers -> {per_worker} rows per worker per epoch"
        if left > 0:
            log.append((logging.INFO, f"{head}; {left} remainder rows are left out of each epoch (shards of "
                                      f"{min(sizes)}-{max(sizes)} rows, remainder='drop', different rows each epoch)"))
        elif left < 0:
            log.append((logging.INFO, f"{head}; {-left} rows are fed twice per epoch to even the workers out "
                                      f"(shards of {min(sizes)}-{max(sizes)} rows, remainder='wrap')"))
        else:
            log.append((logging.INFO, head))
        if per_worker == 0 and total:
            log.append((logging.WARNING, f"input {q!r}: a worker's shard is empty ({total} rows in shards of "
                                         f"{sizes}): every worker gets an empty epoch. Give the input more rows "
                                         f"than workers in each partition, or fewer partitions (coalesce)"))
        elif per_worker == 0:
            log.append((logging.WARNING, f"input {q!r} is empty: every worker gets an empty epoch"))
    return {"summary": summary, "log": log}


def _train_stream(sc: Any, stream: Any, *, cluster_id: str, num_workers: int, feed_timeout: float, qname: str,
                  job_group: str | None, on_report: Any, on_error: Any = None, **kwargs: Any) -> Any:
    """Feed a DStream (``foreachRDD``) or a streaming DataFrame (``foreachBatch``), one epoch per micro-batch."""
    def feed_batch(batch: Any, *_: Any) -> None:
        if batch.isEmpty():
            return
        try:
            report = train(sc, batch, cluster_id=cluster_id, num_workers=num_workers, num_epochs=1,
                           feed_timeout=feed_timeout, qname=qname, job_group=job_group, end_feed=False, **kwargs)
        except Exception as exc:
            if on_error is not None:
                on_error(exc)
            raise
        if on_report is not None:
            on_report(report)

    if _is_dstream(stream):
        stream.foreachRDD(lambda rdd: feed_batch(rdd))
        return None
    return stream.writeStream.foreachBatch(lambda df, batch_id: feed_batch(df)).start()


# ---------------------------------------------------------------------------------------------
# inference
# ---------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_row(value: Any) -> Any:
    from pyspark.sql import Row

    if isinstance(value, Row):
        return value
    if isinstance(value, dict):
        return Row(**{str(k): _plain(v) for k, v in value.items()})
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return Row(prediction=_plain(value))


def _unpickle_out(row: Any) -> Any:
    return pickle.loads(row[0])


def inference(sc: Any, data: Any, *, cluster_id: str, num_workers: int | None = None, feed_timeout: float = 600,
              qname: str = "input", job_group: str | None = None, output_schema: Any = None,
              chunk_rows: int = DEFAULT_CHUNK_ROWS, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Any:
    """One output per input row, in input order within each partition (lazy; see the module doc)."""
    from tfos.feed.registry import _check_name

    _check_name("qname", qname)
    # The result is lazy: its jobs run in the caller's thread, under this group (cancelled with the cluster).
    sc.setJobGroup(job_group or f"tfos-feed-{cluster_id}", f"tfos {cluster_id}: inference", interruptOnCancel=True)
    plan = InferencePlan(cluster_id=cluster_id, qname=qname, feed_timeout=feed_timeout, chunk_rows=chunk_rows,
                                chunk_bytes=chunk_bytes)
    if not _is_dataframe(data):
        return data.mapPartitionsWithIndex(partial(inference_task.infer_rows, plan), preservesPartitioning=True)
    if output_schema is None:
        out = data.mapInArrow(partial(inference_task.infer_arrow_pickled, plan), "out binary")
        rows = out.rdd.map(_unpickle_out).map(_as_row)
        return data.sparkSession.createDataFrame(rows)
    from pyspark.sql.types import StructType, _parse_datatype_string

    schema = _parse_datatype_string(output_schema) if isinstance(output_schema, str) else output_schema
    if not isinstance(schema, StructType):
        raise TypeError(f"inference(): output_schema must be a StructType or a DDL string, got {output_schema!r}")
    timezone = data.sparkSession.conf.get("spark.sql.session.timeZone", None)
    plan.output_schema = _arrow_schema(schema, timezone).serialize().to_pybytes()
    return data.mapInArrow(partial(inference_task.infer_arrow, plan), schema)


def _arrow_schema(schema: Any, timezone: str | None) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone=timezone)


# ---------------------------------------------------------------------------------------------
# end of feed
# ---------------------------------------------------------------------------------------------
def end_feed(sc: Any, *, cluster_id: str, num_workers: int, job_group: str | None = None,
             qnames: list[str] | None = None, timeout: float = 120) -> None:
    """Mark the feeds of all ``num_workers`` nodes ended (one barrier task per worker executor)."""
    if num_workers < 1:
        return
    group = job_group or f"tfos-feed-{cluster_id}"
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            with _JobGroup(sc, group, f"tfos {cluster_id}: end of feed ({num_workers} workers)"):
                rdd = sc.parallelize(range(num_workers), num_workers)
                result["nodes"] = rdd.barrier().mapPartitions(
                    partial(housekeeping.end_feed_task, cluster_id, qnames)).collect()
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=run, name="tfos-end-feed", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        sc.cancelJobGroup(group)
        logger.warning("end of feed: the job did not finish within %ss (not enough free worker executors?); "
                       "cancelled it", timeout)
        return
    if "error" in result:
        logger.warning("end of feed failed: %s", result["error"])
        return
    logger.info("end of feed sent to %s", sorted(set(result.get("nodes", []))))
