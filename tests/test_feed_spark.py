"""The feed through real Spark jobs: the standalone test cluster (3 single-core executors)
feeding real consumer processes (``tests.test_feed_consumers``) over their Unix sockets.

Each test registers one stand-in TF node per executor, the way the node start task does, in
that executor's registry (its working directory).
"""

from __future__ import annotations

import datetime
import decimal
import os
import shutil
import tempfile
import threading
import time
import uuid
from types import SimpleNamespace

import numpy as np
import pytest

from tests.test_feed_consumers import ConsumerPool
from tfos.feed import feed_job
from tfos.feed.errors import FeedError

WORKERS = 3


@pytest.fixture(scope="module")
def consumers():
    pool = ConsumerPool(WORKERS)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def spark(sc):
    from pyspark.sql import SparkSession

    return SparkSession.builder.getOrCreate()


@pytest.fixture
def nodes(sc, consumers):
    """``worker:0..2``, one per executor, each with a fresh private feed_dir."""
    consumers.reset()
    cluster_id = f"feed-{uuid.uuid4().hex[:8]}"
    dirs = []
    for _ in range(WORKERS):
        d = tempfile.mkdtemp(prefix="tfos-test-feed-")
        os.chmod(d, 0o700)
        dirs.append(d)

    def register(_):
        from pyspark import BarrierTaskContext

        from tfos.feed.registry import register_local_node

        i = BarrierTaskContext.get().partitionId()
        register_local_node(cluster_id, i, "worker", i, dirs[i])
        yield i

    assert sorted(sc.parallelize(range(WORKERS), WORKERS).barrier().mapPartitions(register).collect()) == [0, 1, 2]
    yield SimpleNamespace(id=cluster_id, dirs=dirs, pool=consumers)
    consumers.reset()
    unregister_all(sc, cluster_id)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def unregister_all(sc, cluster_id):
    """What the nodes do when they end: each executor's entries go, and with them its registry dirs."""
    def unregister(_):
        from tfos.feed.registry import find_local_nodes, unregister_local_node

        for node in find_local_nodes(cluster_id):
            unregister_local_node(cluster_id, node["job_name"], node["task_index"])
        yield 0

    sc.parallelize(range(WORKERS), WORKERS).barrier().mapPartitions(unregister).collect()


def executor_dirs(sc):
    """Per executor: its working directory and Spark's local dirs as its Python workers see them."""
    def where(_):
        yield os.getcwd(), os.environ.get("SPARK_LOCAL_DIRS", "")

    return sc.parallelize(range(WORKERS), WORKERS).barrier().mapPartitions(where).collect()


def leftovers(sc, nodes):
    """Everything the feed tasks created that is still there: spill dirs, claims on the nodes."""
    found = []
    for _, local_dirs in executor_dirs(sc):
        for base in [b for b in local_dirs.split(",") if b] or [tempfile.gettempdir()]:
            found += [os.path.join(base, n) for n in os.listdir(base) if n.startswith("tfos-feed-spill-")]
    for d in nodes.dirs:
        found += [os.path.join(d, n) for n in os.listdir(d) if n.startswith("_feeding-")]
    return found


def wait_until_clean(sc, nodes, timeout=60):
    deadline = time.monotonic() + timeout
    while (left := leftovers(sc, nodes)) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def uneven_rdd(sc, sizes, make=lambda g: (g, float(g))):
    starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    return sc.parallelize(range(len(sizes)), len(sizes)).flatMap(
        lambda p: [make(g) for g in range(starts[p], starts[p] + sizes[p])])


def run_all(nodes, scenario, **kwargs):
    for i, d in enumerate(nodes.dirs):
        nodes.pool.submit(i, scenario, feed_dir=d, node=f"worker:{i}", **kwargs)


def results(nodes, timeout=90):
    return [nodes.pool.result(i, timeout) for i in range(WORKERS)]


@pytest.mark.parametrize("remainder,per_worker,kind", [("drop", 99, "rdd"), ("wrap", 101, "rdd"),
                                                       ("drop", 99, "dataframe"), ("wrap", 101, "dataframe")])
