"""Feed throughput (issue 3): tfos's InputMode.SPARK feed side by side with the old way, in one run.

``compare`` (the default sub-command) runs on a real Spark standalone cluster (2 single-core
workers on 127.0.0.1) with MNIST-shaped rows built from the real training images in
``examples/mnist/data`` (row ``i`` is image ``i mod 22699`` and its label), for each size in
``--sizes`` (default 60,000 and 1,000,000 rows):

(a) RDD of Python rows ``(784 Python ints, label)``, 2 TF workers, every consumer building
    ``float32``/``int64`` numpy batches of 128 from the rows (one shared ``consume`` function):
    - **tfos**: ``cluster.train(rdd)``, the TF side looping ``feed.next_batch(128)`` until
      ``should_stop()``;
    - **baseline, the old way** (TensorFlowOnSpark 1.x/2.x): each node's ``main_fun`` starts a
      ``multiprocessing`` manager serving a queue; ``rdd.mapPartitions`` feed tasks connect to
      the manager of their executor and ``put`` every row (pickled by the proxy), the consumer
      ``get``\\ s one row at a time. After the feed job the driver runs one barrier task per
      executor that puts a final marker with the rows that node was sent (as TFoS's shutdown
      job fed ``None``), so every consumer knows it has seen everything;
    - **single-process bound**: the same rows (same ``make_rows``) through the same consumer
      in the driver process, no Spark, no transport.
(b) DataFrame ``image binary`` (784 raw bytes; ``--image-column array`` for ``array<tinyint>``)
    + ``label int``, cached and materialised first: tfos ``cluster.train(df)`` into
    ``feed.dataset(128)`` decoded and reduced in TensorFlow (no per-row Python in main_fun),
    against Spark alone scanning the same cached DataFrame through Arrow
    (``mapInArrow`` counting rows).
(c) Peak RSS, sampled from ``/proc`` every 0.2 s during (a)-tfos and (b): the TF processes
    and the feeding side (every Spark Python worker of this run), each as the largest process
    and as the sum over the group. Target: the largest process of each group grows by < 200 MB
    from the smallest to the largest size (the growth of the sums is reported too; a single
    size reports the peaks only).
(d) Inference: ``cluster.inference(rdd)`` with a numpy nearest-centroid model on the TF side
    (``feed.batches(128)`` -> predictions -> ``feed.batch_results``) against
    ``rdd.mapPartitions`` running the same model per 128-row batch with no TF cluster; both
    counted by the same ``mapPartitions`` + ``collect``, alternately, best of ``--repeats`` (2).

Every comparison alternates its paths, best of ``--repeats`` each: (a)'s tfos path, baseline
and single-process bound; (b)'s tfos feed and the Spark scan (after one untimed warm-up scan;
the tfos runs are ``train`` calls into the same TF cluster, one epoch each); (d) as above. This
machine's speed drifts by tens of percent within minutes, and a bound measured in a fast minute
against a feed measured in a slow one (or the reverse) says nothing about either.

Rates are rows / wall seconds from the start of the feeding call (``cluster.train``, the
baseline's feed job, ``inference``...) to the moment the last consumer has consumed its last row
(``main_fun`` writes its counts, checksums and that time to a JSON file in a shared temporary
directory). Row counts and label/pixel checksums of every path are checked against the expected
values. For each size, (a) and then (b)+(d) run in their own Spark application (fresh executors
and Python workers, so RSS peaks start from the same state), after a warm-up job; each
measurement starts its own TF cluster and waits until every ``main_fun`` has opened its feed
(none of that is timed).

Notes. The baseline does what TensorFlowOnSpark's feed did per row: the feed task puts
each row (one manager round trip, the row pickled), the consumer gets it and calls
``task_done()`` (two more round trips), and the feed task joins the queue at the end of
its partition; ``--baseline-lean`` leaves out ``task_done``/``join`` (a faster old way than
TFoS's own). The queue is bounded (``--queue-rows``) so that memory stays flat. The
(a)-tfos consumer asks for its last short batch by its size (``next_batch(48)``, say), as the
rows per worker are known, so that its clock stops when the data is consumed rather than when
the feed is ended by ``shutdown``; the baseline consumer's clock likewise stops at its last row
(plus the time to consume the final short batch). The executors get a private ``TMPDIR`` and a
marker in their environment: RSS sampling finds the run's processes by it, and at exit every
process still carrying it (tfos's per-executor TF launcher, which otherwise idles for 5
minutes) is stopped, after the Spark application and the standalone cluster.

    .venv/bin/python benchmarks/feed_throughput.py --sizes 60000,1000000
    .venv/bin/python benchmarks/feed_throughput.py --sizes 6000 --only a,d
    .venv/bin/python benchmarks/feed_throughput.py --baseline-max-rows 200000   # shorter baseline at 1M

Prints progress lines, then one table per size (rows/s, ratios, targets, PASS/FAIL) and one
JSON line with every figure. The exit status is 0 whether or not targets are met.

The earlier micro-benchmarks stay available as sub-commands:

``channel``  the shard feeder (``tfos.feed.train_task.feed_input``) replaying a local spill file into one
             consumer process that reads with ``DataFeed.batches()`` or ``next_batch()``.
``spark``    ``tfos.feed.feed_job.train`` on ``local[N]`` into N stand-in consumer processes.

    .venv/bin/python benchmarks/feed_throughput.py channel --rows 200000 --width 784 --read batches
    .venv/bin/python benchmarks/feed_throughput.py spark --rows 100000 --workers 2 --epochs 2
"""

from __future__ import annotations

import _thread
import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from functools import partial
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MNIST_DIR = os.path.join(ROOT, "examples", "mnist", "data")
WORKERS = 2
ROWS_PER_PARTITION = 25_000
MARKER_ENV = "TFOS_FEED_BENCH_RUN"
TARGETS = {"a_vs_baseline": 4.0, "a_vs_bound": 0.70, "b_vs_baseline": 20.0, "b_vs_scan": 0.50,
           "c_growth_mb": 200.0, "d_vs_direct": 0.70}


# =============================================================================================
# the data, shared by every path (functions travel to executors and TF processes by value)
# =============================================================================================
def mnist() -> tuple[np.ndarray, np.ndarray]:
    """The MNIST training images (22699 x 784 uint8) and labels, loaded once per process."""
    import gzip
    import struct
    import types

    mod = sys.modules.get("_tfos_feed_bench_data")
    if mod is None:
        with gzip.open(os.path.join(MNIST_DIR, "train-images-idx3-ubyte.gz"), "rb") as f:
            magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
            if magic != 2051:
                raise ValueError(f"not an IDX image file (magic {magic})")
            images = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8).reshape(n, rows * cols)
        with gzip.open(os.path.join(MNIST_DIR, "train-labels-idx1-ubyte.gz"), "rb") as f:
            magic, m = struct.unpack(">II", f.read(8))
            if magic != 2049 or m != n:
                raise ValueError(f"bad IDX label file (magic {magic}, {m} labels for {n} images)")
            labels = np.frombuffer(f.read(m), dtype=np.uint8)
        mod = types.ModuleType("_tfos_feed_bench_data")
        mod.images, mod.labels, mod.model = images, labels, None
        sys.modules["_tfos_feed_bench_data"] = mod
    return mod.images, mod.labels


