"""What is still running on this machine: checks that no tfos process outlived its owner."""

from __future__ import annotations

import os
import time

from tfos.cluster import lifetime


def processes_owned_by(owners: set[int]) -> list[str]:
    """Live processes whose environment names one of ``owners`` (executor JVM pids) as their executor."""
    marks = {f"{lifetime.OWNER_ENV}={o}".encode() for o in owners}
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = set(f.read().split(b"\0"))
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if env & marks:
            left.append(f"{pid}: {cmd[:160]}")
    return left


def wait_until_none_owned_by(owners: set[int], timeout: float = 30.0) -> list[str]:
    """Wait (bounded) for every process of ``owners`` to end; returns those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    left = processes_owned_by(owners)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_owned_by(owners)
    return left
