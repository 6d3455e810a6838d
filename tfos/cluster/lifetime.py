"""Process lifetime: every process tfos starts ends with the executor that owns it.

An executor is a JVM (Spark's ``CoarseGrainedExecutorBackend``, or the driver's JVM in local
mode); its Python workers, the TF launcher, TF processes and TensorBoard are its descendants and
stay in its process group, so a YARN container kill or a Spark worker stopping the executor
reaches them. Two guards make that hold even when a process in the middle of the chain is
SIGKILLed: each child asks the kernel for a parent-death signal (``PR_SET_PDEATHSIG``), and the
long-lived ones (launcher, TF process) also watch the executor JVM itself through a pidfd and
exit when it is gone.

``python -m tfos.cluster.lifetime --parent PID -- CMD ARGS...`` execs ``CMD`` with the
parent-death signal set (it survives ``exec``); tfos starts TensorBoard this way.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import select
import signal
import sys
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
OWNER_ENV = "TFOS_OWNER_PID"  # the executor JVM's pid, handed to every process tfos starts
_EXECUTOR_ID = re.compile(rb"--executor-id\x00([^\x00]+)")


def _read_proc(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def stat_fields(pid: int) -> list[bytes]:
    """The fields of ``/proc/<pid>/stat`` after the command name, from ``state`` on (``[1]`` is the
    parent, ``[11]``/``[12]`` user/system CPU ticks, ``[19]`` the start time); empty if unreadable."""
    stat = _read_proc(pid, "stat")
    # "pid (comm) state ppid ..."; comm may hold spaces and parentheses: split after the last ')'
    return stat[stat.rfind(b")") + 2:].split() if stat else []


def _parent_of(pid: int) -> int:
    fields = stat_fields(pid)
    return int(fields[1]) if len(fields) > 1 else 0


def _is_jvm(pid: int) -> bool:
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        exe = ""
    return exe == "java" or _read_proc(pid, "comm").strip() == b"java"


def executor_jvm_pid(start: int | None = None) -> int | None:
    """The nearest JVM among the ancestors of ``start`` (default: this process), or None.

    In a Spark Python worker that is the executor (worker <- pyspark daemon <- JVM).
    """
    pid = _parent_of(start or os.getpid())
    for _ in range(64):
        if pid <= 1:
            return None
        if _is_jvm(pid):
            return pid
        pid = _parent_of(pid)
    return None


def spark_executor_id(jvm_pid: int | None) -> str | None:
    """Spark's executor id from the executor JVM's command line (``--executor-id N``), or None."""
    if jvm_pid is None:
        return None
    match = _EXECUTOR_ID.search(_read_proc(jvm_pid, "cmdline"))
    return match.group(1).decode(errors="replace") if match else None


def owner_pid() -> int:
    """The process whose end must end this one's descendants: the executor JVM, else this process."""
    inherited = os.environ.get(OWNER_ENV, "")
    if inherited.isdigit() and _alive(int(inherited)):
        return int(inherited)
    return executor_jvm_pid() or os.getpid()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def set_parent_death_signal(expected_parent: int, sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent ends; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:  # not Linux: the owner watch still applies
        logger.debug("no parent-death signal on this platform: %s", exc)
    if os.getppid() != expected_parent:  # the parent died before the signal was armed
        os._exit(1)


def wait_for_exit(pid: int, timeout: float | None = None) -> bool:
    """Block until process ``pid`` has ended (True) or ``timeout`` passed (False)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:  # no pidfd (old kernel, other platform): poll
        while _alive(pid):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.5)
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if poller.poll(None if left is None else int(left * 1000)):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
    finally:
        os.close(fd)


def exit_with_owner(owner: int, on_exit: Callable[[], None] | None = None, what: str = "process") -> threading.Thread:
    """Start a daemon thread that ends this process (``on_exit`` first) once ``owner`` has ended."""

    def watch() -> None:
        wait_for_exit(owner)
        logger.warning("%s %d: its executor (pid %d) is gone; exiting", what, os.getpid(), owner)
        if on_exit is not None:
            with contextlib.suppress(Exception):
                on_exit()
        os._exit(143)

    thread = threading.Thread(target=watch, name="tfos-owner-watch", daemon=True)
    thread.start()
    return thread


def terminate_children(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM ``pids``, then SIGKILL whatever still runs after ``grace`` seconds."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for pid in pids:
        if not wait_for_exit(pid, max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def guarded_command(cmd: list[str]) -> list[str]:
    """``cmd`` wrapped so that it receives SIGTERM when this process ends (see the module doc)."""
    return [sys.executable, "-m", "tfos.cluster.lifetime", "--parent", str(os.getpid()), "--", *cmd]


def _exec_guarded(argv: list[str]) -> None:
    if len(argv) < 4 or argv[0] != "--parent" or argv[2] != "--":
        sys.exit("usage: python -m tfos.cluster.lifetime --parent PID -- CMD [ARGS...]")
    set_parent_death_signal(int(argv[1]), signal.SIGTERM)
    os.execvp(argv[3], argv[3:])


if __name__ == "__main__":
    _exec_guarded(sys.argv[1:])