def make_rows(indices):
    """Python rows ``(pixels: list of 784 ints, label: int)`` for row indices, as after parsing CSV."""
    images, labels = mnist()
    m = len(labels)
    for i in indices:
        j = i % m
        yield (images[j].tolist(), int(labels[j]))


def expected_sums(n: int) -> dict:
    """Rows, label sum and pixel sum of rows ``0 .. n-1``."""
    images, labels = mnist()
    q, r = divmod(n, len(labels))
    per_image = images.sum(axis=1, dtype=np.int64)
    return {"rows": n, "label_sum": int(q * labels.sum(dtype=np.int64) + labels[:r].sum(dtype=np.int64)),
            "pixel_sum": int(q * per_image.sum() + per_image[:r].sum())}


class Consumer:
    """The consumer of (a), the same in all three paths: float32 batch from the rows, counts, checksums."""

    def __init__(self):
        self.rows = self.label_sum = self.pixel_sum = 0
        self.t_first = self.t_last = None

    def consume(self, batch: list) -> None:
        x = np.asarray([r[0] for r in batch], dtype=np.float32)
        y = np.asarray([r[1] for r in batch], dtype=np.int64)
        self.rows += len(y)
        self.label_sum += int(y.sum())
        self.pixel_sum += int(x.sum(dtype=np.float64))
        self.t_last = time.time()
        if self.t_first is None:
            self.t_first = self.t_last

    def report(self) -> dict:
        return {"rows": self.rows, "label_sum": self.label_sum, "pixel_sum": self.pixel_sum,
                "t_first": self.t_first, "t_last": self.t_last}


def model() -> tuple[np.ndarray, np.ndarray]:
    """A fixed numpy model for (d): nearest class centroid as a linear layer (784 x 10 float32)."""
    images, labels = mnist()
    mod = sys.modules["_tfos_feed_bench_data"]
    if mod.model is None:
        x = images.astype(np.float32) / 255.0
        centroids = np.stack([x[labels == c].mean(axis=0) for c in range(10)])  # (10, 784)
        weights = np.ascontiguousarray(centroids.T, dtype=np.float32)
        bias = (-0.5 * (centroids ** 2).sum(axis=1)).astype(np.float32)
        mod.model = (weights, bias)
    return mod.model


