"""The harness of the feed benchmarks: waiting for the TF nodes' JSON files, peak RSS and CPU
seconds from ``/proc`` (:class:`RssSampler`, :func:`cpu_seconds`, :func:`timed`, :class:`CpuTimeline`),
caching an input before timing (:func:`cache_rdd`), a per-measurement
:class:`Watchdog`, stopping the run's left-over processes (:func:`kill_marked`), and the
stand-in consumer process of the micro-benchmarks (:func:`consume`)."""

from __future__ import annotations

import _thread
import json
import os
import resource
import signal
import threading
import time
from typing import Any

WORKERS = 2
MARKER_ENV = "TFOS_FEED_BENCH_RUN"


def wait_files(paths: list[str], timeout: float, what: str, cluster: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        missing = [p for p in paths if not os.path.exists(p)]
        if not missing:
            return
        if cluster is not None and cluster.state == "failed":
            cluster.shutdown(timeout=10)  # raises the node's failure (NodeFailure, with its traceback)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {len(missing)} of {len(paths)} TF nodes not there after {timeout:.0f}s "
                               f"(missing {missing})")
        time.sleep(0.05)


def wait_ready(out: str, tag: str, count: int, timeout: float, cluster: Any) -> None:
    wait_files([os.path.join(out, f"ready-{tag}-{i}") for i in range(count)], timeout, f"{tag}: main_fun set-up",
                cluster)


def read_results(out: str, tag: str, count: int, timeout: float) -> list[dict]:
    paths = [os.path.join(out, f"result-{tag}-{i}.json") for i in range(count)]
    wait_files(paths, timeout, f"{tag}: results")
    results = []
    for p in paths:
        with open(p) as f:
            results.append(json.load(f))
    return results


