"""What the driver ships to each kind of feed task, pickled in the task closure:
:class:`ShardPlan` (shard map tasks), :class:`TrainPlan` (shard feed tasks) and
:class:`InferencePlan` (inference tasks)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tfos.feed.chunking import DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_ROWS


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


@dataclass
class InferencePlan:
    """Everything an inference task needs (shipped in the task closure)."""

    cluster_id: str
    qname: str
    feed_timeout: float
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    output_schema: bytes | None = None  # serialized pa.Schema for DataFrame output
