"""Executor-side logging: every record carries the node's role and index, e.g. ``[worker:1]``."""

from __future__ import annotations

import collections
import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tfos.cluster.relay import OutputRelay

NODE_FORMAT = "%(asctime)s %(levelname)s [%(node)s] %(name)s: %(message)s"


class NodeLogAdapter(logging.LoggerAdapter):
    """Prefixes records with the node name without touching handlers of a reused Python worker."""

    def process(self, msg, kwargs):
        return f"[{self.extra['node']}] {msg}", kwargs


class _NodeFilter(logging.Filter):
    def __init__(self, node: str):
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        return True


class LogTail(logging.Handler):
    """Keeps the last formatted records, to send with a failure report."""

    def __init__(self, capacity: int = 50):
        super().__init__()
        self.records: collections.deque[str] = collections.deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(self.format(record))
        except Exception:  # noqa: BLE001 - a logging handler must never raise
            self.handleError(record)

    def tail(self) -> list[str]:
        return list(self.records)


def configure_process_logging(node: str, level: int = logging.INFO, relay: OutputRelay | None = None) -> LogTail:
    """Set up the root logger of a TF process: stderr plus an in-memory tail, all tagged with ``node``.

    With a ``relay`` the records also go to the driver, and stderr means the executor's original
    stderr (not the relay's pipe, which would carry every record a second time).
    """
    formatter = logging.Formatter(NODE_FORMAT)
    node_filter = _NodeFilter(node)
    out = sys.stderr if relay is None else open(relay.stderr_fd, "w", buffering=1, encoding="utf-8",  # noqa: SIM115
                                                errors="replace", closefd=False)
    stream = logging.StreamHandler(out)
    tail = LogTail()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in (stream, tail):
        handler.setFormatter(formatter)
        handler.addFilter(node_filter)
        root.addHandler(handler)
    if relay is not None:
        root.addHandler(relay.handler)
    root.setLevel(level)
    return tail
