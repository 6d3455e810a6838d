"""cluster.train() without a shuffle, on the standalone test cluster with real node processes:
RDD partitions go from the tasks that compute them straight to the nodes' feed hubs."""

from __future__ import annotations

import json
import os
import time

import pytest

from tfos import InputMode
from tfos.feed.errors import FeedError


def read_all(args, ctx):
    """Every epoch through next_batch; what was read goes to a file per node."""
    feed = ctx.get_data_feed(train_mode=True)
    ids = []
    while not feed.should_stop():
        ids.extend(int(row[0]) for row in feed.next_batch(args["batch"]))
    with open(os.path.join(args["out"], f"{ctx.job_name}-{ctx.task_index}.json"), "w") as f:
        json.dump({"ids": ids, "epochs": feed.epochs_read}, f)


def read_then_terminate(args, ctx):
    feed = ctx.get_data_feed(train_mode=True)
    rows = sum(len(feed.next_batch(args["batch"])) for _ in range(args["batches"]))
    feed.terminate()
    with open(os.path.join(args["out"], f"{ctx.job_name}-{ctx.task_index}.json"), "w") as f:
        json.dump({"rows": rows}, f)


def stages_of_group(sc, group):
    tracker = sc.statusTracker()
    return [len(tracker.getJobInfo(j).stageIds) for j in tracker.getJobIdsForGroup(group)]


def test_train_routes_rdd_rows_to_the_nodes_without_a_shuffle_in_exact_epochs(sc, tmp_path, start):
    sizes = [120, 3, 77, 0, 41]
    starts = [sum(sizes[:p]) for p in range(len(sizes))]
    data = sc.parallelize(range(len(sizes)), len(sizes)).flatMap(
        lambda p: [(starts[p] + j, p) for j in range(sizes[p])])
    cluster = start(sc, read_all, {"out": str(tmp_path), "batch": 16}, 3, input_mode=InputMode.SPARK)
    report = cluster.train(data, num_epochs=2, feed_timeout=120)
    cluster.shutdown(timeout=120)
    assert report["route"] == "direct"
    stages = stages_of_group(sc, cluster.feed_group)  # the feed's job, and the end of the feed's at shutdown
    assert stages and set(stages) == {1}  # one stage per job: no shuffle
    got = [json.load(open(tmp_path / f"worker-{i}.json")) for i in range(3)]
    per_epoch = report["inputs"]["input"]["rows_per_worker_per_epoch"]
    shards = [sum(1 for p in range(len(sizes)) for j in range(sizes[p]) if (p + j) % 3 == k) for k in range(3)]
    assert per_epoch == min(shards) == 80  # 241 rows in shards of 80-81 rows (rotation), remainder dropped
    assert [len(g["ids"]) for g in got] == [2 * per_epoch] * 3
    for k, g in enumerate(got):  # each worker reads only its own rotation shard
        own = {starts[p] + j for p in range(len(sizes)) for j in range(sizes[p]) if (p + j) % 3 == k}
        assert set(g["ids"]) <= own
    assert report["inputs"]["input"]["first_batch_seconds"] is not None
    # every node runs on this host: every feed task reached every hub over its Unix socket
    assert [s["links"] for s in report["shards"]] == [{"unix_socket": 5, "tcp": 0}] * 3  # one task per partition
    # a small input stays in the hubs' memory for both epochs: nothing written to local disk
    assert [s["spilled_bytes"] for s in report["shards"]] == [[0]] * 3


def test_terminate_stops_the_feed_without_computing_the_rest_of_the_input(sc, tmp_path, start):
    marks = tmp_path / "computed"
    marks.mkdir()

    def slow_partition(p):
        (marks / str(p)).write_text("")
        time.sleep(0.5)
        return [(p * 1000 + j, p) for j in range(1000)]

    data = sc.parallelize(range(60), 60).flatMap(slow_partition)
    cluster = start(sc, read_then_terminate, {"out": str(tmp_path), "batch": 50, "batches": 4}, 3,
                    input_mode=InputMode.SPARK)
    began = time.monotonic()
    report = cluster.train(data, num_epochs=1, feed_timeout=120)
    took = time.monotonic() - began
    cluster.shutdown(timeout=120)
    assert report["inputs"]["input"]["terminated"] == ["worker:0", "worker:1", "worker:2"]
    computed = len(os.listdir(marks))
    assert computed < 20, f"{computed} of 60 partitions were computed after every node terminated ({took:.1f}s)"
    assert [json.load(open(tmp_path / f"worker-{i}.json"))["rows"] for i in range(3)] == [200] * 3


def test_a_malformed_row_fails_train_naming_its_partition_and_offset(sc, tmp_path, start):
    data = sc.parallelize(range(4), 4).flatMap(lambda p: [(j, p) for j in range(300)] + ([("bad",)] if p == 2 else []))
    cluster = start(sc, read_all, {"out": str(tmp_path), "batch": 16}, 3, input_mode=InputMode.SPARK)
    with pytest.raises(Exception, match=r"malformed row in partition 2, row offset 300") as info:
        cluster.train(data, num_epochs=1, feed_timeout=60)
    assert isinstance(info.value, FeedError | RuntimeError)


def test_a_dataframe_with_empty_partitions_is_fed_without_a_shuffle(sc, tmp_path, start):
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    df = spark.createDataFrame([(i, i % 5) for i in range(90)], "id long, label long").repartition(8, "label")
    cluster = start(sc, read_all, {"out": str(tmp_path), "batch": 16}, 3, input_mode=InputMode.SPARK)
    report = cluster.train(df, num_epochs=1, feed_timeout=120)
    cluster.shutdown(timeout=120)
    assert report["route"] == "direct"
    got = [json.load(open(tmp_path / f"worker-{i}.json"))["ids"] for i in range(3)]
    per_worker = report["inputs"]["input"]["rows_per_worker_per_epoch"]
    assert [len(g) for g in got] == [per_worker] * 3 and per_worker >= 28
    assert len(set().union(*got)) == 3 * per_worker  # no row fed twice
