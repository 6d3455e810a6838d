"""Training, map side: rows -> per-shard Arrow chunks, and the rows per epoch the shards agree on.

:func:`shard_rows` (RDD) and :func:`shard_arrow` (DataFrame, columnar throughout) turn each
input partition into Arrow IPC chunks keyed by *shard*: row ``j`` of partition ``p`` goes to
shard ``(p + j) mod num_shards`` (rotation, :class:`~tfos.feed.plans.ShardPlan`; no count of
the input needed). :func:`agreed_rows` is the number of rows every worker then feeds per epoch
of one input, from every shard's size. The column names and the DDL of the routed chunks are
here too (the driver builds the jobs around them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from tfos.feed import arrow_codec as codec
from tfos.feed.chunking import FIRST_CHUNK_ROWS, ChunkSizer, encoded_chunks
from tfos.feed.errors import FeedError
from tfos.feed.plans import ShardPlan
from tfos.feed.progress import report_error

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
    sizer = ChunkSizer(plan.chunk_rows, plan.chunk_bytes)

    def located() -> Iterator[tuple[int | None, int, pa.RecordBatch]]:
        first = 0
        for batch in encoded_chunks(rows, sizer, encoder.encode):  # the garbage collector paused per chunk
            yield partition, first, batch
            first += batch.num_rows

    try:
        for k, n, payload in split_by_shard(plan, located()):
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

    for k, rows, payload in split_by_shard(plan, located()):
        yield pa.RecordBatch.from_arrays(
            [pa.array([k], pa.int32()), pa.array([plan.qindex], pa.int32()), pa.array([rows], pa.int64()),
             pa.array([payload], pa.binary())], names=["shard", "q", "rows", "payload"])


def split_by_shard(plan: ShardPlan, located: Iterable[tuple[int | None, int, pa.RecordBatch]]
                   ) -> Iterator[tuple[int, int, bytes]]:
    """Batches of one partition, each with its first row's position in the partition -> per-shard
    ``(shard, rows, arrow_ipc_bytes)`` chunks: row ``pos`` goes to shard ``(offset + pos) mod n``
    (see :class:`ShardPlan`).

    A shard's first chunk leaves with the first batch that has rows of it, and its chunks grow
    from there (doubling from ``FIRST_CHUNK_ROWS``) to ``plan.chunk_rows``: the first rows reach
    their node while the partition is still being read, instead of after ``n * chunk_rows`` rows.
    """
    n = plan.num_shards
    pending: list[list[pa.RecordBatch]] = [[] for _ in range(n)]
    pending_rows = [0] * n
    pending_bytes = [0] * n
    emitted = [0] * n

    def emit(k: int) -> tuple[int, int, bytes]:
        out = (k, pending_rows[k], codec.to_ipc(pending[k]).to_pybytes())
        pending[k], pending_rows[k], pending_bytes[k] = [], 0, 0
        emitted[k] += 1
        return out

    def full(k: int) -> bool:
        if not emitted[k]:
            return True
        return pending_rows[k] >= min(plan.chunk_rows, FIRST_CHUNK_ROWS << emitted[k]) or \
            pending_bytes[k] >= plan.chunk_bytes

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
            if full(k):
                yield emit(k)
    for k in range(n):
        if pending_rows[k]:
            yield emit(k)


SHARD_COLUMN = "__tfos_shard__"



def agreed_rows(remainder: str, sizes: list[int]) -> int:
    """Rows every worker feeds per epoch of one input, given every shard's size: the smallest
    shard (``drop``), or the largest (``wrap``; an empty shard has nothing to repeat, so then
    the smallest too)."""
    smallest = min(sizes, default=0)
    if remainder == "wrap" and smallest > 0:
        return max(sizes)
    return smallest
