"""TensorFlowOnSpark ``TFManager``: the ``ctx.mgr`` of a node.

In TensorFlowOnSpark ``ctx.mgr`` is a ``multiprocessing`` manager shared by the executor's
Python workers, holding the data queues and a key-value ``state`` ('running',
'terminating', 'stopped'). tfos feeds through executor-local sockets instead, so here it is
a plain object owned by the TF process: ``get``/``set`` keep the key-value state,
``get_queue(name)`` returns the queue view of an open ``TFNode.DataFeed`` (``None`` for an
unknown name, as there), and it carries what ``DataFeed(ctx.mgr)`` needs to find the feed.
"""

from __future__ import annotations

import queue
from collections.abc import Iterable
from typing import Any


class TFManager:
    """Key-value state and feed queues of one TF node (see the module doc)."""

    def __init__(self, ctx: Any = None, queues: Iterable[str] = ()):
        self.feed_dir = getattr(ctx, "feed_dir", "") or ""
        self.job_name = getattr(ctx, "job_name", None)
        self.task_index = getattr(ctx, "task_index", 0)
        self._state: dict[str, Any] = {"state": "running"}
        self._queues: dict[str, Any] = {name: queue.Queue() for name in queues}

    def get(self, key: str) -> Any:
        """The value stored for ``key`` (``KeyError`` if none); ``'state'`` starts as ``'running'``."""
        return self._state[key]

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` for ``key``."""
        self._state[key] = value

    def get_queue(self, qname: str) -> Any:
        """The queue named ``qname``, or None."""
        return self._queues.get(qname)

    def register_queue(self, qname: str, q: Any) -> None:
        """Make ``q`` the queue ``get_queue(qname)`` returns (``DataFeed`` registers its views)."""
        self._queues[qname] = q


def start(authkey: bytes, queues: Iterable[str], mode: str = "local") -> TFManager:
    """A new manager with a local ``queue.Queue`` per name in ``queues``.

    It lives in this process: ``authkey`` and ``mode`` are accepted for TensorFlowOnSpark's
    signature; nothing listens on the network.
    """
    if mode not in ("local", "remote"):
        raise ValueError(f"mode must be 'local' or 'remote', got {mode!r}")
    return TFManager(None, queues)


def connect(address: Any, authkey: bytes) -> TFManager:
    """Not available: tfos nodes run no multiprocessing manager to connect to."""
    raise NotImplementedError("tfos runs no multiprocessing manager per executor; inside main_fun use ctx.mgr, "
                              "on the driver the TFCluster methods (train, inference, shutdown)")