def predict(x: Any, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return np.argmax((x / 255.0) @ weights + bias, axis=1)


# ---------------------------------------------------------------------------------------------
# helpers of the TF-side main functions
# ---------------------------------------------------------------------------------------------
def _write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _record_pid(args: dict, ctx: Any) -> None:
    """Tell the driver's RSS sampler which process is this TF node."""
    _write_json(os.path.join(args["out"], f"tfpid-{args['tag']}-{ctx.executor_id}"), {"pid": os.getpid()})


def _mark_ready(args: dict, ctx: Any) -> None:
    """main_fun is set up (feed open, model built): the driver starts its clock after this."""
    _write_json(os.path.join(args["out"], f"ready-{args['tag']}-{ctx.executor_id}"), {"t": time.time()})


def _write_result(args: dict, ctx: Any, result: dict) -> None:
    result.update(node=f"{ctx.job_name}:{ctx.task_index}", executor_id=ctx.executor_id, pid=os.getpid(),
                  ru_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    _write_json(os.path.join(args["out"], f"result-{args['tag']}-{ctx.executor_id}.json"), result)


def _wait_files(paths: list[str], timeout: float, what: str, cluster: Any = None) -> None:
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


def _wait_ready(out: str, tag: str, count: int, timeout: float, cluster: Any) -> None:
    _wait_files([os.path.join(out, f"ready-{tag}-{i}") for i in range(count)], timeout, f"{tag}: main_fun set-up",
                cluster)


def _read_results(out: str, tag: str, count: int, timeout: float) -> list[dict]:
    paths = [os.path.join(out, f"result-{tag}-{i}.json") for i in range(count)]
    _wait_files(paths, timeout, f"{tag}: results")
    results = []
    for p in paths:
        with open(p) as f:
            results.append(json.load(f))
    return results


# =============================================================================================
# (a) tfos: DataFeed.next_batch
# =============================================================================================
def main_a(args: dict, ctx: Any) -> None:
    _record_pid(args, ctx)
    feed = ctx.get_data_feed(train_mode=True)
    consumer = Consumer()
    batch_size, expected = args["batch_size"], args["rows_per_worker"]
    _mark_ready(args, ctx)
    while not feed.should_stop():
        # The last short batch of this worker's rows is asked for by its size, so that it is
        # handed out when it arrives instead of when the feed ends (cluster shutdown).
        left = expected - consumer.rows
        batch = feed.next_batch(min(batch_size, left) if left > 0 else batch_size)
        if batch:
            consumer.consume(batch)
    _write_result(args, ctx, consumer.report())


# =============================================================================================
# (a) baseline: the old way, one manager-queue put per pickled row
# =============================================================================================
def _queue_manager_class():
    from multiprocessing.managers import BaseManager

    class QueueManager(BaseManager):
        pass

    return QueueManager


def main_baseline(args: dict, ctx: Any) -> None:
    """TensorFlowOnSpark-style node: a manager process serving the input queue; get one row at a time."""
    import multiprocessing
    import queue
    import secrets

    _record_pid(args, ctx)
    q: queue.Queue = queue.Queue(maxsize=args["queue_rows"])
    manager_class = _queue_manager_class()
    manager_class.register("get_queue", callable=lambda: q)
    authkey = secrets.token_bytes(16)
    mgr = manager_class(address=("127.0.0.1", 0), authkey=authkey, ctx=multiprocessing.get_context("fork"))
    mgr.start()
    try:
        _write_json(os.path.join(args["out"], f"mgr-{args['tag']}-{ctx.executor_id}.json"),
                    {"address": list(mgr.address), "authkey": authkey.hex()})
        proxy = mgr.get_queue()
        _mark_ready(args, ctx)
        consumer = Consumer()
        batch_size, timeout = args["batch_size"], args["timeout"]
        batch: list = []
        ends: list = []
        t_last_row = None
        lean = args.get("baseline_lean", False)
        while True:
            item = proxy.get(True, timeout)
            if not lean:
                proxy.task_done()
            if len(item) == 3:  # ("END", partition, rows) after each partition, ("FINAL", rows, partitions)
                if item[0] == "END":
                    ends.append([item[1], item[2]])
                    continue
                final = {"expected_rows": item[1], "expected_partitions": item[2]}
                break
            batch.append(item)
            t_last_row = time.time()
            if len(batch) == batch_size:
                consumer.consume(batch)
                batch = []
        if batch:  # the remainder: as if consumed right after its last row arrived
            started = time.time()
            consumer.consume(batch)
            consumer.t_last = t_last_row + (time.time() - started)
        result = consumer.report()
        result.update(final, partitions=len(ends), partition_rows=sum(n for _, n in ends))
        _write_result(args, ctx, result)
    finally:
        mgr.shutdown()


def _baseline_queue(cluster_id: str, out: str, tag: str, partition: int, timeout: float) -> tuple[int, Any]:
    """Connect to the manager of the TF node on this executor: (its executor id, its queue proxy)."""
    from tfos.feed.registry import pick_local_node

    eid = int(pick_local_node(cluster_id, partition)["executor_id"])
    path = os.path.join(out, f"mgr-{tag}-{eid}.json")
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the baseline node of executor {eid} published no manager address in {timeout}s")
        time.sleep(0.05)
    with open(path) as f:
        info = json.load(f)
    manager_class = _queue_manager_class()
    manager_class.register("get_queue")
    mgr = manager_class(address=tuple(info["address"]), authkey=bytes.fromhex(info["authkey"]))
    mgr.connect()
    return eid, mgr.get_queue()


def baseline_feed(cluster_id: str, out: str, tag: str, timeout: float, lean: bool, partition: int, indices):
    """Feed task: one ``queue.put`` per row (the proxy pickles it), an end-of-partition marker,
    then (as TFoS) ``join()``: wait until the node has taken every row of the partition."""
    eid, q = _baseline_queue(cluster_id, out, tag, partition, timeout)
    n = 0
    for row in make_rows(indices):
        q.put(row)
        n += 1
    q.put(("END", partition, n))
    if not lean:
        q.join()
    yield eid, partition, n


def baseline_final(cluster_id: str, out: str, tag: str, timeout: float, expected: dict, _rows):
    """Barrier task (one per executor): tell the local node how many rows and partitions it was sent."""
    from pyspark import BarrierTaskContext

    partition = BarrierTaskContext.get().partitionId()
    eid, q = _baseline_queue(cluster_id, out, tag, partition, timeout)
    rows, parts = expected.get(eid, (0, 0))
    q.put(("FINAL", rows, parts))
    yield eid


# =============================================================================================
# (b) DataFrame -> dataset(), and the Arrow scan reference
# =============================================================================================
def arrow_images(kind: str, batches):
    """``mapInArrow`` over ``spark.range``: ids -> (image, label) columns, no per-row Python."""
    import pyarrow as pa

    images, labels = mnist()
    width = images.shape[1]
    for batch in batches:
        ids = batch.column(0).to_numpy() % len(labels)
        k = len(ids)
        pixels = images[ids]
        offsets = pa.array(np.arange(k + 1, dtype=np.int32) * width)
        if kind == "binary":
            image = pa.Array.from_buffers(pa.binary(), k, [None, offsets.buffers()[1], pa.py_buffer(pixels.tobytes())])
        else:
            image = pa.ListArray.from_arrays(offsets, pa.array(pixels.reshape(-1).view(np.int8)))
        label = pa.array(labels[ids].astype(np.int32))
        yield pa.RecordBatch.from_arrays([image, label], names=["image", "label"])


def count_batches(batches):
    """``mapInArrow``: the rows of a partition (what Spark alone needs to hand a DataFrame to Python)."""
    import pyarrow as pa

    n = 0
    for batch in batches:
        n += batch.num_rows
    yield pa.RecordBatch.from_arrays([pa.array([n], pa.int64())], names=["n"])


def main_b(args: dict, ctx: Any) -> None:
    """One ``train`` call (one epoch) per run: decode and reduce it in TF, write its counts."""
    import tensorflow as tf

    _record_pid(args, ctx)
    feed = ctx.get_data_feed(train_mode=True)
    _mark_ready(args, ctx)
    ds = feed.dataset(args["batch_size"])  # waits for the first data, to infer the signature
    binary = args["image_column"] == "binary"

    def decode(batch):
        image = batch["image"]
        x = tf.io.decode_raw(image, tf.uint8) if binary else tf.bitcast(image, tf.uint8)
        x = tf.cast(x, tf.float32)
        return (tf.shape(x, out_type=tf.int64)[0], tf.reduce_sum(tf.cast(batch["label"], tf.int64)),
                tf.reduce_sum(tf.cast(x, tf.float64)))

    init = (tf.constant(0, tf.int64), tf.constant(0, tf.int64), tf.constant(0.0, tf.float64))
    for run in range(args["runs"]):  # each iteration of the dataset is one epoch: one train() call
        rows, labels, pixels = ds.map(decode).reduce(init, lambda a, v: (a[0] + v[0], a[1] + v[1], a[2] + v[2]))
        _write_result(dict(args, tag=f"{args['tag']}-{run}"), ctx,
                      {"rows": int(rows), "label_sum": int(labels), "pixel_sum": int(pixels), "t_last": time.time()})


# =============================================================================================
# (d) inference
# =============================================================================================
def main_d(args: dict, ctx: Any) -> None:
    _record_pid(args, ctx)
    weights, bias = model()
    feed = ctx.get_data_feed(train_mode=False)
    rows, t_last = 0, None
    _mark_ready(args, ctx)
    while not feed.should_stop():
        for pixels, _labels in feed.batches(args["batch_size"]):
            feed.batch_results(predict(pixels, weights, bias))
            rows += len(pixels)
            t_last = time.time()
    _write_result(args, ctx, {"rows": rows, "t_last": t_last})


def predict_partition(batch_size: int, rows):
    """The direct path: the same model over the same Python rows, per 128-row batch, no TF cluster."""
    weights, bias = model()
    batch: list = []
    for row in rows:
        batch.append(row)
        if len(batch) == batch_size:
            yield from predict([r[0] for r in batch], weights, bias).tolist()
            batch = []
    if batch:
        yield from predict([r[0] for r in batch], weights, bias).tolist()


def count_and_sum(values):
    n = s = 0
    for v in values:
        n += 1
        s += int(v)
    yield n, s


# =============================================================================================
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
        pids: dict[str, list[int]] = {g: [] for g in self.GROUPS}
        for pid, cmd in _marked_processes(self.marker):
            if b"pyspark.daemon" in cmd or b"pyspark.worker" in cmd:
                pids["feed"].append(pid)
            elif b"CoarseGrainedExecutorBackend" in cmd:
                pids["jvm"].append(pid)
        for name in os.listdir(self.out):
            if name.startswith("tfpid-"):
                try:
                    with open(os.path.join(self.out, name)) as f:
                        pids["tf"].append(int(json.load(f)["pid"]))
                except (OSError, ValueError, KeyError):
                    pass
        self._pids = pids

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


# =============================================================================================
# the driver
# =============================================================================================
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


class Bench:
    def __init__(self, opts: argparse.Namespace):
        self.opts = opts
        self.t_start = time.monotonic()
        self.load_start = [round(x, 1) for x in os.getloadavg()]
        self.run_id = uuid.uuid4().hex
        self.marker = f"{MARKER_ENV}={self.run_id}".encode()
        self.tmp = tempfile.mkdtemp(prefix="fb-", dir="/tmp")  # the executors' TMPDIR: short socket paths
        self.out = tempfile.mkdtemp(prefix="tfos-feed-bench-")
        self.sampler = RssSampler(self.marker, self.out)
        self.standalone = None
        self.spark = None
        self.results: dict[int, dict] = {}
        self.cleaned = False
        self.conf: dict | None = None

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t_start:7.1f}s] {message}", flush=True)

    # ---- lifecycle --------------------------------------------------------------------------
    def start_spark(self, n: int, what: str) -> Any:
        self.log(f"size {n:,}, ({what}): starting a Spark application of {WORKERS} executors")
        from pyspark.sql import SparkSession

        from tests.spark_standalone import spark_conf, wait_for_executors

        if self.conf is None:
            # Computed once: every SparkContext adds its own SparkFiles directory to the driver's
            # sys.path, which spark_conf() ships as the executors' PYTHONPATH; the applications
            # of one run get the same one.
            self.conf = spark_conf(self.standalone.master_url, WORKERS)
        conf = dict(self.conf)
        conf.update({"spark.executor.memory": self.opts.executor_memory, "spark.ui.showConsoleProgress": "false",
                     "spark.executorEnv.TMPDIR": self.tmp,
                     f"spark.executorEnv.{MARKER_ENV}": self.run_id})
        builder = SparkSession.builder.appName(f"tfos-feed-throughput-{n}-{what.replace(',', '')}")
        for key, value in conf.items():
            builder = builder.config(key, value)
        self.spark = builder.getOrCreate()
        sc = self.spark.sparkContext
        sc.setLogLevel("ERROR")
        wait_for_executors(sc, WORKERS, 180, self.standalone.log_dir)
        return sc

    def stop_spark(self) -> None:
        if self.spark is not None:
            try:
                self.spark.stop()
            finally:
                self.spark = None

    def cleanup(self) -> None:
        if self.cleaned:
            return
        self.cleaned = True
        self.sampler.stop()
        try:
            self.stop_spark()
        finally:
            if self.standalone is not None:
                self.standalone.stop()
            left = kill_marked(self.marker)
            if left:
                self.log(f"stopped {len(left)} left-over process(es) of this run: "
                         f"{', '.join(f'{pid} ({cmd})' for pid, cmd in left)}")
            shutil.rmtree(self.tmp, ignore_errors=True)
            shutil.rmtree(self.out, ignore_errors=True)

    def tf_cluster(self, sc: Any, main_fun: Any, args: dict) -> Any:
        import tfos

        return tfos.run(sc, main_fun, args, WORKERS, input_mode=tfos.InputMode.SPARK,
                        reservation_timeout=min(self.opts.timeout, 600))

    def node_args(self, tag: str, **extra: Any) -> dict:
        args = {"out": self.out, "tag": tag, "batch_size": self.opts.batch_size, "timeout": self.opts.timeout}
        args.update(extra)
        return args

    # ---- one size ---------------------------------------------------------------------------
    def run_size(self, n: int) -> dict:
        parts = self.opts.only
        res: dict[str, Any] = {"rows": n, "partitions": partitions_for(n, self.opts.partitions)}
        expected = expected_sums(n)
        res["expected"] = expected
        # (a) and (b)+(d) each in a fresh application, so that the RSS of the feeding Python
        # workers sampled during (a)-tfos and (b) starts from the same state at every size
        # (Python workers are reused within an application and keep their peak).
        if "a" in parts:
            bounds = [self.a_bound(n, expected)]
            sc = self.start_spark(n, "a")
            try:
                self.warm_up(sc)
                runs, baselines = [], []
                for i in range(self.opts.repeats):  # bound, tfos and baseline alternate; the best of each counts
                    if i:
                        bounds.append(self.a_bound(n, expected))
                    runs.append(self.a_tfos(sc, n, expected, i))
                    baselines.append(self.a_baseline(sc, n, i))
                res["a_bound"], res["a_tfos"], res["a_baseline"] = best_of(bounds), best_of(runs), best_of(baselines)
            finally:
                self.stop_spark()
        if parts & {"b", "d"}:
            sc = self.start_spark(n, ",".join(sorted(parts & {"b", "d"})))
            try:
                self.warm_up(sc)
                if "b" in parts:
                    res["b"] = self.b_dataframe(n, expected)
                if "d" in parts:
                    res["d"] = self.d_inference(sc, n)
            finally:
                self.stop_spark()
        return res

    def warm_up(self, sc: Any) -> None:
        def warm(_):
            import pyarrow  # noqa: F401

            import tfos.feed.train_task  # noqa: F401

            mnist()
            model()
            yield os.getpid()

        with Watchdog(self.opts.timeout, "warm-up", sc):
            t0 = time.time()
            pids = sc.parallelize(range(4 * WORKERS), 4 * WORKERS).mapPartitions(warm).collect()
        self.log(f"warm-up job: {time.time() - t0:.1f}s ({len(set(pids))} Python workers)")

    def index_rdd(self, sc: Any, n: int) -> Any:
        return sc.range(0, n, numSlices=partitions_for(n, self.opts.partitions))

    # ---- (a) ----------------------------------------------------------------------------------
    def a_bound(self, n: int, expected: dict) -> dict:
        self.log(f"(a) single-process bound: make_rows + consume, {n:,} rows in this process")
        bs = self.opts.batch_size
        consumer = Consumer()
        t0 = time.time()
        batch: list = []
        for row in make_rows(range(n)):
            batch.append(row)
            if len(batch) == bs:
                consumer.consume(batch)
                batch = []
        if batch:
            consumer.consume(batch)
        seconds = time.time() - t0
        # for information: the consumer alone, on rows made beforehand
        sample = list(make_rows(range(min(n, 20_000))))
        only = Consumer()
        t1 = time.time()
        for i in range(0, len(sample), bs):
            only.consume(sample[i:i + bs])
        consume_only = len(sample) / (time.time() - t1)
        out = {"seconds": round(seconds, 2), "rows_per_s": round(n / seconds), "consumed": consumer.report(),
               "check": check(consumer.report(), expected), "consume_only_rows_per_s": round(consume_only)}
        self.log(f"(a) bound: {out['rows_per_s']:,} rows/s ({seconds:.1f}s; consume alone "
                 f"{out['consume_only_rows_per_s']:,} rows/s) [{out['check']}]")
        return out

    def a_tfos(self, sc: Any, n: int, expected: dict, run: int = 0) -> dict:
        tag = f"a-{n}-{run}"
        per_worker = n // WORKERS
        self.log(f"(a) tfos: cluster.train(RDD of {n:,} Python rows) -> next_batch({self.opts.batch_size})")
        with Watchdog(self.opts.timeout, "(a) tfos", sc), \
                self.tf_cluster(sc, main_a, self.node_args(tag, rows_per_worker=per_worker)) as cluster:
            _wait_ready(self.out, tag, WORKERS, 120, cluster)
            self.sampler.begin(tag)
            try:
                t0 = time.time()
                report = cluster.train(self.index_rdd(sc, n).mapPartitions(make_rows), num_epochs=1)
                train_s = time.time() - t0
                cluster.shutdown(timeout=self.opts.timeout)
            finally:
                rss = self.sampler.end()
        nodes = _read_results(self.out, tag, WORKERS, 60)
        out = summarize(nodes, t0, n)
        dropped = report["inputs"]["input"]["remainder_rows_per_epoch"]
        out.update(train_call_s=round(train_s, 2), rows_fed=report["inputs"]["input"]["rows_fed"],
                   remainder_dropped=dropped, rss=rss, phases=phases(report),
                   check=check(out["consumed"], expected) if not dropped else f"{dropped} remainder rows dropped")
        self.log(f"(a) tfos: {out['rows_per_s']:,} rows/s ({out['seconds']:.1f}s, train() {train_s:.1f}s) "
                 f"[{out['check']}]")
        return out

    def a_baseline(self, sc: Any, n: int, run: int = 0) -> dict:
        cap = self.opts.baseline_max_rows
        nb = min(n, cap) if cap else n
        tag = f"base-{n}-{run}"
        expected = expected_sums(nb)
        note = f" (capped at {nb:,} of {n:,} rows by --baseline-max-rows)" if nb < n else ""
        style = "put/get" if self.opts.baseline_lean else "put/get/task_done, join per partition"
        self.log(f"(a) baseline: manager queue, {style} per pickled row, {nb:,} rows{note}")
        timeout = self.opts.timeout
        with Watchdog(timeout, "(a) baseline", sc), \
                self.tf_cluster(sc, main_baseline, self.node_args(tag, queue_rows=self.opts.queue_rows,
                                                                baseline_lean=self.opts.baseline_lean)) as cluster:
            cid = cluster.cluster_id
            _wait_ready(self.out, tag, WORKERS, 120, cluster)
            t0 = time.time()
            fed = self.index_rdd(sc, nb).mapPartitionsWithIndex(
                partial(baseline_feed, cid, self.out, tag, timeout, self.opts.baseline_lean)).collect()
            feed_s = time.time() - t0
            per_node: dict[int, tuple[int, int]] = {}
            for eid, _, rows in fed:
                r, p = per_node.get(eid, (0, 0))
                per_node[eid] = (r + rows, p + 1)
            told = sc.parallelize(range(WORKERS), WORKERS).barrier().mapPartitions(
                partial(baseline_final, cid, self.out, tag, timeout, per_node)).collect()
            if sorted(told) != list(range(WORKERS)):
                raise RuntimeError(f"baseline: the final markers reached executors {told}, not each of the "
                                   f"{WORKERS} nodes once")
            cluster.shutdown(timeout=timeout)
        nodes = _read_results(self.out, tag, WORKERS, 60)
        out = summarize(nodes, t0, nb)
        bad = [nd["node"] for nd in nodes if nd["rows"] != nd["expected_rows"] or nd["rows"] != nd["partition_rows"]
               or nd["partitions"] != nd["expected_partitions"]]
        out.update(rows_fed=sum(r for _, _, r in fed), feed_job_s=round(feed_s, 2), capped=nb < n,
                   rows_per_node={str(e): v[0] for e, v in sorted(per_node.items())},
                   check=check(out["consumed"], expected) + (f"; node counts disagree on {bad}" if bad else ""))
        self.log(f"(a) baseline: {out['rows_per_s']:,} rows/s ({out['seconds']:.1f}s) [{out['check']}]")
        return out

    # ---- (b) ----------------------------------------------------------------------------------
    def b_dataframe(self, n: int, expected: dict) -> dict:
        spark = self.spark
        sc = spark.sparkContext
        kind = self.opts.image_column
        repeats = self.opts.repeats
        ddl = "image binary, label int" if kind == "binary" else "image array<tinyint>, label int"
        tag = f"b-{n}"
        self.log(f"(b) building and caching a DataFrame ({ddl}) of {n:,} rows")
        with Watchdog(self.opts.timeout * repeats, "(b) DataFrame", sc):
            df = spark.range(0, n, numPartitions=partitions_for(n, self.opts.partitions)) \
                .mapInArrow(partial(arrow_images, kind), ddl).cache()
            try:
                t = time.time()
                assert df.count() == n
                cache_s = time.time() - t
                mem = disk = 0
                for info in sc._jsc.sc().getRDDStorageInfo():
                    mem, disk = mem + info.memSize(), disk + info.diskSize()
                self.log(f"(b) cached in {cache_s:.1f}s: {mem / 2**20:.0f} MB in memory, {disk / 2**20:.0f} MB on disk")
                self.log(f"(b) tfos: cluster.train(DataFrame) -> dataset({self.opts.batch_size}) decoded in TF, "
                         f"alternating with Spark alone scanning it ({repeats} runs each after a warm-up scan)")
                t = time.time()
                self.scan(df, n)
                self.log(f"(b) warm-up scan: {time.time() - t:.2f}s")
                scans, runs = [], []
                with self.tf_cluster(sc, main_b, self.node_args(tag, image_column=kind, runs=repeats)) as cluster:
                    _wait_ready(self.out, tag, WORKERS, 120, cluster)
                    self.sampler.begin(tag)
                    try:
                        for i in range(repeats):
                            t = time.time()
                            self.scan(df, n)
                            scans.append(time.time() - t)
                            t0 = time.time()
                            report = cluster.train(df, num_epochs=1)
                            train_s = time.time() - t0
                            out = summarize(_read_results(self.out, f"{tag}-{i}", WORKERS, 60), t0, n)
                            dropped = report["inputs"]["input"]["remainder_rows_per_epoch"]
                            out.update(train_call_s=round(train_s, 2), rows_fed=report["inputs"]["input"]["rows_fed"],
                                       phases=phases(report), check=check(out["consumed"], expected) if not dropped
                                       else f"{dropped} remainder rows dropped")
                            runs.append(out)
                            self.log(f"(b) run {i + 1}: Spark scan {n / scans[-1]:,.0f} rows/s ({scans[-1]:.2f}s), "
                                     f"tfos {out['rows_per_s']:,} rows/s ({out['seconds']:.1f}s, train() "
                                     f"{train_s:.1f}s) [{out['check']}]")
                        cluster.shutdown(timeout=self.opts.timeout)
                    finally:
                        rss = self.sampler.end()
            finally:
                df.unpersist()
        out = best_of(runs)
        scan_s = min(scans)
        out.update(scan_s=round(scan_s, 3), scan_rows_per_s=round(n / scan_s),
                   scan_runs=[round(n / s) for s in scans], cache_s=round(cache_s, 2),
                   cached_mb={"memory": round(mem / 2**20), "disk": round(disk / 2**20)}, image_column=kind, rss=rss)
        self.log(f"(b) best of {repeats}: tfos {out['rows_per_s']:,} rows/s, Spark scan {out['scan_rows_per_s']:,} "
                 f"rows/s [{out['check']}]")
        return out

    @staticmethod
    def scan(df: Any, n: int) -> None:
        """Spark alone: ``mapInArrow`` counting the rows of ``df`` (each must be there)."""
        from pyspark.sql import functions as F  # noqa: N812

        scanned = df.mapInArrow(count_batches, "n long").agg(F.sum("n")).collect()[0][0]
        if scanned != n:
            raise RuntimeError(f"the scan counted {scanned} rows of {n}")

    # ---- (d) ----------------------------------------------------------------------------------
    def d_inference(self, sc: Any, n: int) -> dict:
        tag = f"d-{n}"
        bs = self.opts.batch_size
        repeats = self.opts.repeats
        rdd = self.index_rdd(sc, n).mapPartitions(make_rows)
        self.log(f"(d) inference of {n:,} rows, {repeats} time(s) each, alternating: direct rdd.mapPartitions(numpy "
                 f"model) and tfos cluster.inference(rdd) -> batches({bs}) -> numpy model -> batch_results")
        direct_s, tfos_s, checks = [], [], []
        with Watchdog(self.opts.timeout * repeats, "(d) inference", sc), \
                self.tf_cluster(sc, main_d, self.node_args(tag)) as cluster:
            _wait_ready(self.out, tag, WORKERS, 120, cluster)
            self.sampler.begin(tag)
            try:
                for i in range(repeats):
                    t = time.time()
                    direct = rdd.mapPartitions(partial(predict_partition, bs)).mapPartitions(count_and_sum).collect()
                    direct_s.append(time.time() - t)
                    t = time.time()
                    ours = cluster.inference(rdd).mapPartitions(count_and_sum).collect()
                    tfos_s.append(time.time() - t)
                    d_rows, d_sum = (sum(x) for x in zip(*direct, strict=True))
                    t_rows, t_sum = (sum(x) for x in zip(*ours, strict=True))
                    checks.append({"outputs": {"direct": d_rows, "tfos": t_rows},
                                   "prediction_sum": {"direct": d_sum, "tfos": t_sum},
                                   "ok": d_rows == t_rows == n and d_sum == t_sum})
                    self.log(f"(d) run {i + 1}: direct {n / direct_s[-1]:,.0f} rows/s ({direct_s[-1]:.1f}s), tfos "
                             f"{n / tfos_s[-1]:,.0f} rows/s ({tfos_s[-1]:.1f}s) [outputs {t_rows:,} and {d_rows:,}; "
                             f"prediction sums {'equal' if d_sum == t_sum else 'DIFFER'}]")
                cluster.shutdown(timeout=self.opts.timeout)
            finally:
                rss = self.sampler.end()
        nodes = _read_results(self.out, tag, WORKERS, 60)
        out = {"direct_s": [round(x, 2) for x in direct_s], "tfos_s": [round(x, 2) for x in tfos_s],
               "direct_rows_per_s": round(n / min(direct_s)), "tfos_rows_per_s": round(n / min(tfos_s)),
               "rate": f"best of {repeats}", "runs": checks, "rows_per_node": [nd["rows"] for nd in nodes], "rss": rss,
               "check": "ok" if all(c["ok"] for c in checks) else "MISMATCH"}
        self.log(f"(d) best of {repeats}: tfos {out['tfos_rows_per_s']:,} rows/s, direct {out['direct_rows_per_s']:,} "
                 f"rows/s [{out['check']}]")
        return out


