"""Which Spark executors the application lost, and why: the driver's view of a dead container.

When YARN kills a container (memory limit, preemption, lost NodeManager) or a standalone worker
loses its executor, nothing on that executor can report it. Spark's driver learns it from the
cluster manager, with the reason (on YARN, the container's diagnostic: "Container killed by YARN
for exceeding physical memory limits ..."). Its status REST API lists removed executors with that
``removeReason``; the JVM's list of live executor ids is the fallback when the UI is off.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from typing import Any

logger = logging.getLogger(__name__)

_JOB_LOSS = re.compile(r"ExecutorLostFailure \(executor (\S+) exited[^)]*\) Reason: ([^\n]*)")
_MEMORY_KILL = re.compile(r"physical memory|memory limit|Exit status: (137|-104)|OOM|OutOfMemory", re.I)


def memory_hint(reason: str) -> str:
    """The setting to change when ``reason`` reads like a memory kill, else ''."""
    if not _MEMORY_KILL.search(reason or ""):
        return ""
    return ("; the executor's container ran out of memory: its TF process, the TF launcher and the Python "
            "workers count against it, so raise spark.executor.memoryOverhead (e.g. --conf "
            "spark.executor.memoryOverhead=2g) or set spark.executor.pyspark.memory")


def lost_in_job_error(message: str) -> dict[str, str]:
    """Executors a failed Spark job names as lost (``ExecutorLostFailure (executor 1 exited ...) Reason: ...``)."""
    return {m.group(1): m.group(2).strip() for m in _JOB_LOSS.finditer(message or "")}


class ExecutorLossProbe:
    """Asks the Spark driver which executors are gone; cheap enough to call every few seconds."""

    def __init__(self, sc: Any, timeout: float = 2.0):
        self.sc = sc
        self.timeout = timeout
        self._rest_broken = False

    def _rest(self) -> dict[str, str] | None:
        url = None if self._rest_broken else self.sc.uiWebUrl
        if not url:
            return None
        try:
            with urllib.request.urlopen(f"{url}/api/v1/applications/{self.sc.applicationId}/allexecutors",
                                        timeout=self.timeout) as reply:
                executors = json.load(reply)
        except (OSError, ValueError) as exc:
            logger.debug("Spark status API at %s unusable (%s); using the executor list", url, exc)
            self._rest_broken = True
            return None
        return {str(e["id"]): e.get("removeReason") or "removed by Spark (no reason given)"
                for e in executors if not e.get("isActive", True) and e.get("id") != "driver"}

    def _live_ids(self) -> set[str] | None:
        try:
            return set(str(self.sc._jsc.sc().getExecutorIds().mkString(",")).split(",")) - {""}
        except Exception as exc:  # noqa: BLE001 - the SparkContext may be stopping
            logger.debug("could not list live executors: %s", exc)
            return None

    def lost(self, executor_ids: set[str]) -> dict[str, str]:
        """The subset of ``executor_ids`` (Spark executor ids) that are no longer alive, with reasons."""
        if not executor_ids:
            return {}
        removed = self._rest()
        if removed is not None:
            return {e: removed[e] for e in executor_ids if e in removed}
        live = self._live_ids()
        if live is None:
            return {}
        return {e: "the executor is no longer registered with the driver" for e in executor_ids - live}
