"""Which TF nodes have failed, decided from the reservation server's records alone.

Pure: nothing here mutates a record, sleeps or reads a clock; the caller passes ``now`` (on the
``time.monotonic`` scale of ``NodeRecord.last_seen``) and decides what to do with the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tfos.reservation.server import FAILED, RUNNING, NodeRecord


@dataclass(frozen=True)
class Failure:
    """One failed node and the error text that explains it (its traceback, or why it counts as dead)."""

    node: NodeRecord
    error: str


def silence_error(silent_secs: float) -> str:
    """The error of a running node whose heartbeats stopped ``silent_secs`` ago."""
    return (f"no heartbeat for {silent_secs:.0f}s: the TF process or its executor "
            f"died (lost executor, OOM kill, SIGKILL); see the executor's logs")


def detect_failures(nodes: Iterable[NodeRecord], now: float, silence_secs: float) -> list[Failure]:
    """Every node that failed at ``now``: nodes that died (killed, lost, silent) first, then the
    others, each group by when it reported or went silent.

    When one node of a MultiWorkerMirroredStrategy cluster dies, its peers' collectives fail a
    moment later and they report errors of their own: the dead node is the cause and leads.

    A node failed when it reported ``FAILED`` (its traceback is the error), or when it is
    ``RUNNING`` and silent for more than ``silence_secs`` while its supervisor does not vouch for
    its TF process either (see :func:`unresponsive`). Heartbeats start with the TF process, so a
    node still registering or starting (TF import, GPU wait) is never silent.
    """
    failures = []
    for node in nodes:
        if node.state == FAILED:
            failures.append(Failure(node, node.error or ""))
        elif node.state == RUNNING and now - node.last_seen > silence_secs and not _vouched(node, now, silence_secs):
            failures.append(Failure(node, silence_error(now - node.last_seen)))
    return sorted(failures, key=lambda f: (not is_root_cause(f.error), f.node.last_seen))


def _vouched(node: NodeRecord, now: float, silence_secs: float) -> bool:
    return node.alive_at is not None and now - node.alive_at <= silence_secs


def unresponsive(nodes: Iterable[NodeRecord], now: float, silence_secs: float) -> list[NodeRecord]:
    """``RUNNING`` nodes whose TF process sent no heartbeat for ``silence_secs`` although its
    supervisor says the process is alive: its Python threads cannot run (a main in a long call that
    holds the GIL, a process stopped by a debugger). Not failed: worth a warning."""
    return [n for n in nodes if n.state == RUNNING and now - n.last_seen > silence_secs
            and _vouched(n, now, silence_secs)]


# How a node's own death reads (its process killed, its executor lost, silence), as opposed to an
# error its main raised, e.g. a MultiWorkerMirroredStrategy collective that failed because a peer died.
_ROOT_CAUSES = ("killed by signal", "exited with status", "was lost", "no heartbeat for",
                "went away while it waited", "worker exited unexpectedly")


def is_root_cause(error: str) -> bool:
    """Whether ``error`` says the node itself died (rather than its main raising)."""
    return any(marker in error for marker in _ROOT_CAUSES)