def partitions_for(n: int, override: int | None = None) -> int:
    """8 partitions, more for big inputs so that a partition stays near 25,000 rows."""
    return override or max(8, math.ceil(n / ROWS_PER_PARTITION))


def summarize(nodes: list[dict], t0: float, expected_rows: int) -> dict:
    consumed = {k: sum(nd[k] for nd in nodes) for k in ("rows", "label_sum", "pixel_sum")}
    t_end = max(nd["t_last"] for nd in nodes if nd.get("t_last")) if any(nd.get("t_last") for nd in nodes) else t0
    seconds = max(t_end - t0, 1e-6)
    return {"seconds": round(seconds, 2), "rows_per_s": round(consumed["rows"] / seconds), "consumed": consumed,
            "rows_per_node": [nd["rows"] for nd in nodes],
            "tf_ru_maxrss_mb": [round(nd["ru_maxrss_mb"]) for nd in nodes]}


def best_of(runs: list[dict]) -> dict:
    """The fastest of ``runs`` (each with ``rows_per_s``), with every run's rate under ``runs`` and,
    for (c), the largest RSS peaks seen in any of them."""
    out = dict(max(runs, key=lambda r: r["rows_per_s"]))
    out["runs"] = [r["rows_per_s"] for r in runs]
    rsses = [r["rss"] for r in runs if r.get("rss")]
    if rsses:
        out["rss"] = {g: ({k: max(r[g][k] for r in rsses) for k in rsses[0][g]} if isinstance(rsses[0][g], dict)
                          else max(r[g] for r in rsses)) for g in rsses[0]}
    return out


