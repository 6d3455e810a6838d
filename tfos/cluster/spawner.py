"""How a node starts its TF process: the process spawner.

A node (``tfos.cluster.node``) hands the spawner a :class:`SpawnRequest` (the payload file it
wrote, the process environment with ``TF_CONFIG``, the working directory and any file
descriptors the process must inherit) and supervises what comes back: anything with a ``pid``
and a ``wait()`` that returns the exit status as ``subprocess.Popen.wait`` does.

:class:`TFProcessSpawner` is the default: it forks the TF process from the executor's warm
launcher (``tfos.cluster.prefork``), or starts a fresh interpreter when the launcher is off
(``TFOS_PREFORK=0``) or descriptors must be inherited. Either way the process stays in the
executor's session and ends with it.

``tfos.run(..., spawner=...)`` takes another one. It travels to the executors in the Spark task
closure, so it must be picklable (cloudpickle): a small dataclass is the usual shape. Wrapping
the default is how the chaos tests start one node's TF process late, and how a site can, say,
run TF processes under ``numactl`` or a profiler.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Protocol

from tfos.cluster import prefork


@dataclass(frozen=True)
class SpawnRequest:
    """One TF process to start, for the node ``node`` (``worker:1``)."""

    node: str
    payload_path: str
    env: dict[str, str]
    cwd: str
    pass_fds: tuple[int, ...] = ()

    def command(self) -> list[str]:
        """The command line of a TF process started from scratch."""
        return [sys.executable, "-m", "tfos.cluster.tf_process", self.payload_path]


class SpawnedProcess(Protocol):
    """What a spawner returns: the node waits for it and reports how it ended."""

    pid: int

    def wait(self) -> int:
        """Block until the process ended; its exit status (negative: killed by that signal)."""


class ProcessSpawner(Protocol):
    """Starts a node's TF process (see the module doc)."""

    def spawn(self, request: SpawnRequest) -> SpawnedProcess:
        """Start the process and return at once; raise (naming why) when it cannot be started."""


@dataclass(frozen=True)
class TFProcessSpawner:
    """The default: fork from the executor's warm launcher, else a fresh interpreter."""

    def spawn(self, request: SpawnRequest) -> SpawnedProcess:
        if prefork.enabled() and not request.pass_fds:
            return prefork.launch(request.payload_path, request.env, request.cwd)
        # no new session: the process ends with the executor
        return subprocess.Popen(request.command(), env=request.env, pass_fds=request.pass_fds, cwd=request.cwd)


def check_spawner(spawner: object) -> None:
    """Fail at the public edge, on the driver, when ``spawner`` cannot be one."""
    if not callable(getattr(spawner, "spawn", None)):
        raise TypeError(f"spawner must have a spawn(request) method (see tfos.cluster.spawner.ProcessSpawner), "
                        f"got {type(spawner).__name__}")
