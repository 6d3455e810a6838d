"""Faults injected through tfos's own seams, for the chaos tests on the real cluster.

``DelayedSpawner`` (``tfos.run(..., spawner=...)``) starts chosen nodes' TF processes late, as a
slow TensorFlow import or a wait for a GPU would. ``DelayedStartLauncher`` (in place of
``SparkLauncher``, patched in by the test) holds chosen start tasks back before they register, so that a test can kill
another node's start task before every node registered. Both record the pid of each start task
in ``out`` (``start-task-<executor id>-gen<restart count>``). They live in an importable module:
executors unpickle them by reference.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tfos.cluster.node import start_task
from tfos.cluster.spark_launcher import SparkLauncher
from tfos.cluster.spawner import SpawnedProcess, SpawnRequest, TFProcessSpawner


def _note(out: str, name: str, text: str) -> None:
    path = os.path.join(out, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


@dataclass(frozen=True)
class DelayedSpawner:
    """The default spawner, after ``delays[node]`` seconds for the named nodes (``"worker:1"``)."""

    out: str
    delays: dict[str, float] = field(default_factory=dict)

    def spawn(self, request: SpawnRequest) -> SpawnedProcess:
        delay = self.delays.get(request.node, 0.0)
        if delay:
            _note(self.out, f"spawn-delayed-{request.node.replace(':', '-')}", repr(time.time()))
            time.sleep(delay)
        return TFProcessSpawner().spawn(request)


def delayed_start_partition(out: str, delays: dict[int, float], config: Any, executor_ids: list[int], index: int,
                            _rows: Any) -> Any:
    eid = executor_ids[index]
    _note(out, f"start-task-{eid}-gen{config.restart_count}", str(os.getpid()))
    time.sleep(delays.get(eid, 0.0))
    start_task(config, eid)
    return iter(())


class DelayedStartLauncher(SparkLauncher):
    """``SparkLauncher`` whose generation-0 start tasks of ``delays``' executor ids wait before registering."""

    def __init__(self, sc: Any, out: str, delays: dict[int, float]):
        super().__init__(sc)
        self.out, self.delays = out, dict(delays)

    def start_function(self, config: Any, executor_ids: list[int]) -> Any:
        delays = self.delays if config.restart_count == 0 else {}
        return partial(delayed_start_partition, self.out, delays, config, executor_ids)
