"""Training progress: nodes report step, loss and metrics; the driver shows them.

Node side: ``ctx.report(step=..., loss=..., **metrics)`` (or :class:`tfos.ProgressCallback` in
Keras ``fit``) hands the latest values to a :class:`ProgressReporter`, which never blocks: a
thread sends the newest report at most once a second as a ``PROGRESS`` message over the
reservation control plane, with steps/s (and examples/s when ``examples=`` counts them).

Driver side: :func:`node_status` is one node's row of ``cluster.status()``; :func:`log_progress`
logs one line for all nodes every ``PROGRESS_LOG_SECS`` while anything advances.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from tfos.reservation.client import ReservationClient, ReservationError
from tfos.reservation.server import NodeRecord, ReservationServer

logger = logging.getLogger("tfos.progress")

REPORT_SECS = 1.0
PROGRESS_LOG_SECS = 15.0


def _number(value: Any) -> float | int | str | None:
    """A JSON-safe scalar: numbers (numpy and tensors included) as numbers, anything else as text."""
    if value is None or isinstance(value, bool | str):
        return value if not isinstance(value, bool) else int(value)
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)[:100]
    return number if math.isfinite(number) else str(number)


class ProgressReporter:
    """Keeps a node's latest report and sends it to the driver from a background thread."""

    def __init__(self, client: ReservationClient, executor_id: int, interval: float = REPORT_SECS):
        self.client = client
        self.executor_id = executor_id
        self.interval = interval
        self._lock = threading.Lock()
        self._latest: dict[str, Any] | None = None
        self._previous: tuple[float, float | None, float | None] | None = None  # (time, step, examples) sent
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def report(self, step: int | None = None, loss: float | None = None, examples: int | None = None,
               epoch: int | None = None, **metrics: Any) -> None:
        """Record the latest progress (cheap, never blocks on the network)."""
        body = {"step": _number(step), "loss": _number(loss), "examples": _number(examples),
                "epoch": _number(epoch), "metrics": {str(k): _number(v) for k, v in metrics.items()},
                "_at": time.monotonic()}
        for key in ("step", "loss", "examples", "epoch"):
            if isinstance(body[key], str):
                body["metrics"][key] = body.pop(key)
        with self._lock:
            self._latest = body
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name="tfos-progress", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while not self._wake.wait(self.interval):
            self._send()

    def _send(self) -> None:
        with self._lock:
            body, self._latest = self._latest, None
        if body is None:
            return
        at = body.pop("_at")
        if self._previous is not None:
            then, step, examples = self._previous
            elapsed = at - then
            if elapsed > 0 and step is not None and body["step"] is not None:
                body["steps_per_sec"] = round((body["step"] - step) / elapsed, 3)
            if elapsed > 0 and examples is not None and body["examples"] is not None:
                body["examples_per_sec"] = round((body["examples"] - examples) / elapsed, 3)
        try:
            self.client.progress(self.executor_id, body)
        except ReservationError as exc:
            logger.debug("progress report not sent: %s", exc)
            return
        self._previous = (at, body["step"], body["examples"])

    def close(self) -> None:
        """Send the last report and stop."""
        with self._lock:
            self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.interval + 1.0)
        self._send()
        self.client.close()


def node_status(node: NodeRecord, now: float | None = None) -> dict[str, Any]:
    """One node's row of ``cluster.status()``."""
    now = time.monotonic() if now is None else now
    progress = node.progress
    return {
        "executor_id": node.executor_id, "host": node.host, "state": node.state,
        "step": progress.get("step"), "loss": progress.get("loss"), "epoch": progress.get("epoch"),
        "metrics": dict(progress.get("metrics") or {}), "examples": progress.get("examples"),
        "steps_per_sec": progress.get("steps_per_sec"), "examples_per_sec": progress.get("examples_per_sec"),
        "heartbeat_age": round(now - node.last_seen, 1),
        # since its supervisor last saw the TF process alive (it says so even while the process's GIL is held)
        "process_alive_age": None if node.alive_at is None else round(now - node.alive_at, 1),
        "progress_age": None if node.progress_at is None else round(now - node.progress_at, 1),
        "feed": {q: dict(c) for q, c in node.feed.items()},
    }


def _fmt(value: Any) -> str:
    if not isinstance(value, float):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def progress_line(nodes: list[NodeRecord]) -> str:
    """``worker:0 step 120 loss 0.312 accuracy 0.91 (8.1 steps/s) [input: 7680 rows read, 512 queued] | ...``"""
    parts = []
    for node in nodes:
        p = node.progress
        fed = "".join(f" [{q}: {c.get('rows_read', 0)} rows read, {c.get('queued_rows', 0)} queued]"
                      for q, c in sorted(node.feed.items()))
        if not p:
            parts.append(f"{node.name} {node.state}{fed}")
            continue
        text = f"{node.name}" + (f" epoch {p['epoch']}" if p.get("epoch") is not None else "")
        text += f" step {p.get('step')}" if p.get("step") is not None else ""
        text += f" loss {_fmt(p['loss'])}" if p.get("loss") is not None else ""
        text += "".join(f" {k} {_fmt(v)}" for k, v in sorted((p.get("metrics") or {}).items()))
        rates = [f"{_fmt(p[k])} {u}" for k, u in (("examples_per_sec", "examples/s"), ("steps_per_sec", "steps/s"))
                 if p.get(k) is not None]
        parts.append(text + (f" ({', '.join(rates)})" if rates else "") + fed)
    return " | ".join(parts)


def log_progress(server: ReservationServer, cluster_id: str, every: float | None = None) -> None:
    """Until the server closes: every ``every`` seconds (``PROGRESS_LOG_SECS``), one progress line
    on logger ``tfos.progress`` if any node reported, or read from its feed, since the last."""
    every = PROGRESS_LOG_SECS if every is None else every
    last: dict[int, tuple] = {}
    while not server.wait_closed(every):
        nodes = server.nodes()
        seen = {n.executor_id: (n.progress_at, tuple(sorted((q, c.get("rows_read")) for q, c in n.feed.items())))
                for n in nodes}  # a report, or rows read from a feed
        if any(now != (None, ()) and now != last.get(eid) for eid, now in seen.items()):
            logger.info("tfos %s progress: %s", cluster_id, progress_line(nodes))
        last = seen