def phases(report: dict) -> dict:
    """Where a ``train`` call's time went, from its report: each barrier task spilling its shard,
    agreeing the shard sizes with the others, and feeding it; the rest of the call (``map_s``) is
    the map stage that makes, encodes and routes the rows, the shuffle, and the barrier stage's start."""
    tasks = [shard.get("spill_seconds", 0) + shard.get("agree_seconds", 0) + shard.get("feed_seconds", 0)
             for shard in report["shards"]]
    return {"map_s": round(report["seconds"] - max(tasks, default=0), 2),
            "spill_s": [shard.get("spill_seconds") for shard in report["shards"]],
            "agree_s": [shard.get("agree_seconds") for shard in report["shards"]],
            "feed_s": [shard.get("feed_seconds") for shard in report["shards"]]}


def check(consumed: dict, expected: dict) -> str:
    diffs = [k for k in ("rows", "label_sum", "pixel_sum") if consumed.get(k) != expected[k]]
    return "rows and checksums ok" if not diffs else f"MISMATCH in {diffs}: {consumed} vs {expected}"


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


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def evaluate(results: dict[int, dict]) -> tuple[dict, list[tuple]]:
    """Ratios and PASS/FAIL per target; returns (figures, table rows)."""
    figures: dict[str, Any] = {}
    rows: list[tuple] = []

    def target(size: Any, name: str, value: float | None, goal: float, higher: bool = True) -> None:
        if value is None:
            verdict = "n/a"
        else:
            verdict = "PASS" if (value >= goal if higher else value < goal) else "FAIL"
        figures.setdefault(str(size), {})[name] = {"value": value, "target": goal, "verdict": verdict}
        rows.append((size, name, value, (">= " if higher else "< ") + f"{goal:g}", verdict))

    for n, res in results.items():
        a, base, bound = res.get("a_tfos"), res.get("a_baseline"), res.get("a_bound")
        b, d = res.get("b"), res.get("d")
        a_rate = a and a["rows_per_s"]
        base_rate = base and base["rows_per_s"]
        if a or base or bound:
            target(n, "(a) tfos / baseline", _ratio(a_rate, base_rate), TARGETS["a_vs_baseline"])
            target(n, "(a) tfos / single-process bound", _ratio(a_rate, bound and bound["rows_per_s"]),
                   TARGETS["a_vs_bound"])
        if b:
            target(n, "(b) tfos DataFrame / (a) baseline", _ratio(b["rows_per_s"], base_rate), TARGETS["b_vs_baseline"])
            target(n, "(b) tfos DataFrame / mapInArrow scan", _ratio(b["rows_per_s"], b["scan_rows_per_s"]),
                   TARGETS["b_vs_scan"])
        if d:
            target(n, "(d) tfos inference / direct mapPartitions",
                   _ratio(d["tfos_rows_per_s"], d["direct_rows_per_s"]), TARGETS["d_vs_direct"])
    sizes = sorted(results)
    for phase in ("a_tfos", "b"):
        have = [n for n in sizes if results[n].get(phase, {}).get("rss")]
        for group in ("tf", "feed"):
            label = f"(c) {'(a)' if phase == 'a_tfos' else '(b)'} {'TF process' if group == 'tf' else 'feeding worker'}" \
                    f" peak RSS growth, MB"
            if len(have) < 2:
                if have:
                    target("all", label, None, TARGETS["c_growth_mb"], higher=False)
                continue
            lo, hi = results[have[0]][phase]["rss"][group], results[have[-1]][phase]["rss"][group]
            growth = round(hi["peak_single_mb"] - lo["peak_single_mb"], 1)
            target(f"{have[0]:,}->{have[-1]:,}", label, growth, TARGETS["c_growth_mb"], higher=False)
            figures[f"{have[0]:,}->{have[-1]:,}"][label]["sum_over_processes_growth_mb"] = \
                round(hi["peak_sum_mb"] - lo["peak_sum_mb"], 1)
    return figures, rows


