"""How a TF cluster's nodes get started on Spark, and what Spark says when they are gone.

``TFCluster`` talks to Spark only through a launcher: run one generation's start job, cancel
a job group, wait for enough executors, ask which executors were lost. Tests replace it with
an in-process fake (``tests/fake_launcher.py``) to drive the lifecycle without Spark.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Protocol

from tfos.cluster.node import start_task
from tfos.cluster.payload import NodeConfig


class NodeLauncher(Protocol):
    """What ``TFCluster`` needs from the platform its nodes run on."""

    def run_start_job(self, config: NodeConfig, executor_ids: list[int], group: str, description: str) -> None:
        """Start one node per id in ``executor_ids`` and block until they all ended (raises when the job failed)."""

    def cancel(self, group: str) -> None:
        """Cancel the jobs of ``group`` (their tasks, and so their TF processes, are killed)."""

    def await_executors(self, count: int, wait_secs: float) -> None:
        """Return once ``count`` single-core executors are there; raise naming what is missing after ``wait_secs``."""

    def lost_executors(self, executor_ids: set[str]) -> dict[str, str]:
        """Which of these platform executor ids are gone, with the platform's reason."""

    def lost_in_job_error(self, message: str) -> dict[str, str]:
        """Executors a failed start job's error names as lost, with reasons."""


class SparkLauncher:
    """Starts nodes as one barrier stage of single-core tasks, one task per executor."""

    def __init__(self, sc: Any):
        self.sc = sc
        self._probe: Any = None

    def run_start_job(self, config: NodeConfig, executor_ids: list[int], group: str, description: str) -> None:
        self.sc.setJobGroup(group, description, interruptOnCancel=True)
        rdd = self.sc.parallelize(range(len(executor_ids)), len(executor_ids))
        rdd.barrier().mapPartitionsWithIndex(self.start_function(config, executor_ids)).collect()

    def start_function(self, config: NodeConfig, executor_ids: list[int]) -> Callable[[int, Any], Iterator[Any]]:
        """The function each start task runs on its partition (shipped to the executors, so it must not
        hold the launcher: a subclass returns its own, e.g. to delay one node's start in a chaos test)."""
        return partial(start_partition, config, executor_ids)

    def cancel(self, group: str) -> None:
        try:
            self.sc.cancelJobGroup(group)
        except Exception:  # noqa: BLE001 - the SparkContext may be stopping
            pass

    def await_executors(self, count: int, wait_secs: float) -> None:
        from tfos.cluster.validation import validate_spark

        validate_spark(self.sc, count, wait_secs=wait_secs)

    def lost_executors(self, executor_ids: set[str]) -> dict[str, str]:
        from tfos.cluster.executor_loss import ExecutorLossProbe

        if self._probe is None:
            self._probe = ExecutorLossProbe(self.sc)
        return self._probe.lost(executor_ids)

    def lost_in_job_error(self, message: str) -> dict[str, str]:
        from tfos.cluster.executor_loss import lost_in_job_error

        return lost_in_job_error(message)


def start_partition(config: NodeConfig, executor_ids: list[int], index: int, _rows: Any) -> Iterator[Any]:
    """Start task ``index`` starts the node of executor id ``executor_ids[index]``."""
    start_task(config, executor_ids[index])
    return iter(())
