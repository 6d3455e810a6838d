"""Spark-task side of the feed: partitions -> Arrow chunks -> the local TF process.

Three kinds of task run this code (the driver side in ``feed_job`` builds the jobs):

* **shard map tasks** (training): :func:`shard_rows` / :func:`shard_arrow` turn each input
  partition into Arrow IPC chunks keyed by *shard*: row ``j`` of partition ``p`` goes to shard
  ``(p + j) mod num_workers`` (rotation, :class:`ShardPlan`; no count of the input needed). The
  chunks go through one Spark shuffle (compact Arrow bytes, not Python rows).
* **shard feed tasks** (training, a barrier stage of exactly ``num_workers`` tasks, one per
  worker executor): :func:`feed_shard` spills its shard to local disk, exchanges the shard sizes
  with the other feed tasks through the driver (every worker then feeds the same rows per epoch,
  :func:`agreed_rows`), and feeds every named input to the local TF node in its own thread and
  connection, epoch after epoch, from the spill file.
* **inference tasks**: :func:`infer_rows` / :func:`infer_arrow` feed one partition to the local
  node and yield its results, one per input row, in input order.

A TF process that dies or raises while being fed fails the feeding task within a few seconds
(closed socket, dead pid, or its exit marker) with an error naming the node (``worker:1``) and,
where the TF side left one, its traceback. A TF side that called ``terminate()`` or finished
``main_fun`` ends its feed tasks quietly.

Files: a shard feed task claims its node (``feed_dir/_feeding-<feed_id>``: shard, attempt, pid)
and spills under Spark's local dir (``tfos-feed-spill-<pid>-*``); both go in its ``finally``. A
killed task (Spark SIGKILLs its Python worker) leaves them: its claim is taken over by the next
task whose process finds the claimant gone, and :func:`reap_claims` / :func:`reap_spills`
(run by every feed task, the end of feed, and the clean-up after a failed feed) remove them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from tfos.feed import arrow_codec as codec
from tfos.feed import channel as ch
from tfos.feed.errors import FeedError, FeedTerminated, PeerGone
from tfos.feed.progress import ProgressReporter, exchange_sizes, report_error
from tfos.feed.registry import node_name, pick_local_node

logger = logging.getLogger("tfos.feed")

EXIT_MARKER_WAIT = 3.0
DEFAULT_CHUNK_ROWS = 4096
DEFAULT_CHUNK_BYTES = 4 << 20
FIRST_CHUNK_ROWS = 64


# ---------------------------------------------------------------------------------------------
# the node a task feeds
# ---------------------------------------------------------------------------------------------
class NodeTarget:
    """A local TF node from the registry, with the checks a feeding task needs."""

    def __init__(self, node: dict):
        self.node = node
        self.name = node_name(node)
        self.feed_dir = ch.FeedDir(node["feed_dir"])
        self.pid = node.get("pid")

    def check(self, qname: str) -> None:
        """Raise if feeding ``qname`` to this node is pointless (it exited, terminated the input)."""
        exit_state = self.feed_dir.read_exit()
        if exit_state is not None:
            if exit_state.get("state") == "failed":
                raise FeedError(f"the TF process of {self.name} failed:\n{exit_state.get('error', '')}")
            raise FeedTerminated(f"{self.name} finished main_fun")
        if self.feed_dir.terminated(qname):
            raise FeedTerminated(f"{self.name} terminated input {qname!r}")
        if self.feed_dir.ended(qname):
            raise FeedTerminated(f"{self.name} already ended its feed {qname!r} (an earlier "
                                 f"train(end_feed=True), or the cluster is shutting down)")
        if self.pid and not ch.pid_alive(self.pid):
            raise PeerGone(f"the TF process of {self.name} (pid {self.pid}) is gone")

    def explain(self, exc: BaseException, qname: str, what: str, conn: ch.Connection | None = None) -> BaseException:
        """Turn a lost connection into FeedTerminated (the TF side wanted it) or a FeedError that says why."""
        if isinstance(exc, FeedTerminated):
            return exc
        interrupt = exc if isinstance(exc, ch.Interrupted) else None
        if interrupt is None and conn is not None:
            for msg in list(conn.inbox):
                if msg.type in ch.INTERRUPTS:
                    interrupt = ch.Interrupted(msg, self.name)
                    break
        if interrupt is not None:
            if interrupt.message.type == ch.TERMINATE:
                return FeedTerminated(str(interrupt))
            return FeedError(f"{self.name} failed while being fed {what}:\n{interrupt.info.get('error', '')}")
        if not isinstance(exc, PeerGone):
            return exc
        if self.feed_dir.terminated(qname) or self.feed_dir.ended(qname):
            return FeedTerminated(f"{self.name} ended input {qname!r}")
        deadline = time.monotonic() + EXIT_MARKER_WAIT
        while True:
            exit_state = self.feed_dir.read_exit()
            if exit_state is not None:
                if exit_state.get("state") == "failed":
                    return FeedError(f"the TF process of {self.name} failed while being fed {what}:\n"
                                     f"{exit_state.get('error', '')}")
                logger.warning("%s finished main_fun before reading all of %s; the rest is not fed", self.name, what)
                return FeedTerminated(f"{self.name} finished main_fun")
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        return FeedError(f"the TF process of {self.name} closed its data feed {qname!r} while being fed {what} "
                         f"(it crashed, was killed, or dropped its DataFeed; it reported no exit state): {exc}")


def open_feed(target: NodeTarget, qname: str, *, mode: str, partition: int, feed_timeout: float,
              extra: dict | None = None, cancel: threading.Event | None = None) -> ch.Connection:
    """Connect to ``target``'s DataFeed for ``qname`` and complete the greeting."""
    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise FeedTerminated("cancelled")
        target.check(qname)

    what = f"partition {partition} of input {qname!r}"
    conn = ch.connect(target.node["feed_dir"], qname, peer=target.name, timeout=feed_timeout, check=check,
                      liveness=check)
    try:
        hello = {"version": ch.PROTOCOL_VERSION, "qname": qname, "mode": mode, "partition": partition,
                 "feed_timeout": feed_timeout, "host": socket.gethostname(), "pid": os.getpid()}
        hello.update(extra or {})
        conn.send_control(ch.HELLO, hello, timeout=feed_timeout, what=f"{target.name} to accept {what}")
        msg = conn.recv(timeout=feed_timeout,
                        what=f"{target.name} to start reading {what} (it is busy with another feed task of this "
                             f"input, or main_fun is not reading {qname!r})")
        info = msg.control()
        if msg.type == ch.REJECT:
            if info.get("terminated"):
                raise FeedTerminated(f"{target.name} terminated input {qname!r}")
            raise FeedError(f"{target.name} refused {what}: {info.get('reason')}")
        if msg.type != ch.WELCOME:
            raise FeedError(f"{target.name} answered {msg.name} to the greeting of {what}")
        if not conn.peer_pid and info.get("pid"):
            conn.peer_pid = int(info["pid"])
        return conn
    except BaseException as exc:
        conn.close()
        err = target.explain(exc, qname, what, conn)
        if err is exc:
            raise
        raise err from exc


