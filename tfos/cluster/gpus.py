"""GPU discovery and assignment for one TF node.

Two sources, in this order:

1. **Spark resource scheduling** (``spark.executor.resource.gpu.amount`` and
   ``spark.task.resource.gpu.amount`` on the application, a discovery script on the workers):
   the start task's ``TaskContext.resources()['gpu'].addresses`` are this node's GPUs. Spark
   already made them distinct, so nothing is locked.
2. **nvidia-smi**, when Spark schedules no GPUs: the host's GPUs that no other process is
   using (no compute process, little memory in use) and that no other tfos node on this host
   holds. Holding is a ``flock`` on a host-local lock file per GPU
   (``$TFOS_GPU_LOCK_DIR``, default ``<tmp>/tfos-gpu-locks-<uid>``, private to the user), so nodes starting at the same
   moment on one host never share a GPU, and a lock disappears with its holder (crash included).

No GPU on the host means the node runs on CPU, with a log line saying so; asking for more
GPUs than the host (or Spark's task resources) can give fails with a ``GpuAssignmentError``
that says what to change. The result's ``devices`` go into ``CUDA_VISIBLE_DEVICES``.

Use in the node (``tfos/cluster/node.py``), once the cluster spec is known::

    gpu = assign_gpus(requested_gpus(tf_args), spark_task_resources(),
                      worker_index=host_local_index(nodes, executor_id), job_name=job_name)
    ctx.gpus = gpu.devices; env.update(gpu.env())      # before the TF process starts
    ... start the TF process, wait for it ...
    gpu.release()                                       # when it has exited

(or hand ``gpu.lock_fds`` to a directly spawned child with ``Popen(pass_fds=...)`` and release
at once: the child then holds the locks for exactly its own life).
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import logging
import os
import random
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

GPU_RESOURCE = "gpu"
LOCK_DIR_ENV = "TFOS_GPU_LOCK_DIR"
SPARK, NVIDIA_SMI, CPU = "spark", "nvidia-smi", "cpu"
NO_GPU_JOBS = ("ps",)  # parameter servers keep variables on the host


class GpuAssignmentError(RuntimeError):
    """The node cannot get the GPUs it asked for; the message says what to change."""


@dataclass(frozen=True)
class GpuStatus:
    """One GPU as ``nvidia-smi`` reports it (``index`` in PCI bus order)."""

    index: str
    uuid: str
    memory_used_mib: int
    memory_total_mib: int
    utilization_pct: int
    processes: int = 0

    def busy_reason(self, max_memory_fraction: float, max_utilization_pct: int) -> str | None:
        """Why another program seems to use this GPU, or None when it looks free."""
        if self.processes:
            return f"{self.processes} compute process(es) running"
        if self.memory_total_mib and self.memory_used_mib > max_memory_fraction * self.memory_total_mib:
            return f"{self.memory_used_mib}/{self.memory_total_mib} MiB in use"
        if self.utilization_pct > max_utilization_pct:
            return f"{self.utilization_pct}% utilised"
        return None


@dataclass
class GpuAssignment:
    """The GPUs one node uses, where they came from, and the host-local locks that reserve them.

    ``devices`` is the ``CUDA_VISIBLE_DEVICES`` list (empty: CPU). Locks are file descriptors;
    pass ``lock_fds`` to the TF process (``Popen(pass_fds=...)``) and then ``release()`` here,
    or keep this object alive until the TF process ends and ``release()`` then.
    """

    devices: list[str]
    source: str
    _lock_fds: list[int] = field(default_factory=list, repr=False)

    @property
    def lock_fds(self) -> tuple[int, ...]:
        return tuple(self._lock_fds)

    def env(self) -> dict[str, str]:
        """Environment for the TF process: exactly these GPUs (none: ``CUDA_VISIBLE_DEVICES=''``)."""
        env = {"CUDA_VISIBLE_DEVICES": ",".join(self.devices)}
        if self.source == NVIDIA_SMI:
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA numbers GPUs as nvidia-smi does
        return env

    def release(self) -> None:
        """Close this process's copies of the lock files (the locks end when no process holds them)."""
        while self._lock_fds:
            os.close(self._lock_fds.pop())

    def __enter__(self) -> GpuAssignment:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


# inputs ------------------------------------------------------------------------------------
def requested_gpus(tf_args: Any) -> int | None:
    """GPUs per node the user asked for: ``tf_args.num_gpus`` (or ``tf_args['num_gpus']``), else None."""
    value = tf_args.get("num_gpus") if isinstance(tf_args, Mapping) else getattr(tf_args, "num_gpus", None)
    if value is None:
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise GpuAssignmentError(f"num_gpus must be a whole number, got {value!r}") from None
    if count < 0:
        raise GpuAssignmentError(f"num_gpus must be >= 0, got {count}")
    return count


