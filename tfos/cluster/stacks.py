"""A hung node explains itself: its Python thread stacks, collected for the driver's timeout error.

The driver asks (``ReservationServer.request_stacks``); the request id rides on the next
heartbeat reply; the TF process's heartbeat thread answers with :func:`thread_stacks`
(``STACKS`` message), which works while the main thread is stuck anywhere that releases the GIL
(sleep, I/O, a lock, a TF op, a collective that waits for a peer).
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback

from tfos.reservation.server import TERMINAL_STATES, NodeRecord, ReservationServer

logger = logging.getLogger(__name__)

STACKS_WAIT_SECS = 8.0  # a request rides on the next heartbeat reply (every 2 s)


def thread_stacks() -> str:
    """Every thread's Python stack, the main thread first."""
    names = {t.ident: t.name for t in threading.enumerate()}
    main = threading.main_thread().ident
    frames = sorted(sys._current_frames().items(), key=lambda item: item[0] != main)
    return "\n".join(f"Thread {names.get(ident, ident)} ({ident}):\n" + "".join(traceback.format_stack(frame))
                     for ident, frame in frames)


def log_live_stacks(server: ReservationServer, nodes: list[NodeRecord], why: str,
                    timeout: float | None = None) -> dict[str, str]:
    """Ask ``nodes`` (those still running) for their stacks and log each answer; returns them by node name.

    Waits up to ``timeout`` (default: two heartbeats and a little) for the answers.
    """
    live = [n for n in nodes if n.state not in TERMINAL_STATES]
    if not live:
        return {}
    request = server.request_stacks()
    wait = STACKS_WAIT_SECS if timeout is None else timeout
    answers = server.await_stacks({n.executor_id for n in live}, request, wait)
    found = {}
    for node in live:
        text = answers.get(node.executor_id)
        if text is None:
            logger.error("%s: %s (executor %d on %s, %s) did not send its stacks within %.0fs%s", why, node.name,
                         node.executor_id, node.host, node.state, wait,
                         "" if node.state != "registered" else ": its TF process had not started main_fun yet")
            continue
        found[node.name] = text
        logger.error("%s: Python stacks of %s (executor %d on %s):\n%s", why, node.name, node.executor_id,
                     node.host, text)
    return found