def _rates(result: dict) -> str:
    return ", ".join(f"{r:,}" for r in result.get("runs", [result["rows_per_s"]]))


def print_report(bench: Bench, elapsed: float) -> None:
    results = bench.results
    print()
    for n, res in results.items():
        print(f"=== {n:,} rows, {res['partitions']} partitions, {WORKERS} workers, batch {bench.opts.batch_size} ===")
        lines = []
        if "a_tfos" in res:
            lines.append(("(a) tfos RDD -> DataFeed.next_batch", res["a_tfos"]["rows_per_s"],
                          f"{res['a_tfos']['check']}; runs {_rates(res['a_tfos'])}"))
        if "a_baseline" in res:
            base = res["a_baseline"]
            lines.append(("(a) baseline: manager queue per row", base["rows_per_s"],
                          base["check"] + f"; runs {_rates(base)}"
                          + (f"; {base['consumed']['rows']:,} rows (capped)" if base["capped"] else "")))
        if "a_bound" in res:
            lines.append(("(a) single-process bound", res["a_bound"]["rows_per_s"],
                          f"runs {_rates(res['a_bound'])}; consume alone "
                          f"{res['a_bound']['consume_only_rows_per_s']:,} rows/s"))
        if "b" in res:
            b = res["b"]
            lines.append((f"(b) tfos DataFrame ({b['image_column']}) -> dataset", b["rows_per_s"],
                          f"{b['check']}; runs {_rates(b)}"))
            lines.append(("(b) Spark mapInArrow scan (cached)", b["scan_rows_per_s"],
                          f"runs {', '.join(f'{r:,}' for r in b['scan_runs'])}; cache {b['cached_mb']['memory']} MB "
                          f"in memory, {b['cached_mb']['disk']} MB on disk"))
        if "d" in res:
            d = res["d"]
            lines.append(("(d) tfos cluster.inference", d["tfos_rows_per_s"], f"{d['rate']}; {d['check']}"))
            lines.append(("(d) direct mapPartitions", d["direct_rows_per_s"], d["rate"]))
        for name, rate, note in lines:
            print(f"  {name:<44} {rate:>10,} rows/s   {note}")
        for key, label in (("a_tfos", "(a) tfos"), ("b", "(b) tfos")):
            ph = res.get(key, {}).get("phases")
            if ph:
                print(f"  phases of {label:<9} train() {res[key]['train_call_s']}s: map stage, shuffle and barrier "
                      f"start {ph['map_s']}s; per barrier task: spill {ph['spill_s']}s, agree {ph['agree_s']}s, "
                      f"feed {ph['feed_s']}s")
        for key, label in (("a_tfos", "(a) tfos"), ("b", "(b) tfos"), ("d", "(d) tfos")):
            rss = res.get(key, {}).get("rss")
            if rss:
                print(f"  peak RSS during {label:<9} TF processes {rss['tf']['peak_sum_mb']:7.0f} MB "
                      f"(largest {rss['tf']['peak_single_mb']:.0f}), feeding Python workers "
                      f"{rss['feed']['peak_sum_mb']:.0f} MB (largest {rss['feed']['peak_single_mb']:.0f}), "
                      f"executor JVMs {rss['jvm']['peak_sum_mb']:.0f} MB")
    figures, rows = evaluate(results)
    print("\n=== targets ===")
    print(f"  {'size':<20} {'measure':<52} {'value':>9} {'target':>8}  verdict")
    for size, name, value, goal, verdict in rows:
        size_text = f"{size:,}" if isinstance(size, int) else str(size)
        value_text = "-" if value is None else f"{value:g}"
        print(f"  {size_text:<20} {name:<52} {value_text:>9} {goal:>8}  {verdict}")
    for size, entries in figures.items():
        for name, entry in entries.items():
            if "sum_over_processes_growth_mb" in entry:
                print(f"  {size:<20} {name.replace('peak RSS growth', 'sum over the group'):<52} "
                      f"{entry['sum_over_processes_growth_mb']:>9g}           (information)")
    failed = [f"{size}: {name}" for size, name, _, _, verdict in rows if verdict == "FAIL"]
    print(f"\nfailed targets: {'; '.join(failed) if failed else 'none'}")
    load = [round(x, 1) for x in os.getloadavg()]
    print(f"whole run: {elapsed:.0f}s; load average (1/5/15 min) at the start {bench.load_start}, at the end {load} "
          f"on {os.cpu_count()} CPUs")
    print(json.dumps({"bench": "feed_throughput", "workers": WORKERS, "batch_size": bench.opts.batch_size,
                      "argv": sys.argv[1:], "seconds": round(elapsed, 1), "cpus": os.cpu_count(),
                      "load_average": {"start": bench.load_start, "end": load},
                      "results": {str(k): v for k, v in results.items()},
                      "targets": figures, "failed": failed}))


