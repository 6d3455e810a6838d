"""What ``feed_throughput compare`` runs on the TF nodes and in Spark tasks, per measurement:
the ``main_fun`` of each path ((a) tfos, (a) baseline, (b), (d)), the baseline's feed tasks
(one manager-queue put per pickled row), the (b) DataFrame source and scan, the (d) direct
path. Each ``main_fun`` reports to JSON files in the run's shared directory. Shipped by value
(``compare`` registers this module with cloudpickle)."""

from __future__ import annotations

import json
import os
import resource
import time
from typing import Any

import numpy as np

from benchmarks.feed.data import Consumer, make_rows, mnist, model, predict


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


# =============================================================================================
# (a) tfos: DataFeed.next_batch
# =============================================================================================
def main_a(args: dict, ctx: Any) -> None:
    _record_pid(args, ctx)
    feed = ctx.get_data_feed(train_mode=True)
    consumer = Consumer()
    batch_size, expected = args["batch_size"], args["rows_per_worker"]
    t_first_batch = None  # time.time() when next_batch first returned rows (before consuming them)
    _mark_ready(args, ctx)
    while not feed.should_stop():
        # The last short batch of this worker's rows is asked for by its size, so that it is
        # handed out when it arrives instead of when the feed ends (cluster shutdown).
        left = expected - consumer.rows
        batch = feed.next_batch(min(batch_size, left) if left > 0 else batch_size)
        if batch:
            if t_first_batch is None:
                t_first_batch = time.time()
            consumer.consume(batch)
            if consumer.rows == expected:  # all of this worker's rows: the driver reads the CPU used until now
                _write_json(os.path.join(args["out"], f"consumed-{args['tag']}-{ctx.executor_id}"),
                            {"t": consumer.t_last})
    _write_result(args, ctx, dict(consumer.report(), t_first_batch=t_first_batch))


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