# ---------------------------------------------------------------------------------------------
# chunking
# ---------------------------------------------------------------------------------------------
class _ChunkSizer:
    """Rows per chunk: at most ``chunk_rows`` and about ``chunk_bytes`` (learned from the data)."""

    def __init__(self, chunk_rows: int, chunk_bytes: int):
        self.max_rows, self.max_bytes = max(1, chunk_rows), max(1, chunk_bytes)
        self.rows = min(self.max_rows, FIRST_CHUNK_ROWS)

    def learn(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            per_row = max(1, batch.nbytes // batch.num_rows)
            self.rows = int(min(self.max_rows, max(1, self.max_bytes // per_row)))


def _chunks(rows: Iterable[Any], sizer: _ChunkSizer) -> Iterator[tuple[int, list]]:
    chunk: list = []
    first = 0
    for j, row in enumerate(rows):
        if not chunk:
            first = j
        chunk.append(row)
        if len(chunk) >= sizer.rows:
            yield first, chunk
            chunk = []
    if chunk:
        yield first, chunk


# ---------------------------------------------------------------------------------------------
# training: map side (shard assignment)
# ---------------------------------------------------------------------------------------------
@dataclass
class ShardPlan:
    """How one named input is cut into ``num_shards`` shards (shipped to the map tasks).

    Rotation: row ``j`` of partition ``p`` goes to shard ``(p + j) mod num_shards``. Every
    complete group of ``num_shards`` consecutive rows of a partition gives each shard one row,
    so the shards can differ only by the partitions' last, incomplete groups (at most one row
    per input partition), and no count of the input is needed to route it.
    """

    qindex: int
    num_shards: int
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    progress: tuple | None = None  # the driver's ProgressServer, for a prompt error report

    def offset(self, partition: int | None) -> int:
        """The shard of the first row of ``partition``."""
        return (partition or 0) % self.num_shards


# The partition index of a DataFrame's rows travels in this column (``spark_partition_id()``,
# added by the driver): ``TaskContext.partitionId()`` would be the index in the *stage*, which
# differs once several inputs are unioned into one shuffle.
PARTITION_COLUMN = "__tfos_partition__"


def _untag(batch: pa.RecordBatch) -> tuple[int | None, pa.RecordBatch]:
    idx = batch.schema.get_field_index(PARTITION_COLUMN)
    partition = batch.column(idx)[0].as_py() if batch.num_rows else None
    keep = [i for i in range(batch.num_columns) if i != idx]
    schema = pa.schema([batch.schema.field(i) for i in keep], metadata=batch.schema.metadata)
    return partition, pa.RecordBatch.from_arrays([batch.column(i) for i in keep], schema=schema)


def shard_rows(plan: ShardPlan, partition: int, rows: Iterable[Any]) -> Iterator[tuple[int, tuple]]:
    """``mapPartitionsWithIndex`` function: RDD rows -> ``(shard, (qindex, rows, arrow_ipc_bytes))``.

    One pass: each row is computed and converted to Arrow once, in chunks, and routed by rotation.
    """
    encoder = codec.RowEncoder(partition)
    sizer = _ChunkSizer(plan.chunk_rows, plan.chunk_bytes)

    def located() -> Iterator[tuple[int | None, int, pa.RecordBatch]]:
        for first, chunk in _chunks(rows, sizer):
            batch = encoder.encode(chunk, first)
            sizer.learn(batch)
            yield partition, first, batch

    try:
        for k, n, payload in _split_by_shard(plan, located()):
            yield k, (plan.qindex, n, payload)
    except FeedError as exc:
        report_error(plan.progress, {"feed": "map", "shard": -1}, f"{type(exc).__name__}: {exc}")
        raise


SHARD_SCHEMA_DDL = "shard int, q int, rows long, payload binary"


def shard_arrow(plan: ShardPlan, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` function over a tagged DataFrame: batches -> rows ``(shard, q, rows, payload)``,
    columnar throughout."""
    def located() -> Iterator[tuple[int | None, int, pa.RecordBatch]]:
        pos = 0
        for tagged in batches:
            partition, batch = _untag(tagged)
            yield partition, pos, batch
            pos += batch.num_rows

    for k, rows, payload in _split_by_shard(plan, located()):
        yield pa.RecordBatch.from_arrays(
            [pa.array([k], pa.int32()), pa.array([plan.qindex], pa.int32()), pa.array([rows], pa.int64()),
             pa.array([payload], pa.binary())], names=["shard", "q", "rows", "payload"])


def _split_by_shard(plan: ShardPlan, located: Iterable[tuple[int | None, int, pa.RecordBatch]]
                    ) -> Iterator[tuple[int, int, bytes]]:
    """Batches of one partition, each with its first row's position in the partition -> per-shard
    ``(shard, rows, arrow_ipc_bytes)`` chunks: row ``pos`` goes to shard ``(offset + pos) mod n``
    (see :class:`ShardPlan`)."""
    n = plan.num_shards
    pending: list[list[pa.RecordBatch]] = [[] for _ in range(n)]
    pending_rows = [0] * n
    pending_bytes = [0] * n

    def emit(k: int) -> tuple[int, int, bytes]:
        out = (k, pending_rows[k], codec.to_ipc(pending[k]).to_pybytes())
        pending[k], pending_rows[k], pending_bytes[k] = [], 0, 0
        return out

    for partition, pos, batch in located:
        offset = plan.offset(partition)
        m = batch.num_rows
        for k in range(n):
            start = (k - offset - pos) % n
            if start >= m:
                continue
            piece = batch if n == 1 else batch.take(pa.array(np.arange(start, m, n, dtype=np.int64)))
            pending[k].append(piece)
            pending_rows[k] += piece.num_rows
            pending_bytes[k] += piece.nbytes
            if pending_rows[k] >= plan.chunk_rows or pending_bytes[k] >= plan.chunk_bytes:
                yield emit(k)
    for k in range(n):
        if pending_rows[k]:
            yield emit(k)


# ---------------------------------------------------------------------------------------------
# training: feed side (barrier stage)
# ---------------------------------------------------------------------------------------------
class SpillFile:
    """The chunks of one input of one shard on local disk, replayed once per epoch."""

    def __init__(self, directory: str, name: str):
        self.path = os.path.join(directory, name)
        self._f = open(self.path, "w+b")  # noqa: SIM115 - closed in close()
        self.chunks: list[tuple[int, int, int]] = []  # (offset, length, rows)
        self.rows = 0
        self._size = 0

    def append(self, payload: bytes, rows: int) -> None:
        self._f.write(payload)
        self.chunks.append((self._size, len(payload), rows))
        self._size += len(payload)
        self.rows += rows

    def finish(self) -> None:
        self._f.flush()

    def _read(self, i: int) -> bytes:
        offset, length, _ = self.chunks[i]
        return os.pread(self._f.fileno(), length, offset)

    def _table(self, i: int) -> pa.Table:
        return pa.Table.from_batches(codec.from_ipc(self._read(i)))

    def epoch(self, epoch: int, target: int) -> Iterator[tuple[Any, int]]:
        """(payload, rows) of one epoch of exactly ``target`` rows.

        With more rows than ``target`` the surplus is skipped, at a position that moves each
        epoch (so over the epochs every row is seen); with fewer, rows from the start of a
        moving window are fed again at the end (wrap).
        """
        self._f.flush()
        total = self.rows
        if target == total or total == 0:
            for i, (_, _, rows) in enumerate(self.chunks):
                if target:
                    yield self._read(i), rows
            return
        if target < total:
            drop = total - target
            start = (epoch * drop) % total
            skipped = [(start, min(total, start + drop))]
            if start + drop > total:
                skipped.append((0, start + drop - total))
            pos = 0
            for i, (_, _, rows) in enumerate(self.chunks):
                lo, hi = pos, pos + rows
                pos = hi
                cuts = [(max(a, lo), min(b, hi)) for a, b in skipped if a < hi and b > lo]
                if not cuts:
                    yield self._read(i), rows
                    continue
                table = self._table(i)
                keep, cursor = [], lo
                for a, b in sorted(cuts):
                    if a > cursor:
                        keep.append(table.slice(cursor - lo, a - cursor))
                    cursor = b
                if cursor < hi:
                    keep.append(table.slice(cursor - lo, hi - cursor))
                batches = [b for t in keep for b in t.to_batches() if b.num_rows]
                if batches:
                    yield codec.to_ipc(batches), sum(b.num_rows for b in batches)
            return
        # wrap: everything, then (target - total) rows again from a moving start
        for i, (_, _, rows) in enumerate(self.chunks):
            yield self._read(i), rows
        extra = target - total
        start = (epoch * extra) % total
        while extra > 0:
            pos = 0
            for i, (_, _, rows) in enumerate(self.chunks):
                lo, hi = pos, pos + rows
                pos = hi
                if extra <= 0 or hi <= start:
                    continue
                a = max(start, lo)
                take = min(hi - a, extra)
                piece = self._table(i).slice(a - lo, take)
                yield codec.to_ipc(piece.to_batches()), take
                extra -= take
                start = a + take
            start = 0

    def close(self) -> None:
        self._f.close()


@dataclass
class TrainPlan:
    """Everything a shard feed task needs (shipped in the task closure)."""

    cluster_id: str
    qnames: list[str]
    num_epochs: int
    feed_timeout: float
    end_feed: bool = True
    remainder: str = "drop"  # or "wrap"
    progress: tuple | None = None  # (host, port, key) of the driver's ProgressServer
    feed_id: str = ""
    num_workers: int = 1
    extra: dict = field(default_factory=dict)


def agreed_rows(remainder: str, sizes: list[int]) -> int:
    """Rows every worker feeds per epoch of one input, given every shard's size: the smallest
    shard (``drop``), or the largest (``wrap``; an empty shard has nothing to repeat, so then
    the smallest too)."""
    smallest = min(sizes, default=0)
    if remainder == "wrap" and smallest > 0:
        return max(sizes)
    return smallest


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


SPILL_PREFIX = "tfos-feed-spill-"
_SPILL_NAME = re.compile(rf"^{SPILL_PREFIX}(\d+)-")


def _spill_base() -> str:
    """Where spill directories go: Spark's first local dir (``SPARK_LOCAL_DIRS``), else the system temp dir."""
    local = (os.environ.get("SPARK_LOCAL_DIRS") or "").split(",")[0]
    return local if local and os.path.isdir(local) else tempfile.gettempdir()


def _spill_dir() -> str:
    """A new private spill directory, named after this process (``tfos-feed-spill-<pid>-*``)."""
    return tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-", dir=_spill_base())


def reap_spills(base: str | None = None) -> list[str]:
    """Remove the spill directories in ``base`` left by feed tasks whose process is gone (killed
    tasks skip their ``finally``); returns the removed paths."""
    base = base or _spill_base()
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        m = _SPILL_NAME.match(name)
        if not m or ch.pid_alive(int(m.group(1))):
            continue
        path = os.path.join(base, name)
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        logger.info("removed %d spill directories of dead feed tasks: %s", len(removed), removed)
    return removed


@dataclass(frozen=True)
class TaskAttempt:
    """Which Spark task attempt runs a shard feed task (recorded in its claim on the node)."""

    shard: int
    attempt: int = 0  # TaskContext.attemptNumber()
    task_attempt_id: int = -1  # TaskContext.taskAttemptId(): unique in the application, grows with time
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def current(cls, shard: int) -> TaskAttempt:
        from pyspark import TaskContext

        tc = TaskContext.get()
        if tc is None:
            return cls(shard)
        return cls(shard, tc.attemptNumber(), tc.taskAttemptId())

    def describe(self) -> str:
        return (f"shard {self.shard} attempt {self.attempt} (task attempt id {self.task_attempt_id}, "
                f"pid {self.pid})")


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
        claim = _claim_node(target, plan, task)
        reap_spills()
        directory = _spill_dir()
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


SHARD_COLUMN = "__tfos_shard__"


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


CLAIM_PREFIX = "_feeding-"
_TMP = ".tmp-"
CLAIM_TAKEOVER_WAIT = 15.0  # seconds an earlier attempt of the same task gets to die (Spark kills it)


class NodeClaim:
    """This task's claim on a node for one feed (``feed_dir/_feeding-<feed_id>``, JSON)."""

    def __init__(self, path: str, record: dict):
        self.path, self.record = path, record

    def release(self) -> None:
        """Remove the claim if it is still ours (a later attempt may have taken it over); never raises."""
        try:
            with _claim_lock(os.path.dirname(self.path)):
                if _read_claim(self.path) == self.record:
                    os.unlink(self.path)
        except OSError:  # the node removed its directory meanwhile
            pass


class _claim_lock:  # noqa: N801 - used as a context manager
    """An exclusive ``flock`` on the ``feed_dir`` directory itself (no lock file to leave behind;
    freed by the OS if the holder dies)."""

    def __init__(self, feed_dir: str):
        self.feed_dir = feed_dir

    def __enter__(self) -> None:
        import fcntl

        self.fd = os.open(self.feed_dir, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)  # releases the lock


def _read_claim(path: str) -> dict | None:
    """The claim at ``path``: a dict, ``{"shard": text}`` for an unreadable one, None when absent."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"shard": f"unreadable ({exc})"}
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    return record if isinstance(record, dict) else {"shard": text or "unknown"}


def _claim_is_stale(record: dict, *, in_task: bool = True) -> bool:
    """A claim whose task's process is gone (killed attempts leave theirs behind), or, asked from a
    task (``in_task``), one left by an earlier task of this very process (Spark reuses Python
    workers, which run one task at a time)."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return False
    return (in_task and pid == os.getpid()) or not ch.pid_alive(pid)


def _describe_claim(record: dict) -> str:
    if "pid" not in record:
        return f"shard {record.get('shard')}"
    return (f"shard {record.get('shard')} attempt {record.get('attempt')} (task attempt id "
            f"{record.get('task_attempt_id')}, pid {record.get('pid')})")


def reap_claims(feed_dir: str) -> list[str]:
    """Remove the claims in ``feed_dir`` left by dead feed tasks (of any feed); returns their paths."""
    with _claim_lock(feed_dir):
        return _sweep_claims(feed_dir)


def live_claims(feed_dir: str, name: str | None = None) -> list[dict]:
    """The claims in ``feed_dir`` (only the one called ``name``, if given) of feed tasks that are
    still running; empty if ``feed_dir`` is gone."""
    try:
        with _claim_lock(feed_dir):
            records = [_read_claim(os.path.join(feed_dir, n)) for n in os.listdir(feed_dir)
                       if n.startswith(CLAIM_PREFIX) and _TMP not in n and (name is None or n == name)]
    except OSError:
        return []
    return [r for r in records if r is not None and not _claim_is_stale(r, in_task=False)]


def _sweep_claims(feed_dir: str, keep: str = "") -> list[str]:
    """:func:`reap_claims` with the lock held, sparing the claim named ``keep``."""
    removed = []
    for name in os.listdir(feed_dir):
        if not name.startswith(CLAIM_PREFIX) or name == keep:
            continue
        path = os.path.join(feed_dir, name)
        if _TMP in name:  # a claim being written when its task died
            pid = name.rpartition(_TMP)[2]
            record = {"pid": int(pid), "host": socket.gethostname()} if pid.isdigit() else None
        else:
            record = _read_claim(path)
        if record is not None and _claim_is_stale(record):
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def _claim_node(target: NodeTarget, plan: TrainPlan, task: TaskAttempt,
                takeover_wait: float = CLAIM_TAKEOVER_WAIT) -> NodeClaim:
    """Mark ``target`` as fed by ``task`` for this feed.

    A claim left by a dead process (a killed attempt: its ``finally`` never ran) is taken over;
    a live earlier attempt of the same shard gets ``takeover_wait`` seconds to die (Spark is
    killing it) before it counts as a second live task. Two live feed tasks of one feed on one
    node is an error: each worker executor must run exactly one task at a time.
    """
    feed_dir = target.node["feed_dir"]
    path = os.path.join(feed_dir, f"{CLAIM_PREFIX}{plan.feed_id or 'feed'}")
    mine = {"shard": task.shard, "attempt": task.attempt, "task_attempt_id": task.task_attempt_id,
            "pid": task.pid, "host": socket.gethostname(), "node": target.name, "time": time.time()}
    deadline = time.monotonic() + takeover_wait
    while True:
        with _claim_lock(feed_dir):
            other = _read_claim(path)
            earlier = (other is not None and other.get("shard") == task.shard
                       and isinstance(other.get("task_attempt_id"), int)
                       and other["task_attempt_id"] < task.task_attempt_id)
            if other is not None and _claim_is_stale(other):
                logger.warning("%s: %s takes over the claim of %s, whose process is gone (a killed or failed "
                               "attempt)", target.name, task.describe(), _describe_claim(other))
                other = None
            if other is None:
                tmp = f"{path}{_TMP}{task.pid}"
                with open(tmp, "w") as f:
                    json.dump(mine, f)
                os.replace(tmp, path)
                _sweep_claims(feed_dir, keep=os.path.basename(path))  # dead tasks of earlier feeds
                return NodeClaim(path, mine)
        if not earlier or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    raise FeedError(f"two feed tasks landed on the executor of {target.name} ({_describe_claim(other)}, still "
                    f"running, and {task.describe()} on {socket.gethostname()}): each worker executor must run "
                    f"exactly one task at a time (spark.executor.cores=1, spark.task.cpus=1, and one executor per "
                    f"TF worker)")


def _feed_inputs(plan: TrainPlan, target: NodeTarget, shard: int, spills: list[SpillFile], targets: list[int],
                 reporter: ProgressReporter | None) -> dict:
    cancel = threading.Event()
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[plan.qnames[i]] = _feed_input(plan, target, shard, i, spills[i], targets[i], reporter, cancel)
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


def _feed_input(plan: TrainPlan, target: NodeTarget, shard: int, qi: int, spill: SpillFile, rows_per_epoch: int,
                reporter: ProgressReporter | None, cancel: threading.Event) -> dict:
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
    try:
        for epoch in range(plan.num_epochs):
            slow = (f"{target.name} to read more of {what} (epoch {epoch + 1}/{plan.num_epochs}): it stopped "
                    f"consuming; raise feed_timeout if a step can take longer")
            for payload, rows in spill.epoch(epoch, rows_per_epoch):
                conn.send(ch.DATA, payload, timeout=timeout, what=slow)
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
    return {"state": state, "rows": fed}


# ---------------------------------------------------------------------------------------------
# inference
# ---------------------------------------------------------------------------------------------
@dataclass
class InferencePlan:
    cluster_id: str
    qname: str
    feed_timeout: float
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    output_schema: bytes | None = None  # serialized pa.Schema for DataFrame output


class _InferenceSession:
    """One partition's connection: sends chunks, collects results in order."""

    def __init__(self, plan: InferencePlan, partition: int):
        self.plan, self.partition = plan, partition
        self.target = NodeTarget(pick_local_node(plan.cluster_id, partition))
        self.what = f"partition {partition} of input {plan.qname!r}"
        try:
            self.conn = open_feed(self.target, plan.qname, mode="inference", partition=partition,
                                  feed_timeout=plan.feed_timeout)
        except FeedTerminated as exc:
            raise FeedError(f"cannot run inference on {self.what}: {exc} (terminate() ends inference "
                            f"before every row has its output)") from exc
        self.sent = 0
        self.received = 0

    def fail(self, exc: BaseException) -> BaseException:
        err = self.target.explain(exc, self.plan.qname, self.what, self.conn)
        if isinstance(err, FeedTerminated):
            return FeedError(f"inference of {self.what} stopped after {self.received} of {self.sent} outputs: {err}")
        return err

    def send(self, payload: Any, rows: int) -> None:
        self.conn.send(ch.DATA, payload, timeout=self.plan.feed_timeout,
                       what=f"{self.target.name} to read more of {self.what}")
        self.sent += rows

    def _results(self, msg: ch.Message) -> list:
        if msg.type in ch.INTERRUPTS:
            raise ch.Interrupted(msg, self.target.name)
        if msg.type != ch.RESULTS:
            raise FeedError(f"unexpected {msg.name} message from {self.target.name} during {self.what}")
        import pickle

        values = codec.split_results(pickle.loads(msg.payload))
        self.received += len(values)
        if self.received > self.sent:
            raise FeedError(f"{self.target.name} returned {self.received} results for the {self.sent} rows of "
                            f"{self.what}: batch_results() must get exactly one result per row")
        return values

    def ready(self) -> list:
        out: list = []
        while (msg := self.conn.poll_message()) is not None:
            out.extend(self._results(msg))
        return out

    def finish(self) -> Iterator[list]:
        self.conn.send_control(ch.END_PARTITION, {"rows": self.sent}, timeout=self.plan.feed_timeout,
                               what=f"{self.target.name} to read the end of {self.what}")
        while self.received < self.sent:
            msg = self.conn.recv(timeout=self.plan.feed_timeout,
                                 what=f"{self.target.name} to return the results of {self.what} ({self.received} of "
                                      f"{self.sent} so far; is main_fun calling batch_results()?)")
            yield self._results(msg)


def infer_rows(plan: InferencePlan, partition: int, rows: Iterable[Any]) -> Iterator[Any]:
    """``mapPartitionsWithIndex`` function: one output per input row, in order."""
    session = _InferenceSession(plan, partition)
    try:
        encoder = codec.RowEncoder(partition)
        sizer = _ChunkSizer(plan.chunk_rows, plan.chunk_bytes)
        for first, chunk in _chunks(rows, sizer):
            batch = encoder.encode(chunk, first)
            sizer.learn(batch)
            session.send(codec.to_ipc(batch), batch.num_rows)
            yield from session.ready()
        for values in session.finish():
            yield from values
    except (PeerGone, ch.Interrupted, FeedTerminated) as exc:
        raise session.fail(exc) from exc
    finally:
        session.conn.close()


def _infer_batches(plan: InferencePlan, batches: Iterable[pa.RecordBatch],
                   pack: Callable[[list], pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Send DataFrame batches through the local node in chunks; yield ``pack(outputs)`` in order."""
    from pyspark import TaskContext

    session = _InferenceSession(plan, TaskContext.get().partitionId())
    try:
        for batch in batches:
            for start in range(0, batch.num_rows, plan.chunk_rows):
                piece = batch.slice(start, plan.chunk_rows)
                session.send(codec.to_ipc(piece), piece.num_rows)
            values = session.ready()
            if values:
                yield pack(values)
        for values in session.finish():
            if values:
                yield pack(values)
    except (PeerGone, ch.Interrupted, FeedTerminated) as exc:
        raise session.fail(exc) from exc
    finally:
        session.conn.close()


def infer_arrow(plan: InferencePlan, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` function: DataFrame batches in, output batches (``plan.output_schema``) out."""
    schema = pa.ipc.read_schema(pa.py_buffer(plan.output_schema))
    return _infer_batches(plan, batches, lambda values: codec.results_to_batch(values, schema))


def infer_arrow_pickled(plan: InferencePlan, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Like :func:`infer_arrow` without an output schema: each output row pickled (``out binary``)."""
    import pickle

    def pack(values: list) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays([pa.array([pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)
                                                     for v in values], pa.binary())], names=["out"])

    return _infer_batches(plan, batches, pack)


def end_feed_task(cluster_id: str, qnames: list[str] | None, _rows: Iterable[Any]) -> Iterator[str]:
    """Mark the feed ended for every local node (all inputs, or ``qnames``); yields the node names.

    Also removes what killed feed tasks left on this executor (claims, spill files)."""
    from tfos.feed.registry import find_local_nodes

    for node in find_local_nodes(cluster_id):
        fdir = ch.FeedDir(node["feed_dir"])
        if not os.path.isdir(node["feed_dir"]):
            continue
        for q in qnames or [None]:
            fdir.mark_ended(q)
        _quietly(reap_claims, node["feed_dir"])
        yield node_name(node)
    _quietly(reap_spills)


CLEANUP_WAIT = 10.0  # seconds the killed tasks of a failed feed get to die (Spark kills in ~2 s)


def clean_up_task(cluster_id: str, feed_id: str, _rows: Iterable[Any], wait: float = CLEANUP_WAIT) -> Iterator[str]:
    """After a failed feed: wait (up to ``wait`` s) for that feed's tasks on this executor to die,
    then remove the claims and spill files of dead feed tasks. Yields one JSON line: the feed's
    claims found here (``shard``, ``node``: which node each killed task fed) and the removed paths."""
    from tfos.feed.registry import find_local_nodes

    name = f"{CLAIM_PREFIX}{feed_id or 'feed'}"
    claims: list[dict] = []
    removed: list[str] = []
    deadline = time.monotonic() + wait
    for node in find_local_nodes(cluster_id):
        feed_dir = node["feed_dir"]
        while time.monotonic() < deadline and any(
                r.get("pid") != os.getpid() for r in live_claims(feed_dir, name)):
            time.sleep(0.1)
        record = _read_claim(os.path.join(feed_dir, name))
        if record is not None:
            claims.append({"shard": record.get("shard"), "node": record.get("node", node_name(node))})
        removed.extend(_quietly(reap_claims, feed_dir) or [])
    removed.extend(_quietly(reap_spills) or [])
    yield json.dumps({"host": socket.gethostname(), "claims": claims, "removed": removed})


def _quietly(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; a clean-up that fails is logged, never raised."""
    try:
        return fn(*args)
    except OSError as exc:
        logger.warning("feed clean-up %s%s failed: %s", fn.__name__, args, exc)
        return None