def test_uneven_partitions_give_every_worker_the_same_batches(sc, spark, nodes, remainder, per_worker, kind):
    # 301 rows; rotation (row j of partition p -> worker (p + j) mod 3) gives the workers 101,
    # 101 and 99 rows: the partitions' last incomplete groups (1 of p0, 2 of p1, 2 of p3, 1 of
    # p4, 1 of p6) land on workers 0 | 1, 2 | 0, 1 | 1 | 0.
    sizes = [1, 50, 3, 200, 7, 0, 40]
    data = uneven_rdd(sc, sizes)
    if kind == "dataframe":  # a DataFrame's rows are routed to the workers by Spark alone
        data = spark.createDataFrame(data, "id long, value double")
    run_all(nodes, "epochs", batch_size=8)
    report = feed_job.train(sc, data, cluster_id=nodes.id, num_workers=WORKERS, num_epochs=3,
                            remainder=remainder, feed_timeout=60, end_feed=True)
    got = results(nodes)
    expected_sizes = [8] * (per_worker // 8) + ([per_worker % 8] if per_worker % 8 else [])
    for worker in got:
        assert [e["sizes"] for e in worker["input"]] == [expected_sizes] * 3
    for epoch in range(3):
        ids = [i for worker in got for i in worker["input"][epoch]["ids"]]
        if remainder == "drop":
            assert len(set(ids)) == len(ids) == 297 and set(ids) <= set(range(301))
        else:
            assert set(ids) == set(range(301)) and len(ids) == 303
    summary = report["inputs"]["input"]
    assert summary["rows"] == 301 and summary["shard_rows"] == [101, 101, 99]
    assert summary["rows_per_worker_per_epoch"] == per_worker
    assert summary["rows_fed"] == per_worker * WORKERS * 3
    assert summary["remainder_rows_per_epoch"] == abs(301 - per_worker * WORKERS)
    # where the time went, per worker: its spill, agreeing the shard sizes, its feed
    assert sorted(s["node"] for s in report["shards"]) == [f"worker:{i}" for i in range(WORKERS)]
    assert all(s["spill_seconds"] >= 0 and s["agree_seconds"] >= 0 and s["feed_seconds"] > 0
               for s in report["shards"])
    assert all(s["spill_seconds"] + s["agree_seconds"] + s["feed_seconds"] < report["seconds"]
               for s in report["shards"])
    # when the first rows reached a worker: after the input stage, the spill and the size exchange
    assert 0 < summary["first_batch_seconds"] < report["seconds"]
    assert summary["first_batch_seconds"] >= min(s["spill_seconds"] + s["agree_seconds"] for s in report["shards"])


@pytest.mark.parametrize("train_kind", ["rdd", "dataframe"])  # RDD among the inputs / DataFrames only
def test_named_inputs_are_fed_together_and_read_independently(sc, spark, nodes, train_kind):
    train = uneven_rdd(sc, [30, 5, 64, 1], lambda g: (g, np.full(4, g, dtype=np.float32)))  # 100 rows
    if train_kind == "dataframe":
        train = spark.createDataFrame(train.map(lambda r: (r[0], r[1].tolist())), "id long, x array<float>")
    validation = spark.createDataFrame(sc.parallelize([(i, [float(i)] * 2, f"v{i}") for i in range(31)], 4),
                                       "id long, x array<double>, name string")
    # Keras validation_freq=2: validation is read only every second training epoch
    run_all(nodes, "epochs", qnames=("train", "validation"), batch_size=10, validation_every=2)
    feed_job.train(sc, {"train": train, "validation": validation}, cluster_id=nodes.id, num_workers=WORKERS,
                   num_epochs=4, feed_timeout=60, end_feed=True)
    for worker in results(nodes):
        assert [e["sizes"] for e in worker["train"]] == [[10, 10, 10, 3]] * 4
        assert [e["sizes"] for e in worker["validation"]] == [[10]] * 4


def test_dataframe_columns_round_trip(sc, spark, nodes):
    from pyspark.sql import Row

    rows = [(i, i * 1.5, float(i) / 4, i % 2 == 0, f"s{i}", bytearray(b"b%d" % i), [float(i), 2.0],
             datetime.date(2020, 1, 1 + i % 28), decimal.Decimal(f"{i}.25"), None if i % 4 else i) for i in range(57)]
    schema = ("i long, d double, f float, b boolean, s string, bin binary, arr array<double>, day date, "
              "dec decimal(10,2), maybe int")
    df = spark.createDataFrame(sc.parallelize(rows, 5), schema)
    run_all(nodes, "collect", batch_size=7)
    report = feed_job.train(sc, df, cluster_id=nodes.id, num_workers=WORKERS, feed_timeout=60)
    # TensorFlowOnSpark style: the feed stays open after train() until the end of the feed at shutdown
    feed_job.end_feed(sc, cluster_id=nodes.id, num_workers=WORKERS)
    got = [r for worker in results(nodes) for r in worker]
    shards = report["inputs"]["input"]["shard_rows"]
    assert sum(shards) == 57 and max(shards) - min(shards) <= 5  # at most one row per input partition apart
    assert len(got) == len({r.i for r in got}) == min(shards) * WORKERS
    assert all(isinstance(r, Row) for r in got)
    by_id = {r.i: r for r in got}
    for i, d, f, b, s, binary, arr, day, dec, maybe in rows:
        if i not in by_id:
            continue
        r = by_id[i]
        assert (r.d, r.f, r.b, r.s, bytes(r.bin), r.arr, r.day, r.dec, r.maybe) == \
            (d, f, b, s, bytes(binary), arr, day, dec, maybe)
    # a later train() finds the feed ended and returns at once instead of waiting for a reader
    started = time.monotonic()
    report = feed_job.train(sc, df, cluster_id=nodes.id, num_workers=WORKERS, feed_timeout=60)
    assert time.monotonic() - started < 30
    assert report["inputs"]["input"]["rows_fed"] == 0
    assert sorted(report["inputs"]["input"]["terminated"]) == ["worker:0", "worker:1", "worker:2"]


def test_terminate_stops_a_ten_times_oversized_feed_quickly(sc, nodes):
    # each worker reads 3 batches of 16 (48 rows), the feed offers >10x that for 20 epochs
    run_all(nodes, "terminate_after", batches=3, batch_size=16)
    data = sc.parallelize(range(3000), 6).map(lambda i: (i, np.zeros(1024, dtype=np.float32)))
    report = feed_job.train(sc, data, cluster_id=nodes.id, num_workers=WORKERS, num_epochs=20, feed_timeout=60)
    returned = time.time()
    got = results(nodes)
    assert all(w["rows"] == 48 and w["should_stop"] for w in got)
    assert returned - max(w["terminated_at"] for w in got) < 10
    assert sorted(report["inputs"]["input"]["terminated"]) == ["worker:0", "worker:1", "worker:2"]
    assert report["inputs"]["input"]["rows_fed"] < 3000 * 20 / 10


def feed_with_a_hung_worker(sc, nodes, tmp_path) -> tuple[threading.Thread, dict]:
    """A 5-epoch feed in a thread; returns once worker:2 has read 2 batches and stopped reading."""
    flag = str(tmp_path / "read")
    for i in range(2):
        nodes.pool.submit(i, "collect", feed_dir=nodes.dirs[i], node=f"worker:{i}")
    nodes.pool.submit(2, "hang", feed_dir=nodes.dirs[2], node="worker:2", batches=2, batch_size=8, flag=flag)
    data = sc.parallelize(range(30000), 6).map(lambda i: (i, np.zeros(32)))
    outcome: dict = {}

    def run():
        try:
            feed_job.train(sc, data, cluster_id=nodes.id, num_workers=WORKERS, num_epochs=5, feed_timeout=120)
        except Exception as exc:  # noqa: BLE001
            outcome["error"], outcome["at"] = exc, time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.exists(flag)
    return thread, outcome


def test_killed_worker_fails_the_feed_within_ten_seconds_naming_it(sc, nodes, tmp_path):
    thread, outcome = feed_with_a_hung_worker(sc, nodes, tmp_path)
    killed = time.monotonic()
    nodes.pool.kill(2)
    thread.join(60)
    assert "error" in outcome, "train() did not fail after a worker died"
    assert outcome["at"] - killed < 10
    assert isinstance(outcome["error"], FeedError) and "worker:2" in str(outcome["error"])


def test_malformed_row_fails_naming_partition_and_offset(sc, nodes):
    def make(g):
        return (g, "oops") if g == 57 else (g, g * 2)

    run_all(nodes, "collect")
    data = uneven_rdd(sc, [20, 30, 40], make)  # global row 57 = partition 2, offset 7
    with pytest.raises(FeedError, match=r"partition 2, row offset 7: field '_1': expected int64.*'oops'"):
        feed_job.train(sc, data, cluster_id=nodes.id, num_workers=WORKERS, feed_timeout=60)


def test_inference_gives_one_output_per_row_in_order(sc, spark, nodes):
    run_all(nodes, "infer", batch_size=6)
    sizes = [13, 0, 1, 29, 8]
    rdd = uneven_rdd(sc, sizes, lambda g: (g, f"row{g}"))
    out = feed_job.inference(sc, rdd, cluster_id=nodes.id, num_workers=WORKERS, feed_timeout=60)
    assert out.glom().collect() == [[r[0] * 10 for r in part] for part in rdd.glom().collect()]

    # no shuffle in the plan, so every job sees the same rows in the same order
    df = spark.createDataFrame(sc.parallelize([(i, f"n{i}") for i in range(40)], 3), "id long, name string")
    inputs = df.rdd.glom().collect()
    typed = feed_job.inference(sc, df, cluster_id=nodes.id, feed_timeout=60, output_schema="out long")
    assert typed.rdd.glom().map(lambda rows: [r.out for r in rows]).collect() == \
        [[r.id * 10 for r in part] for part in inputs]
    inferred = feed_job.inference(sc, df, cluster_id=nodes.id, feed_timeout=60)
    assert sorted(r.prediction for r in inferred.collect()) == [i * 10 for i in range(40)]

    feed_job.end_feed(sc, cluster_id=nodes.id, num_workers=WORKERS)
    assert sum(results(nodes)) >= sum(sizes) + 80


def wait_for(reports, count, timeout=120):
    deadline = time.monotonic() + timeout
    while len(reports) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(reports) >= count, f"only {len(reports)} micro-batches fed in {timeout}s"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:DStream is deprecated")
def test_dstream_micro_batches_are_fed_as_epochs(sc, nodes):
    from pyspark.streaming import StreamingContext

    run_all(nodes, "epochs", batch_size=4)
    ssc = StreamingContext(sc, 1)
    batches = [uneven_rdd(sc, [5, 12]), sc.parallelize([]), uneven_rdd(sc, [2, 1, 30])]
    reports = []
    feed_job.train(sc, ssc.queueStream(batches, oneAtATime=True), cluster_id=nodes.id, num_workers=WORKERS,
                   feed_timeout=60, on_report=reports.append)
    ssc.start()
    wait_for(reports, 2)
    ssc.stop(stopSparkContext=False, stopGraceFully=True)
    feed_job.end_feed(sc, cluster_id=nodes.id, num_workers=WORKERS)
    for worker in results(nodes):
        # [5, 12] -> shards of 6, 6, 5 rows; [2, 1, 30] -> 11, 12, 10 (rotation by partition)
        assert [sum(e["sizes"]) for e in worker["input"]] == [5, 10]


@pytest.mark.slow
def test_structured_stream_micro_batches_are_fed_as_epochs(sc, spark, nodes, tmp_path):
    run_all(nodes, "epochs", batch_size=4)
    source = tmp_path / "in"
    source.mkdir()
    for i, n in enumerate([10, 31]):  # one file per micro-batch
        (source / f"part{i}.txt").write_text("".join(f"{i * 100 + j}\n" for j in range(n)))
    stream = spark.readStream.schema("value long").option("maxFilesPerTrigger", 1).csv(str(source))
    reports = []
    query = feed_job.train(sc, stream, cluster_id=nodes.id, num_workers=WORKERS, feed_timeout=60,
                           on_report=reports.append)
    try:
        wait_for(reports, 2)
    finally:
        query.stop()
    feed_job.end_feed(sc, cluster_id=nodes.id, num_workers=WORKERS)
    per_batch = [r["inputs"]["input"]["rows_per_worker_per_epoch"] for r in reports]
    assert sorted(per_batch) == [3, 10]
    for worker in results(nodes):
        assert [sum(e["sizes"]) for e in worker["input"]] == per_batch


def test_routing_keys_land_in_their_partition_under_spark_hash_partitioning(spark):
    from pyspark.sql import functions as F  # noqa: N812

    from tfos.feed.routing import routing_keys, spark_hash_long

    values = [0, 1, -1, 2**31, -(2**31) - 1, 2**62 + 12345, -(2**63)] + list(range(2, 300))
    df = spark.createDataFrame([(v,) for v in values], "v bigint")
    expected = {r.v: r.h for r in df.select("v", F.hash("v").alias("h")).collect()}
    assert {v: spark_hash_long(v) for v in values} == expected
    for n in (1, 2, 3, 7):
        keys = routing_keys(n)
        tagged = spark.createDataFrame([(k, i) for i, k in enumerate(keys)], "key bigint, shard int")
        placed = tagged.repartition(n, "key").select("shard", F.spark_partition_id().alias("p")).collect()
        assert sorted((r.shard, r.p) for r in placed) == [(k, k) for k in range(n)]


def test_a_dataframe_is_computed_once_and_every_worker_gets_the_same_rows(spark, nodes):
    from pyspark.sql import functions as F  # noqa: N812

    sc = spark.sparkContext
    computed = sc.accumulator(0)

    def expensive(value):  # a Python UDF the feed must not run twice per row (no separate count job)
        computed.add(1)
        return value * 2

    df = spark.range(0, 400, numPartitions=4).withColumn("double", F.udf(expensive, "long")("id"))
    run_all(nodes, "collect")
    report = feed_job.train(sc, df, cluster_id=nodes.id, num_workers=WORKERS, feed_timeout=60, end_feed=True)
    assert computed.value == 400
    got = [r for worker in results(nodes) for r in worker]
    # 100 rows a partition: 33 complete groups each, the 4 last rows on workers 0, 1, 2, 0
    assert report["inputs"]["input"]["shard_rows"] == [134, 133, 133]
    assert len(got) == 133 * WORKERS and all(r.double == r.id * 2 for r in got)


def test_a_feed_that_succeeds_and_one_that_fails_leave_nothing_behind(sc, nodes):
    cwds = [cwd for cwd, _ in executor_dirs(sc)]
    assert all(os.path.isdir(os.path.join(cwd, ".tfos-feed", nodes.id)) for cwd in cwds)
    run_all(nodes, "collect")
    feed_job.train(sc, uneven_rdd(sc, [40, 60]), cluster_id=nodes.id, num_workers=WORKERS, feed_timeout=60,
                   end_feed=True)
    assert sum(len(rows) for rows in results(nodes)) == 99
    assert leftovers(sc, nodes) == []
    for d in nodes.dirs:  # open the nodes' feeds again
        os.unlink(os.path.join(d, "input.end"))

    # worker:2 fails while being fed; the other feed tasks are cancelled (killed: no finally of theirs runs)
    for i in range(2):
        nodes.pool.submit(i, "collect", feed_dir=nodes.dirs[i], node=f"worker:{i}")
    nodes.pool.submit(2, "fail", feed_dir=nodes.dirs[2], node="worker:2", batches=2, batch_size=8)
    data = sc.parallelize(range(30000), 6).map(lambda i: (i, np.zeros(32)))
    with pytest.raises(FeedError, match=r"boom in main_fun") as info:
        feed_job.train(sc, data, cluster_id=nodes.id, num_workers=WORKERS, num_epochs=5, feed_timeout=60)
    # the barrier task that fed worker:2 may have any index: the error names both
    assert info.value.node == "worker:2" and f"worker:2 failed while being fed shard {info.value.task} " in str(info.value)
    assert wait_until_clean(sc, nodes) == []
    unregister_all(sc, nodes.id)
    assert [cwd for cwd in cwds if os.path.exists(os.path.join(cwd, ".tfos-feed", nodes.id))] == []
    # .tfos-feed itself goes with the last cluster's entries (tfos.run's nodes of other tests may be there)
    assert [cwd for cwd in cwds if os.listdir(cwd) and os.path.isdir(os.path.join(cwd, ".tfos-feed"))
            and not os.listdir(os.path.join(cwd, ".tfos-feed"))] == []


def test_a_killed_feed_task_fails_the_feed_naming_its_shard_and_leaves_nothing_behind(sc, nodes, tmp_path):
    import signal

    thread, outcome = feed_with_a_hung_worker(sc, nodes, tmp_path)
    [claim] = [n for n in os.listdir(nodes.dirs[2]) if n.startswith("_feeding-")]
    with open(os.path.join(nodes.dirs[2], claim)) as f:
        import json

        task = json.load(f)
    os.kill(task["pid"], signal.SIGKILL)  # the feed task's Python worker dies without a word
    thread.join(60)
    error = outcome.get("error")
    assert isinstance(error, feed_job.FeedJobError), f"train() did not fail with a FeedJobError: {error!r}"
    assert f"the feed task of shard {task['shard']} (worker:2, " in str(error) and "Python worker exited" in str(error)
    assert (error.task, error.node) == (task["shard"], "worker:2")
    # Spark does not retry a barrier ResultStage; what the killed task and the cancelled ones left goes
    assert wait_until_clean(sc, nodes) == []
