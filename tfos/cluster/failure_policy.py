"""What the driver does about failed nodes: start the next generation, or give up and raise.

Apart from detection (:mod:`tfos.cluster.failure_detection` says *which* nodes failed) and
from execution (``TFCluster`` stops and starts generations): a pure decision over the
failures, the restarts already made and the failures of the generation before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tfos.cluster.failure_detection import Failure

# Errors a new generation runs into again: the configuration or the environment is wrong.
INCURABLE_MARKERS = ("ClusterConfigError", "GpuAssignmentError", "ModuleNotFoundError", "ImportError: ",
                     "SyntaxError: ")


@dataclass(frozen=True)
class Decision:
    """``restart`` or not, and why (logged by the driver)."""

    restart: bool
    reason: str


def signature(failure: Failure) -> tuple[str, str]:
    """The node and the last line of its error (the exception's type and message)."""
    lines = [line for line in failure.error.strip().splitlines() if line.strip()]
    return failure.node.name, lines[-1].strip() if lines else ""


@dataclass(frozen=True)
class FailurePolicy:
    """Restart up to ``max_restarts`` times; never for a failure a restart cannot cure.

    Incurable: a configuration or environment error (``INCURABLE_MARKERS``), or the same node
    failing with the same error (last line of its traceback) as in the generation before.
    """

    max_restarts: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.max_restarts, int) or isinstance(self.max_restarts, bool) or self.max_restarts < 0:
            raise ValueError(f"max_restarts must be an int >= 0 (0: never restart), got {self.max_restarts!r}")

    def decide(self, failures: Sequence[Failure], restarts_done: int,
               previous: Sequence[Failure] = ()) -> Decision:
        if not failures:
            raise ValueError("decide() needs at least one failure")
        if restarts_done >= self.max_restarts:
            if self.max_restarts == 0:
                return Decision(False, "max_restarts=0: restarts are off")
            return Decision(False, f"out of restarts ({restarts_done} of max_restarts={self.max_restarts} used)")
        for failure in failures:
            marker = next((m for m in INCURABLE_MARKERS if m in failure.error), None)
            if marker:
                return Decision(False, f"{failure.node.name} failed with {marker.split(':')[0]}, which a "
                                       f"restart cannot cure")
        repeated = {signature(f) for f in failures} & {signature(f) for f in previous}
        if repeated:
            node, error = sorted(repeated)[0]
            return Decision(False, f"{node} failed twice in a row with the same error ({error}); a restart "
                                   f"cannot cure it")
        return Decision(True, f"restart {restarts_done + 1} of max_restarts={self.max_restarts}")
