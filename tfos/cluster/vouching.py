"""The node supervisor's heartbeat on its TF process's behalf: :class:`Voucher`.

The TF process sends its own heartbeats from a Python thread, which cannot run while the main
thread holds the GIL (a long call into a C extension that does not release it, a process stopped
in a debugger). Silence alone would then read as death. The supervisor, which started the process
and waits for it on the executor, tells the driver every heartbeat interval that the process is
still alive, with its CPU seconds so far: the driver declares a silent node dead only when neither
voice is heard (its executor or host is gone), and warns about a live but silent one.
"""

from __future__ import annotations

import logging
import os
import threading

from tfos.cluster import lifetime
from tfos.reservation.client import ReservationClient

logger = logging.getLogger(__name__)

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (``/proc``), or None when it is gone or unreadable."""
    fields = lifetime.stat_fields(pid)
    if len(fields) < 13 or fields[0] == b"Z":  # gone, or exited and not yet reaped
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


class Voucher:
    """A daemon thread that vouches for process ``pid`` every ``interval`` seconds while it lives."""

    def __init__(self, client: ReservationClient, executor_id: int, pid: int, interval: float, name: str):
        self._client = client
        self._executor_id = executor_id
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tfos-vouch-{name}", daemon=True)

    def start(self) -> Voucher:
        self._thread.start()
        return self

    def stop(self) -> None:
        """No more vouching: the process ended (its exit is reported apart)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            cpu = process_cpu_seconds(self._pid)
            if cpu is None:  # gone: the supervisor's wait() returns and reports how it ended
                return
            try:
                if self._client.vouch(self._executor_id, cpu):
                    return  # the driver is stopping the cluster
            except Exception as exc:  # noqa: BLE001 - the TF process's own heartbeats decide about the driver
                logger.debug("could not vouch for pid %d: %s", self._pid, exc)
