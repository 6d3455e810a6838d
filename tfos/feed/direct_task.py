"""Training, feed side without a shuffle: the feed task of one input partition.

:func:`send_partition` runs as an ordinary ``mapPartitionsWithIndex`` task wherever Spark
schedules the partition (next to its cached blocks). It encodes the rows into Arrow chunks,
cuts each chunk by rotation (row ``j`` of partition ``p`` to shard ``(p + j) mod n``, as
:func:`~tfos.feed.sharding.shard_rows`) and sends shard ``k`` straight to the feed hub of
worker ``k`` over an authenticated link (:class:`~tfos.feed.hub_link.HubLink`: the hub's Unix
socket when it runs on this host, else TCP), then every hub
the partition's row count. A hub whose node terminated its input stops taking rows; once no
hub wants any, the task stops reading its partition. A malformed row fails the task with the
partition and row offset, and the hubs are told, so their nodes fail with the same words.
:func:`send_arrow` does the same for a DataFrame's Arrow batches as Spark hands them over.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from tfos.feed import arrow_codec as codec
from tfos.feed.chunking import ChunkSizer, encoded_chunks
from tfos.feed.errors import FeedError
from tfos.feed.hub_link import HubLink
from tfos.feed.plans import DirectPlan
from tfos.feed.progress import report_error
from tfos.feed.sharding import split_by_shard

logger = logging.getLogger("tfos.feed")


def _attempt() -> int:
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        return int(ctx.attemptNumber()) if ctx is not None else 0
    except ImportError:
        return 0


def send_partition(plan: DirectPlan, partition: int, rows: Iterable[Any]) -> Iterator[str]:
    """``mapPartitionsWithIndex`` function over an RDD's rows: encode them into Arrow chunks and send
    this partition's shards to the hubs; yields one JSON line of statistics."""
    encoder = codec.RowEncoder(partition)
    sizer = ChunkSizer(plan.chunk_rows, plan.chunk_bytes)
    yield from _send(plan, partition, encoded_chunks(rows, sizer, encoder.encode))


def send_arrow(plan: DirectPlan, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` function over a DataFrame's own Arrow batches (columnar throughout, no Python row):
    send this partition's shards to the hubs; yields one ``line`` of statistics."""
    from pyspark import TaskContext

    partition = TaskContext.get().partitionId() - plan.partition_offset
    for line in _send(plan, partition, (b for b in batches if b.num_rows)):
        yield pa.RecordBatch.from_arrays([pa.array([line], pa.string())], names=["line"])


def _send(plan: DirectPlan, partition: int, batches: Iterable[pa.RecordBatch]) -> Iterator[str]:
    attempt = _attempt()
    links: list[HubLink] = []
    counted = 0
    try:
        for k, hub in enumerate(plan.hubs):
            links.append(HubLink(hub, plan.hello(partition, k, attempt), plan.secret, plan.feed_timeout))

        def located() -> Iterator[tuple[int | None, int, pa.RecordBatch]]:
            nonlocal counted
            for batch in batches:
                yield partition, counted, batch
                counted += batch.num_rows

        complete = True
        if all(link.stopped for link in links):
            complete = False
        else:
            for k, n, payload in split_by_shard(plan.shard_plan(), located()):
                links[k].send(payload, n)
                if all(link.stopped for link in links):
                    complete = False  # no node wants more of this input: read no further
                    break
        if complete:
            for link in links:
                link.end(counted)
        stats = {"qname": plan.qname, "partition": partition, "rows": counted, "complete": complete,
                 "sent": {link.node: link.rows_sent for link in links},
                 "unix_socket": [link.node for link in links if link.local],
                 "stopped": {link.node: link.stopped for link in links if link.stopped}}
        yield json.dumps(stats)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, FeedError) or f"partition {partition}" not in message:
            message = f"{type(exc).__name__}: the feed task of partition {partition} of input {plan.qname!r}: {exc}"
        for link in links:
            link.fail(message)
        report_error(plan.progress, {"feed": "map", "shard": -1}, message)
        raise
    finally:
        for link in links:
            link.close()