def spark_task_resources() -> dict[str, list[str]] | None:
    """Resources Spark gave the running task (``{'gpu': ['0', ...]}``); None outside a Spark task."""
    try:
        from pyspark import TaskContext
    except ImportError:  # pragma: no cover - pyspark is a dependency
        return None
    ctx = TaskContext.get()
    if ctx is None:
        return None
    return {name: list(info.addresses) for name, info in ctx.resources().items()}


def host_local_index(nodes: Iterable[Mapping[str, Any]], executor_id: int) -> int:
    """Position of ``executor_id`` among the registered nodes on its host (by executor id)."""
    nodes = list(nodes)
    mine = next((n for n in nodes if n.get("executor_id") == executor_id), None)
    if mine is None:
        return 0
    host = mine.get("hostname") or mine.get("host")
    same = sorted(n["executor_id"] for n in nodes if (n.get("hostname") or n.get("host")) == host)
    return same.index(executor_id)


def _addresses(task_resources: Mapping[str, Any] | None) -> list[str] | None:
    if not task_resources or GPU_RESOURCE not in task_resources:
        return None
    value = task_resources[GPU_RESOURCE]
    addresses = getattr(value, "addresses", value)  # pyspark ResourceInformation or a plain list
    return [str(a) for a in addresses]


# nvidia-smi --------------------------------------------------------------------------------
def _run_smi(nvidia_smi: str, query: str, timeout: float) -> list[list[str]]:
    out = subprocess.run([nvidia_smi, query, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                         timeout=timeout, check=True).stdout
    return [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(out)) if row]


def _int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:  # "[N/A]", "[Not Supported]"
        return 0


def query_gpus(nvidia_smi: str = "nvidia-smi", timeout: float = 20.0) -> list[GpuStatus] | None:
    """The host's GPUs from ``nvidia-smi``; None when there is no ``nvidia-smi`` (or it finds no driver)."""
    exe = shutil.which(nvidia_smi)
    if exe is None:
        return None
    try:
        rows = _run_smi(exe, "--query-gpu=index,uuid,memory.used,memory.total,utilization.gpu", timeout)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        logger.warning("nvidia-smi failed (%s); treating this host as having no GPU", str(detail).strip())
        return None
    try:
        apps = _run_smi(exe, "--query-compute-apps=gpu_uuid,pid", timeout)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        apps = []
    per_gpu: dict[str, int] = {}
    for app in apps:
        if app and app[0]:
            per_gpu[app[0]] = per_gpu.get(app[0], 0) + 1
    gpus = []
    for row in rows:
        if len(row) < 5:
            continue
        index, uuid = row[0], row[1]
        gpus.append(GpuStatus(index, uuid, _int(row[2]), _int(row[3]), _int(row[4]), per_gpu.get(uuid, 0)))
    return gpus


# host-local locks -------------------------------------------------------------------------
def default_lock_dir() -> str:
    """Per user and private (0700): no other local user can plant or replace a lock file in it."""
    return os.environ.get(LOCK_DIR_ENV) or os.path.join(tempfile.gettempdir(), f"tfos-gpu-locks-{os.getuid()}")


def _lock_path(lock_dir: str, gpu: GpuStatus) -> str:
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", gpu.uuid or f"index-{gpu.index}")
    return os.path.join(lock_dir, f"gpu-{key}.lock")


def _ensure_lock_dir(lock_dir: str) -> None:
    """Create ``lock_dir`` (0700) or check that the existing one is this user's own and private."""
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    st = os.lstat(lock_dir)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise GpuAssignmentError(
            f"GPU lock directory {lock_dir} is not a private directory of this user (owner uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):o}); remove it or set {LOCK_DIR_ENV} to a directory only you can write")


def _try_lock(path: str) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)  # in a private directory (_ensure_lock_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    os.ftruncate(fd, 0)  # a lock file of this user's own tfos nodes: holds the holder's pid
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            pid = f.read().strip()
        return f"held by tfos node pid {pid}" if pid else "held by another tfos node"
    except OSError:
        return "held by another tfos node"


def _visible(gpus: list[GpuStatus], cuda_visible: str | None) -> list[GpuStatus]:
    """Restrict to a ``CUDA_VISIBLE_DEVICES`` the executor was started with (index or UUID)."""
    if cuda_visible is None:
        return gpus
    allowed = [d.strip() for d in cuda_visible.split(",") if d.strip()]
    if not allowed or allowed[0] == "-1":
        return []
    return [g for g in gpus if g.index in allowed or g.uuid in allowed]


