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


@dataclass
class DirectPlan:
    """What a training feed task of one input needs to send its partition's shards straight to the
    nodes' feed hubs (shipped in the task closure): hub ``k`` (``{"node", "host", "port"}``) gets shard ``k``."""

    qindex: int
    qname: str
    feed_id: str
    hubs: list[dict]
    secret: bytes = field(repr=False)
    num_partitions: int = 1
    num_epochs: int = 1
    remainder: str = "drop"
    end_feed: bool = False
    feed_timeout: float = 600.0
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    progress: tuple | None = None
    partition_offset: int = 0  # a DataFrame's first partition's index in the feed job's stage (several inputs)

    def shard_plan(self) -> ShardPlan:
        return ShardPlan(self.qindex, len(self.hubs), self.chunk_rows, self.chunk_bytes, self.progress)

    def hello(self, partition: int, shard: int, attempt: int) -> dict:
        """The feed plan a feed task greets hub ``shard`` with (signed by the link)."""
        return {"feed": self.feed_id, "qname": self.qname, "partition": partition, "attempt": attempt,
                "shard": shard, "shards": len(self.hubs), "partitions": self.num_partitions,
                "epochs": self.num_epochs, "remainder": self.remainder, "end_feed": self.end_feed,
                "feed_timeout": self.feed_timeout, "progress": list(self.progress) if self.progress else None}
