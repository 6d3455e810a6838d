"""What a node ships to its TF process: the start-task config and the pickled payload file's contents.

A leaf module on purpose: ``tfos.cluster.node`` (the executor side) writes a
:class:`PayloadForProcess` with cloudpickle and ``tfos.cluster.tf_process`` reads it back, so
both name these classes by this module's path. It imports no tfos module that leads back to
``node`` (``node`` imports ``prefork``, which imports ``tf_process``, which imports this).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tfos.cluster import template
from tfos.cluster.context import NodeContext

PAYLOAD_FILE = "payload.pkl"


@dataclass
class NodeConfig:
    """Everything a start task needs, shipped to executors in the Spark closure (never broadcast)."""

    cluster_id: str
    secret: bytes = field(repr=False)
    server_address: tuple[str, int]
    roles: tuple[tuple[str, int], ...]
    main_fun: Callable[[Any, NodeContext], Any]
    tf_args: Any
    input_mode: int
    default_fs: str
    working_dir: str
    reservation_timeout: float = 600.0
    tensorboard: bool = False
    log_dir: str | None = None
    release_port: bool = True
    env: dict[str, str] = field(default_factory=dict)
    heartbeat_interval: float = 2.0
    restart_count: int = 0  # which generation of the cluster's nodes this is (0: the first)
    spawner: Any = None  # a tfos.cluster.spawner.ProcessSpawner; None: the default (warm launcher)

    def tensorboard_node(self) -> tuple[str, int]:
        """TensorBoard runs on the chief/master, or on worker 0 when there is none."""
        jobs = {job for job, _ in self.roles}
        for chief in (template.CHIEF, template.MASTER):
            if chief in jobs:
                return chief, 0
        return template.WORKER, 0


@dataclass
class PayloadForProcess:
    """What the TF process unpickles from a private local file (written by its own node)."""

    config: NodeConfig
    ctx: NodeContext
    tensorboard_port: int | None