def compare(opts: argparse.Namespace) -> None:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if opts.verbose:
        logging.getLogger("tfos").setLevel(logging.INFO)
    from tests.spark_standalone import StandaloneCluster

    def on_sigterm(*_: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)
    bench = Bench(opts)
    bench.sampler.start()
    try:
        bench.log(f"sizes {', '.join(f'{n:,}' for n in opts.sizes)}; measurements {','.join(sorted(opts.only))}; "
                  f"starting a Spark standalone cluster of {WORKERS} single-core workers")
        bench.standalone = StandaloneCluster(workers=WORKERS, worker_memory=opts.worker_memory).start()
        for n in opts.sizes:
            bench.results[n] = bench.run_size(n)
    except BaseException:
        if bench.results:
            print("\nthe run failed; figures of the sizes that completed:")
            bench.cleanup()
            print_report(bench, time.monotonic() - bench.t_start)
        raise
    finally:
        bench.cleanup()
    if bench.standalone is not None:
        shutil.rmtree(bench.standalone.log_dir, ignore_errors=True)
    print_report(bench, time.monotonic() - bench.t_start)


# =============================================================================================
# micro-benchmarks kept from the first version: channel, spark (local[N])
# =============================================================================================
def _consume(feed_dir: str, node: str, read: str, batch_size: int, out) -> None:
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


def _rows(n: int, width: int):
    rng = np.random.default_rng(0)
    base = rng.random((1024, width), dtype=np.float32)
    for i in range(n):
        yield (base[i % 1024], i % 10)