# the assignment ---------------------------------------------------------------------------
def assign_gpus(num_gpus: int | None, task_resources: Mapping[str, Any] | None = None, worker_index: int = 0, *,
                job_name: str = "worker", nvidia_smi: str = "nvidia-smi", lock_dir: str | None = None,
                wait_secs: float = 30.0, max_memory_fraction: float = 0.1, max_utilization_pct: int = 50,
                cuda_visible_devices: str | None = None) -> GpuAssignment:
    """Pick this node's GPUs; returns them (``devices``) with the locks that reserve them.

    ``num_gpus``: GPUs per node (None: all of Spark's task GPUs, else 1 when the host has any;
    0: CPU). ``task_resources``: ``spark_task_resources()`` of the start task. ``worker_index``:
    the node's index among the nodes on its host; nodes start by trying different GPUs.
    Parameter servers (``job_name='ps'``) get no GPU. With nvidia-smi, GPUs busy with other
    programs are skipped, and a node waits up to ``wait_secs`` for enough GPUs to become free.
    ``cuda_visible_devices``: the executor's own ``CUDA_VISIBLE_DEVICES`` (default: from the
    environment), which limits the candidates.
    """
    if num_gpus is not None and num_gpus < 0:
        raise GpuAssignmentError(f"num_gpus must be >= 0, got {num_gpus}")
    if job_name in NO_GPU_JOBS:
        logger.info("%s node: no GPU (variables live in host memory)", job_name)
        return GpuAssignment([], CPU)
    if num_gpus == 0:
        logger.info("num_gpus=0: running on CPU")
        return GpuAssignment([], CPU)

    spark_gpus = _addresses(task_resources)
    if spark_gpus is not None:
        wanted = len(spark_gpus) if num_gpus is None else num_gpus
        if wanted > len(spark_gpus):
            raise GpuAssignmentError(
                f"num_gpus={wanted} but Spark gave this task {len(spark_gpus)} GPU(s) {spark_gpus}; set "
                f"spark.task.resource.gpu.amount={wanted} and spark.executor.resource.gpu.amount>={wanted} "
                f"(one task per executor), or ask for fewer GPUs")
        devices = spark_gpus[:wanted]
        logger.info("using GPU(s) %s assigned by Spark resource scheduling", ",".join(devices))
        return GpuAssignment(devices, SPARK)

    if cuda_visible_devices is None:
        cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    found = query_gpus(nvidia_smi)
    gpus = _visible(found or [], cuda_visible_devices)
    if not gpus:
        why = ("no nvidia-smi on PATH" if found is None else
               "nvidia-smi lists no GPU" if not found else f"CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}")
        if num_gpus:
            logger.warning("asked for %d GPU(s) but this host has none (%s): running on CPU", num_gpus, why)
        else:
            logger.info("no GPU on this host (%s): running on CPU", why)
        return GpuAssignment([], CPU)
    wanted = 1 if num_gpus is None else num_gpus
    if wanted > len(gpus):
        raise GpuAssignmentError(
            f"num_gpus={wanted} but this host has {len(gpus)} GPU(s) ({', '.join(g.index for g in gpus)}); ask "
            f"for at most {len(gpus)} per node, or run fewer nodes per host with more GPUs each")
    return _lock_free_gpus(wanted, worker_index, nvidia_smi, lock_dir or default_lock_dir(), wait_secs,
                           max_memory_fraction, max_utilization_pct, cuda_visible_devices, gpus)


def _lock_free_gpus(wanted: int, worker_index: int, nvidia_smi: str, lock_dir: str, wait_secs: float,
                    max_memory_fraction: float, max_utilization_pct: int, cuda_visible: str | None,
                    gpus: list[GpuStatus]) -> GpuAssignment:
    _ensure_lock_dir(lock_dir)
    deadline = time.monotonic() + wait_secs
    while True:
        states: dict[str, str] = {}
        candidates = []
        for g in gpus:
            reason = g.busy_reason(max_memory_fraction, max_utilization_pct)
            if reason:
                states[g.index] = reason
            else:
                candidates.append(g)
        if candidates:  # node k on a host starts at GPU k*wanted: no contention when all are free
            start = (worker_index * wanted) % len(candidates)
            candidates = candidates[start:] + candidates[:start]
        taken: list[tuple[GpuStatus, int]] = []
        for g in candidates:
            if len(taken) == wanted:
                break
            path = _lock_path(lock_dir, g)
            fd = _try_lock(path)
            if fd is None:
                states[g.index] = _holder(path)
            else:
                taken.append((g, fd))
        if len(taken) == wanted:
            devices = sorted((g.index for g, _ in taken), key=lambda i: (len(i), i))
            logger.info("using GPU(s) %s of %d on this host (nvidia-smi; locks in %s)", ",".join(devices),
                        len(gpus), lock_dir)
            return GpuAssignment(devices, NVIDIA_SMI, [fd for _, fd in taken])
        for _, fd in taken:
            os.close(fd)
        if time.monotonic() >= deadline:
            detail = "; ".join(f"GPU {i}: {s}" for i, s in sorted(states.items()))
            raise GpuAssignmentError(
                f"needed {wanted} free GPU(s) but only {len(gpus) - len(states)} of {len(gpus)} were free after "
                f"waiting {wait_secs:.0f}s ({detail}); run fewer nodes per host, "
                f"ask for fewer GPUs per node, or free the GPUs")
        time.sleep(min(2.0, max(0.05, deadline - time.monotonic())) * random.uniform(0.5, 1.0))
        gpus = _visible(query_gpus(nvidia_smi) or [], cuda_visible) or gpus
