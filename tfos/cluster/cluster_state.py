"""The lifecycle states of a driver-side TF cluster and the moves allowed between them."""

from __future__ import annotations

from enum import StrEnum


class ClusterState(StrEnum):
    """Where a ``TFCluster`` is in its life. A ``str``: ``cluster.state == "stopped"`` still holds.

    ``STARTING`` -> ``RUNNING`` -> ``SHUTTING_DOWN`` -> ``STOPPED`` is the normal path. A node
    failure that the failure policy may cure moves ``STARTING`` or ``RUNNING`` to ``RESTARTING``
    (this generation's nodes are being stopped), which moves back to ``STARTING`` for the next
    generation. Any live state may move to ``FAILED`` (a node failed, for good) or straight to
    ``STOPPED`` (``with`` left on an exception). ``FAILED`` and ``STOPPED`` are terminal: the
    cluster runs nothing again; a ``FAILED`` cluster only moves on to ``STOPPED`` once its nodes
    were stopped after the failure.
    """

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    SHUTTING_DOWN = "shutting_down"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """The cluster runs no TF work any more (its nodes are stopped or being stopped)."""
        return self in (ClusterState.STOPPED, ClusterState.FAILED)

    def can_move_to(self, new: ClusterState) -> bool:
        """Whether ``self -> new`` is an allowed move (staying in the same state is not a move)."""
        return new in ALLOWED_MOVES[self]


ALLOWED_MOVES: dict[ClusterState, frozenset[ClusterState]] = {
    ClusterState.STARTING: frozenset({ClusterState.RUNNING, ClusterState.RESTARTING, ClusterState.SHUTTING_DOWN,
                                      ClusterState.FAILED, ClusterState.STOPPED}),
    ClusterState.RUNNING: frozenset({ClusterState.RESTARTING, ClusterState.SHUTTING_DOWN, ClusterState.FAILED,
                                     ClusterState.STOPPED}),
    ClusterState.RESTARTING: frozenset({ClusterState.STARTING, ClusterState.FAILED, ClusterState.STOPPED}),
    ClusterState.SHUTTING_DOWN: frozenset({ClusterState.STOPPED, ClusterState.FAILED}),
    ClusterState.FAILED: frozenset({ClusterState.STOPPED}),
    ClusterState.STOPPED: frozenset(),
}