def channel(args) -> dict:
    from tfos.feed import arrow_codec as codec
    from tfos.feed.chunking import DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_ROWS, ChunkSizer, iter_chunks
    from tfos.feed.plans import TrainPlan
    from tfos.feed.spill import SpillFile
    from tfos.feed.targets import NodeTarget
    from tfos.feed.train_task import feed_input

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    feed_dir = tempfile.mkdtemp(prefix="bench-feed-")
    proc = ctx.Process(target=_consume, args=(feed_dir, "worker:0", args.read, args.batch_size, out))
    proc.start()
    spill = SpillFile(tempfile.mkdtemp(prefix="bench-spill-"), "0")
    encoder = codec.RowEncoder(0)
    sizer = ChunkSizer(DEFAULT_CHUNK_ROWS, DEFAULT_CHUNK_BYTES)
    t0 = time.monotonic()
    nbytes = 0
    for first, chunk in iter_chunks(_rows(args.rows, args.width), sizer):
        batch = encoder.encode(chunk, first)
        sizer.learn(batch)
        payload = codec.to_ipc(batch).to_pybytes()
        nbytes += len(payload)
        spill.append(payload, batch.num_rows)
    spill.finish()
    encode_s = time.monotonic() - t0
    plan = TrainPlan(cluster_id="bench", qnames=["input"], num_epochs=args.epochs, feed_timeout=600)
    target = NodeTarget({"job_name": "worker", "task_index": 0, "feed_dir": feed_dir, "executor_id": 0})
    t1 = time.monotonic()
    feed_input(plan, target, 0, 0, spill, spill.rows, None, threading.Event())
    result = out.get(timeout=600)
    feed_s = time.monotonic() - t1
    proc.join(30)
    total_rows = args.rows * args.epochs
    return {"bench": "channel", "read": args.read, "rows": total_rows, "width": args.width,
            "encode_rows_per_s": round(args.rows / encode_s), "feed_rows_per_s": round(total_rows / feed_s),
            "feed_mb_per_s": round(nbytes * args.epochs / feed_s / 2**20, 1),
            "feeder_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "consumer_peak_rss_mb": round(result["peak_rss_mb"])}


def spark(args) -> dict:
    from pyspark.sql import SparkSession

    registry = tempfile.mkdtemp(prefix="bench-registry-")
    os.environ["TFOS_FEED_REGISTRY_DIR"] = registry
    from tfos.feed import feed_job
    from tfos.feed.registry import register_local_node

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = []
    for i in range(args.workers):
        feed_dir = tempfile.mkdtemp(prefix=f"bench-feed-{i}-")
        register_local_node("bench", i, "worker", i, feed_dir)
        proc = ctx.Process(target=_consume, args=(feed_dir, f"worker:{i}", args.read, args.batch_size, out))
        proc.start()
        procs.append(proc)
    session = (SparkSession.builder.master(f"local[{args.workers}]").config("spark.ui.enabled", "false")
               .config("spark.executorEnv.TFOS_FEED_REGISTRY_DIR", registry).getOrCreate())
    sc = session.sparkContext
    sc.setLogLevel("WARN")
    width = args.width
    data = sc.range(0, args.rows, numSlices=args.partitions).map(
        lambda i: (np.full(width, i % 255, dtype=np.float32), int(i % 10)))
    t0 = time.monotonic()
    report = feed_job.train(sc, data, cluster_id="bench", num_workers=args.workers, num_epochs=args.epochs,
                            progress=False, end_feed=True)
    seconds = time.monotonic() - t0
    consumers = [out.get(timeout=600) for _ in procs]
    session.stop()
    fed = report["inputs"]["input"]["rows_fed"]
    return {"bench": "spark", "workers": args.workers, "rows_fed": fed, "epochs": args.epochs,
            "seconds": round(seconds, 1), "rows_per_s": round(fed / seconds),
            "consumer_peak_rss_mb": [round(c["peak_rss_mb"]) for c in consumers]}


# =============================================================================================
# command line
# =============================================================================================
def _sizes(text: str) -> list[int]:
    sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    if not sizes or min(sizes) < WORKERS:
        raise argparse.ArgumentTypeError(f"sizes must be integers >= {WORKERS}")
    return sorted(set(sizes))


def _only(text: str) -> set[str]:
    parts = {s.strip() for s in text.split(",") if s.strip()}
    if not parts or parts - set("abcd"):
        raise argparse.ArgumentTypeError("--only takes a comma-separated subset of a,b,c,d")
    if "c" in parts and not parts & {"a", "b"}:
        parts |= {"a", "b"}  # (c) is sampled during (a) and (b)
    return parts


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("compare", "channel", "spark", "-h", "--help"):
        argv.insert(0, "compare")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    cmp_ = sub.add_parser("compare", help="the issue-3 side-by-side benchmark (default)")
    cmp_.add_argument("--sizes", type=_sizes, default=[60_000, 1_000_000], help="rows, comma-separated")
    cmp_.add_argument("--only", type=_only, default=set("abcd"), help="subset of a,b,c,d (default all)")
    cmp_.add_argument("--batch-size", type=int, default=128)
    cmp_.add_argument("--partitions", type=int, default=None,
                      help="input partitions (default max(8, rows / 25,000))")
    cmp_.add_argument("--baseline-max-rows", type=int, default=None,
                      help="feed at most this many rows through the old-way baseline (its rate is per row)")
    cmp_.add_argument("--baseline-lean", action="store_true",
                      help="old way without TFoS's task_done() per row and join() per partition (faster)")
    cmp_.add_argument("--queue-rows", type=int, default=4096,
                      help="bound of the baseline's manager queue (TFoS's was unbounded, with a join per partition)")
    cmp_.add_argument("--image-column", choices=["binary", "array"], default="binary",
                      help="(b): the image as 784 raw bytes or as array<tinyint>")
    cmp_.add_argument("--executor-memory", default="3g", help="spark.executor.memory (the (b) cache lives there)")
    cmp_.add_argument("--worker-memory", default="4g", help="memory of each standalone worker")
    cmp_.add_argument("--repeats", type=int, default=2,
                      help="(a) tfos and the single-process bound, and (d)'s two paths: runs of each, "
                           "alternating; the best counts")
    cmp_.add_argument("--timeout", type=float, default=1800, help="limit per measurement, seconds")
    cmp_.add_argument("--verbose", action="store_true", help="tfos's INFO log lines (feed progress, timings)")
    for name in ("channel", "spark"):
        p = sub.add_parser(name, help=f"the {name} micro-benchmark")
        p.add_argument("--rows", type=int, default=100_000)
        p.add_argument("--width", type=int, default=784, help="float32 values per row (plus an int label)")
        p.add_argument("--epochs", type=int, default=1)
        p.add_argument("--batch-size", type=int, default=128)
        p.add_argument("--read", choices=["batches", "next_batch"], default="batches")
        p.add_argument("--workers", type=int, default=2)
        p.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args(argv)
    if args.bench == "compare":
        compare(args)
    else:
        print(json.dumps(channel(args) if args.bench == "channel" else spark(args)))


if __name__ == "__main__":
    main()
