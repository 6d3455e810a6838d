"""A shard feed task's claim on its node: which Spark task attempt feeds a node for one feed.

A shard feed task claims its node (``feed_dir/_feeding-<feed_id>``, JSON: shard, attempt, pid)
with :func:`claim_node` and releases it in its ``finally`` (:class:`NodeClaim`). A killed task
(Spark SIGKILLs its Python worker) leaves its claim: the next task whose process finds the
claimant gone takes it over, and :func:`reap_claims` removes such claims; :func:`live_claims`
lists the claims of tasks still running (a retiring node waits for them).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from tfos.feed import channel as ch
from tfos.feed.errors import FeedError
from tfos.feed.plans import TrainPlan
from tfos.feed.targets import NodeTarget

logger = logging.getLogger("tfos.feed")

CLAIM_PREFIX = "_feeding-"
_TMP = ".tmp-"
CLAIM_TAKEOVER_WAIT = 15.0  # seconds an earlier attempt of the same task gets to die (Spark kills it)



@dataclass(frozen=True)
class TaskAttempt:
    """Which Spark task attempt runs a shard feed task (recorded in its claim on the node)."""

    shard: int
    attempt: int = 0  # TaskContext.attemptNumber()
    task_attempt_id: int = -1  # TaskContext.taskAttemptId(): unique in the application, grows with time
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def current(cls, shard: int) -> TaskAttempt:
        from pyspark import TaskContext

        tc = TaskContext.get()
        if tc is None:
            return cls(shard)
        return cls(shard, tc.attemptNumber(), tc.taskAttemptId())

    def describe(self) -> str:
        return (f"shard {self.shard} attempt {self.attempt} (task attempt id {self.task_attempt_id}, "
                f"pid {self.pid})")


class NodeClaim:
    """This task's claim on a node for one feed (``feed_dir/_feeding-<feed_id>``, JSON)."""

    def __init__(self, path: str, record: dict):
        self.path, self.record = path, record

    def release(self) -> None:
        """Remove the claim if it is still ours (a later attempt may have taken it over); never raises."""
        try:
            with _claim_lock(os.path.dirname(self.path)):
                if read_claim(self.path) == self.record:
                    os.unlink(self.path)
        except OSError:  # the node removed its directory meanwhile
            pass


class _claim_lock:  # noqa: N801 - used as a context manager
    """An exclusive ``flock`` on the ``feed_dir`` directory itself (no lock file to leave behind;
    freed by the OS if the holder dies)."""

    def __init__(self, feed_dir: str):
        self.feed_dir = feed_dir

    def __enter__(self) -> None:
        import fcntl

        self.fd = os.open(self.feed_dir, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)  # releases the lock


def read_claim(path: str) -> dict | None:
    """The claim at ``path``: a dict, ``{"shard": text}`` for an unreadable one, None when absent."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"shard": f"unreadable ({exc})"}
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    return record if isinstance(record, dict) else {"shard": text or "unknown"}


def _claim_is_stale(record: dict, *, in_task: bool = True) -> bool:
    """A claim whose task's process is gone (killed attempts leave theirs behind), or, asked from a
    task (``in_task``), one left by an earlier task of this very process (Spark reuses Python
    workers, which run one task at a time)."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return False
    return (in_task and pid == os.getpid()) or not ch.pid_alive(pid)


def _describe_claim(record: dict) -> str:
    if "pid" not in record:
        return f"shard {record.get('shard')}"
    return (f"shard {record.get('shard')} attempt {record.get('attempt')} (task attempt id "
            f"{record.get('task_attempt_id')}, pid {record.get('pid')})")


def reap_claims(feed_dir: str) -> list[str]:
    """Remove the claims in ``feed_dir`` left by dead feed tasks (of any feed); returns their paths."""
    with _claim_lock(feed_dir):
        return _sweep_claims(feed_dir)


def live_claims(feed_dir: str, name: str | None = None) -> list[dict]:
    """The claims in ``feed_dir`` (only the one called ``name``, if given) of feed tasks that are
    still running; empty if ``feed_dir`` is gone."""
    try:
        with _claim_lock(feed_dir):
            records = [read_claim(os.path.join(feed_dir, n)) for n in os.listdir(feed_dir)
                       if n.startswith(CLAIM_PREFIX) and _TMP not in n and (name is None or n == name)]
    except OSError:
        return []
    return [r for r in records if r is not None and not _claim_is_stale(r, in_task=False)]


def _sweep_claims(feed_dir: str, keep: str = "") -> list[str]:
    """:func:`reap_claims` with the lock held, sparing the claim named ``keep``."""
    removed = []
    for name in os.listdir(feed_dir):
        if not name.startswith(CLAIM_PREFIX) or name == keep:
            continue
        path = os.path.join(feed_dir, name)
        if _TMP in name:  # a claim being written when its task died
            pid = name.rpartition(_TMP)[2]
            record = {"pid": int(pid), "host": socket.gethostname()} if pid.isdigit() else None
        else:
            record = read_claim(path)
        if record is not None and _claim_is_stale(record):
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def claim_node(target: NodeTarget, plan: TrainPlan, task: TaskAttempt,
                takeover_wait: float = CLAIM_TAKEOVER_WAIT) -> NodeClaim:
    """Mark ``target`` as fed by ``task`` for this feed.

    A claim left by a dead process (a killed attempt: its ``finally`` never ran) is taken over;
    a live earlier attempt of the same shard gets ``takeover_wait`` seconds to die (Spark is
    killing it) before it counts as a second live task. Two live feed tasks of one feed on one
    node is an error: each worker executor must run exactly one task at a time.
    """
    feed_dir = target.node["feed_dir"]
    path = os.path.join(feed_dir, f"{CLAIM_PREFIX}{plan.feed_id or 'feed'}")
    mine = {"shard": task.shard, "attempt": task.attempt, "task_attempt_id": task.task_attempt_id,
            "pid": task.pid, "host": socket.gethostname(), "node": target.name, "time": time.time()}
    deadline = time.monotonic() + takeover_wait
    while True:
        with _claim_lock(feed_dir):
            other = read_claim(path)
            earlier = (other is not None and other.get("shard") == task.shard
                       and isinstance(other.get("task_attempt_id"), int)
                       and other["task_attempt_id"] < task.task_attempt_id)
            if other is not None and _claim_is_stale(other):
                logger.warning("%s: %s takes over the claim of %s, whose process is gone (a killed or failed "
                               "attempt)", target.name, task.describe(), _describe_claim(other))
                other = None
            if other is None:
                tmp = f"{path}{_TMP}{task.pid}"
                with open(tmp, "w") as f:
                    json.dump(mine, f)
                os.replace(tmp, path)
                _sweep_claims(feed_dir, keep=os.path.basename(path))  # dead tasks of earlier feeds
                return NodeClaim(path, mine)
        if not earlier or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    raise FeedError(f"two feed tasks landed on the executor of {target.name} ({_describe_claim(other)}, still "
                    f"running, and {task.describe()} on {socket.gethostname()}): each worker executor must run "
                    f"exactly one task at a time (spark.executor.cores=1, spark.task.cpus=1, and one executor per "
                    f"TF worker)")