# (c) peak RSS from /proc
# =============================================================================================
def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def _marked_processes(marker: bytes) -> list[tuple[int, bytes]]:
    """(pid, cmdline) of this user's processes whose environment carries this run's marker."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if marker not in f.read():
                    continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                found.append((int(name), f.read()))
        except OSError:
            continue
    return found


def process_groups(marker: bytes, out: str) -> dict[str, list[int]]:
    """This run's processes by group: ``tf`` (the pids ``main_fun`` recorded in ``out``), ``feed``
    (Spark Python workers, by the executors' environment marker) and ``jvm`` (executor JVMs)."""
    pids: dict[str, list[int]] = {g: [] for g in ("tf", "feed", "jvm")}
    for pid, cmd in _marked_processes(marker):
        if b"pyspark.daemon" in cmd or b"pyspark.worker" in cmd:
            pids["feed"].append(pid)
        elif b"CoarseGrainedExecutorBackend" in cmd:
            pids["jvm"].append(pid)
    for name in os.listdir(out):
        if name.startswith("tfpid-"):
            try:
                with open(os.path.join(out, name)) as f:
                    pids["tf"].append(int(json.load(f)["pid"]))
            except (OSError, ValueError, KeyError):
                pass
    return pids


def _cpu_ticks(pid: int) -> int | None:
    """User + system CPU clock ticks used so far by ``pid`` (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, ValueError, IndexError):
        return None


def cpu_seconds(marker: bytes, out: str) -> dict[str, float]:
    """User + system CPU seconds used so far by each group of :func:`process_groups` (live processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    return {group: sum(t for t in map(_cpu_ticks, pids) if t is not None) / tick
            for group, pids in process_groups(marker, out).items()}


def timed(marker: bytes, out: str, n: int, job: Any) -> tuple[float, dict[str, float], Any]:
    """Wall seconds, CPU microseconds per row by process group (TF processes, Spark Python workers,
    executor JVMs) and the result of ``job()``, for a job over ``n`` rows."""
    cpu0 = cpu_seconds(marker, out)
    t = time.time()
    result = job()
    seconds = time.time() - t
    cpu1 = cpu_seconds(marker, out)
    return seconds, {g: round((cpu1[g] - cpu0.get(g, 0.0)) / n * 1e6, 1) for g in cpu1}, result


def cpu_text(cpu: dict[str, dict[str, float]]) -> str:
    """``{path: {group: us per row}}`` as one line, with the sum over the groups of each path."""
    return "; ".join(f"{path} " + ", ".join(f"{g} {us:g}" for g, us in groups.items())
                     + f" (sum {sum(groups.values()):.1f})" for path, groups in cpu.items())


def cache_rdd(log: Any, what: str, rdd: Any, n: int) -> tuple[Any, dict]:
    """``rdd`` cached and materialised (``count()``, which must be ``n``) before any timing; how long
    that took and how much the cache holds (``log(message)`` says it too)."""
    cached = rdd.cache()
    t = time.time()
    count = cached.count()
    if count != n:
        raise RuntimeError(f"{what} the cached RDD holds {count} rows, not {n}")
    seconds = time.time() - t
    mem = disk = parts = 0
    for info in cached.context._jsc.sc().getRDDStorageInfo():  # the only RDD cached now
        mem, disk, parts = mem + info.memSize(), disk + info.diskSize(), parts + info.numCachedPartitions()
    log(f"{what} cached {n:,} rows in {seconds:.1f}s: {parts} of {cached.getNumPartitions()} partitions, "
        f"{mem / 2**20:.0f} MB in memory, {disk / 2**20:.0f} MB on disk")
    return cached, {"cache_s": round(seconds, 2), "cached_partitions": parts, "memory_mb": round(mem / 2**20),
                    "disk_mb": round(disk / 2**20)}


class CpuTimeline(threading.Thread):
    """CPU seconds of each group of :func:`process_groups`, sampled every ``interval`` s (the groups'
    pids found again every ``rescan`` s), so that a measurement's CPU can be split by phase
    afterwards (:meth:`between`). A process that ends keeps the last count seen, so the totals
    never fall; what a process uses between its start and its first sample counts from there."""

    def __init__(self, marker: bytes, out: str, interval: float = 0.2, rescan: float = 1.0):
        super().__init__(name="cpu-timeline", daemon=True)
        self.marker, self.out, self.interval, self.rescan = marker, out, interval, rescan
        self.tick = os.sysconf("SC_CLK_TCK")
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._pids: dict[str, list[int]] = {}
        self._last: dict[int, tuple[str, int]] = {}
        self._scanned = 0.0
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def sample(self) -> None:
        """Take one sample now (also called by the thread)."""
        with self._lock:
            now = time.monotonic()
            if now - self._scanned >= self.rescan:
                self._pids, self._scanned = process_groups(self.marker, self.out), now
            for group, pids in self._pids.items():
                for pid in pids:
                    ticks = _cpu_ticks(pid)
                    if ticks is not None:
                        self._last[pid] = (group, ticks)
            totals = {g: 0.0 for g in self._pids}
            for group, ticks in self._last.values():
                totals[group] = totals.get(group, 0.0) + ticks / self.tick
            self.samples.append((time.time(), totals))

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - sampling must never stop the benchmark
                print(f"cpu timeline: {exc}", flush=True)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)
        self.sample()

    def at(self, t: float) -> dict[str, float]:
        """CPU seconds per group at wall time ``t``, linearly interpolated between samples."""
        with self._lock:
            samples = list(self.samples)
        if not samples:
            return {}
        before = [s for s in samples if s[0] <= t]
        after = [s for s in samples if s[0] >= t]
        if not before or not after:
            return dict((before or after)[-1 if before else 0][1])
        (ta, a), (tb, b) = before[-1], after[0]
        w = (t - ta) / (tb - ta) if tb > ta else 0.0
        return {g: a.get(g, 0.0) + w * (b.get(g, 0.0) - a.get(g, 0.0)) for g in set(a) | set(b)}

    def between(self, t0: float, t1: float) -> dict[str, float]:
        """CPU seconds per group used between wall times ``t0`` and ``t1``."""
        a, b = self.at(t0), self.at(t1)
        return {g: max(0.0, b.get(g, 0.0) - a.get(g, 0.0)) for g in sorted(set(a) | set(b))}


class RssSampler(threading.Thread):
    """Every ``interval`` s during a phase: RSS of the TF processes and of the Spark Python workers.

    TF processes are the pids ``main_fun`` recorded in ``out``; the feeding side is every
    process of this run (executor environment marker) running ``pyspark.daemon``/``worker``;
    executor JVMs are sampled too, for information. Per group it keeps the peak of the sum over
    the group's processes and the peak of its largest process.
    """

    GROUPS = ("tf", "feed", "jvm")

    def __init__(self, marker: bytes, out: str, interval: float = 0.2, rescan: float = 1.0):
        super().__init__(name="rss-sampler", daemon=True)
        self.marker, self.out, self.interval, self.rescan = marker, out, interval, rescan
        self.phases: dict[str, dict] = {}
        self._phase: str | None = None
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._pids: dict[str, list[int]] = {g: [] for g in self.GROUPS}
        self._last_scan = 0.0

    def begin(self, name: str) -> None:
        with self._lock:
            self.phases[name] = {g: {"peak_sum_mb": 0.0, "peak_single_mb": 0.0, "processes": 0} for g in self.GROUPS}
            self.phases[name]["samples"] = 0
            self._phase = name
            self._last_scan = 0.0

    def end(self) -> dict:
        with self._lock:
            name, self._phase = self._phase, None
        self._sample(name)  # one last sample
        return self.phases.get(name, {})

    def stop(self) -> None:
        self._stop_event.set()

    def _scan(self) -> None:
        self._pids = process_groups(self.marker, self.out)

    def _sample(self, name: str | None) -> None:
        if name is None:
            return
        now = time.monotonic()
        if now - self._last_scan >= self.rescan:
            self._scan()
            self._last_scan = now
        with self._lock:
            stats = self.phases[name]
            stats["samples"] += 1
            for group in self.GROUPS:
                values = [r for r in (_rss_mb(p) for p in self._pids[group]) if r is not None]
                if not values:
                    continue
                g = stats[group]
                g["peak_sum_mb"] = max(g["peak_sum_mb"], round(sum(values), 1))
                g["peak_single_mb"] = max(g["peak_single_mb"], round(max(values), 1))
                g["processes"] = max(g["processes"], len(values))

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self._sample(self._phase)
            except Exception as exc:  # noqa: BLE001 - sampling must never stop the benchmark
                print(f"rss sampler: {exc}", flush=True)


class Timeout(Exception):
    pass


class Watchdog:
    """Give up on a measurement that runs past ``seconds``: cancel its Spark jobs (the blocked
    action then fails) and, if the main thread is still inside after ``grace`` seconds (e.g. in
    a wait of its own), interrupt it; either way the block raises ``Timeout``."""

    def __init__(self, seconds: float, what: str, sc: Any = None, grace: float = 30.0):
        self.seconds, self.what, self.sc, self.grace, self.fired = seconds, what, sc, grace, False
        self.left = threading.Event()
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        print(f"!! {self.what}: still running after {self.seconds:.0f}s (--timeout); cancelling", flush=True)
        if self.sc is not None:
            try:
                self.sc.cancelAllJobs()
            except Exception:  # noqa: BLE001
                pass
        if not self.left.wait(self.grace):
            # SIGTERM's handler raises KeyboardInterrupt; SIGINT's (PySpark's) would call into the JVM
            _thread.interrupt_main(signal.SIGTERM)

    def __enter__(self) -> Watchdog:
        self.timer.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.left.set()
        self.timer.cancel()
        if self.fired:
            raise Timeout(f"{self.what} timed out after {self.seconds:.0f}s") from exc


def kill_marked(marker: bytes, grace: float = 5.0) -> list[tuple[int, str]]:
    """SIGTERM (then SIGKILL) every process that carries this run's marker (TF launcher, strays)."""
    procs = [(pid, cmd) for pid, cmd in _marked_processes(marker) if pid != os.getpid()]
    for pid, _ in procs:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    alive = [pid for pid, _ in procs]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if os.path.exists(f"/proc/{pid}") and _rss_mb(pid) is not None]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return [(pid, cmd.replace(b"\0", b" ").decode(errors="replace").strip()[-100:]) for pid, cmd in procs]


def consume(feed_dir: str, node: str, read: str, batch_size: int, out) -> None:
    from types import SimpleNamespace

    from tfos.feed.datafeed import DataFeed

    job, index = node.split(":")
    feed = DataFeed(SimpleNamespace(feed_dir=feed_dir, job_name=job, task_index=int(index)))
    rows, started = 0, None
    while not feed.should_stop():
        if read == "batches":
            for batch in feed.batches(batch_size):
                started = started or time.monotonic()
                rows += len(batch[0])
        else:
            batch = feed.next_batch(batch_size)
            started = started or time.monotonic()
            rows += len(batch)
    elapsed = time.monotonic() - (started or time.monotonic())
    out.put({"node": node, "rows": rows, "seconds": elapsed,
             "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
