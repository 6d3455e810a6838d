"""Which Spark executors the application lost, and why: the driver's view of a dead container.

When YARN kills a container (memory limit, preemption, lost NodeManager) or a standalone worker
loses its executor, nothing on that executor can report it. Spark's driver learns it from the
cluster manager, with the reason (on YARN, the container's diagnostic: "Container killed by YARN
for exceeding physical memory limits ..."). The driver's status store (what the UI's Executors
tab shows) keeps removed executors with that ``removeReason``; the JVM's list of live executor ids
is the fallback.
"""

from __future__ import annotations

import logging
import re
from typing import Any

logger = logging.getLogger(__name__)

_JOB_LOSS = re.compile(r"ExecutorLostFailure \(executor (\S+) exited[^)]*\) Reason: ([^\n]*)")
_MEMORY_KILL = re.compile(r"physical memory|memory limit|OOM|OutOfMemory|Exit status: -104", re.I)
_SIGKILL = re.compile(r"Exit status: 137|exit code 137|code 137", re.I)
_RAISE_MEMORY = ("its TF process, the TF launcher and the Python workers count against the container, so raise "
                 "spark.executor.memoryOverhead (e.g. --conf spark.executor.memoryOverhead=2g) or set "
                 "spark.executor.pyspark.memory")


def memory_hint(reason: str) -> str:
    """The setting to change when ``reason`` reads like a memory kill, else ''."""
    if _MEMORY_KILL.search(reason or ""):
        return f"; the executor's container ran out of memory: {_RAISE_MEMORY}"
    if _SIGKILL.search(reason or ""):
        return f"; exit status 137 is a SIGKILL, often the kernel's or YARN's memory killer: if so, {_RAISE_MEMORY}"
    return ""


def lost_in_job_error(message: str) -> dict[str, str]:
    """Executors a failed Spark job names as lost (``ExecutorLostFailure (executor 1 exited ...) Reason: ...``)."""
    return {m.group(1): m.group(2).strip() for m in _JOB_LOSS.finditer(message or "")}


class ExecutorLossProbe:
    """Asks the Spark driver which executors are gone; cheap enough to call every few seconds."""

    def __init__(self, sc: Any):
        self.sc = sc

    def _removed(self) -> dict[str, str] | None:
        """Removed executors and their reasons from the driver's status store (what the UI shows)."""
        try:
            summaries = self.sc._jsc.sc().statusStore().executorList(False)
            removed = {}
            for i in range(summaries.length()):
                summary = summaries.apply(i)
                if not summary.isActive() and summary.id() != "driver":
                    reason = summary.removeReason()
                    removed[str(summary.id())] = (str(reason.get()) if reason.isDefined()
                                                  else "removed by Spark (no reason given)")
            return removed
        except Exception as exc:  # noqa: BLE001 - another Spark version, or a stopping context
            logger.debug("Spark's status store is unusable (%s); using the executor list", exc)
            return None

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
        removed = self._removed()
        if removed is not None:
            return {e: removed[e] for e in executor_ids if e in removed}
        live = self._live_ids()
        if live is None:
            return {}
        return {e: "the executor is no longer registered with the driver" for e in executor_ids - live}
