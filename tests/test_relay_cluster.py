"""On the real standalone cluster: node output relayed to the driver's log with role tags, a flood
bounded and counted, Keras progress in ``cluster.status()``, Spark job descriptions, and the
stacks of a node that hangs past ``shutdown(timeout=...)``."""

from __future__ import annotations

import json
import logging
import time

import pytest

from tests import relay_mains
from tfos import InputMode
from tfos.cluster import relay
from tfos.feed.errors import FeedError


def node_messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == relay.NODE_LOGGER]


def spark_jobs(sc) -> list[dict]:
    """Every job's ``jobGroup`` and ``description`` from Spark's status store: what the REST API's
    ``/api/v1/applications/<id>/jobs`` serves (the test application runs without the UI)."""
    def opt(value):
        return value.get() if value.isDefined() else None

    found = []
    jobs = sc._jsc.sc().statusStore().jobsList(None).iterator()
    while jobs.hasNext():
        job = jobs.next()
        found.append({"jobId": job.jobId(), "jobGroup": opt(job.jobGroup()), "description": opt(job.description())})
    return found


def test_every_channel_of_every_node_reaches_the_driver_tagged_and_a_flood_is_bounded(sc, tmp_path, start, caplog):
    caplog.set_level(logging.INFO, logger=relay.NODE_LOGGER)
    flood = 100_000
    started = time.monotonic()
    cluster = start(sc, relay_mains.chatty, {"out": str(tmp_path), "flood": flood}, 2)
    cluster.shutdown(timeout=180)
    elapsed = time.monotonic() - started
    messages = node_messages(caplog)
    for name in ("worker:0", "worker:1"):
        for line in (f"stdout line from {name}", f"stderr line from {name}",
                     f"W0000 00:00:1.0 native.cc:1] native line from {name}",
                     f"user_main: logging record from {name}", f"user_main: info record from {name}"):
            assert f"[{name}] {line}" in messages, line
    flooded = sum(1 for m in messages if m.startswith("[worker:0] flood "))
    dropped = sum(getattr(r, "tfos_dropped", 0) for r in caplog.records if getattr(r, "tfos_node", "") == "worker:0")
    # every line relayed or counted; a few of worker:0's own lines (e.g. "main_fun finished", read while the
    # queue was still full) may be among the dropped ones, never a warning
    assert flood <= flooded + dropped <= flood + 10
    assert flooded <= relay.MAX_QUEUED_LINES + relay.BURST_LINES + relay.LINES_PER_SEC * elapsed
    assert any("relay dropped" in m for m in messages if m.startswith("[worker:0]"))
    sink = cluster.server.log_sink
    assert sink.dropped["worker:0"] == dropped and sink.dropped["worker:1"] == 0
    with open(tmp_path / "worker-0.json") as f:
        flood_seconds = json.load(f)["flood_seconds"]
    print(f"flood of {flood} lines: main spent {flood_seconds:.1f}s printing; {flooded} relayed, {dropped} "
          f"counted as dropped; cluster up to shut down {elapsed:.1f}s")
    assert flood_seconds < 60
    jobs = [j for j in spark_jobs(sc) if j.get("jobGroup") == cluster.start_group]
    assert [j["description"] for j in jobs] == [f"tfos {cluster.cluster_id}: start 2 TF nodes"]


def test_relay_off_and_warnings(sc, tmp_path, start, caplog):
    caplog.set_level(logging.INFO, logger=relay.NODE_LOGGER)
    start(sc, relay_mains.chatty, {"out": str(tmp_path)}, 1, relay="warnings").shutdown(timeout=120)
    messages = node_messages(caplog)
    assert "[worker:0] user_main: logging record from worker:0" in messages
    assert "[worker:0] stderr line from worker:0" in messages
    assert not any("stdout line" in m or "info record" in m for m in messages)
    caplog.clear()
    start(sc, relay_mains.chatty, {"out": str(tmp_path)}, 1, relay="off").shutdown(timeout=120)
    assert node_messages(caplog) == []


def test_keras_fit_progress_reaches_status_and_the_progress_log(sc, tmp_path, start, caplog, monkeypatch):
    monkeypatch.setattr("tfos.cluster.progress.PROGRESS_LOG_SECS", 2.0)
    caplog.set_level(logging.INFO, logger="tfos.progress")
    cluster = start(sc, relay_mains.keras_progress, {"out": str(tmp_path), "epochs": 4, "sleep": 0.05}, 1)
    steps = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        row = cluster.status()["worker:0"]
        if row["step"] is not None and (not steps or row["step"] != steps[-1]):
            steps.append(row["step"])
        if row["state"] == "finished":
            break
        time.sleep(0.5)
    cluster.shutdown(timeout=60)
    final = cluster.status()["worker:0"]
    assert len(steps) >= 3 and steps == sorted(steps), steps  # seen advancing while fit ran
    assert final["step"] == 4 * 20 and final["epoch"] == 4 and final["loss"] > 0
    assert 0 <= final["metrics"]["accuracy"] <= 1
    assert final["heartbeat_age"] < 30
    lines = [r.getMessage() for r in caplog.records if r.name == "tfos.progress"]
    assert any("worker:0 epoch" in line and " step " in line and " loss " in line for line in lines), lines
    print("steps seen by cluster.status():", steps, "| last progress line:", lines[-1])


def test_a_hung_node_logs_its_stack_when_shutdown_times_out(sc, tmp_path, start, caplog):
    caplog.set_level(logging.INFO)
    cluster = start(sc, relay_mains.hang, {"out": str(tmp_path)}, 1)
    deadline = time.monotonic() + 120
    while cluster.status()["worker:0"]["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.2)  # main_fun has started (and will never end)
    with pytest.raises(TimeoutError, match="worker:0"):
        cluster.shutdown(timeout=5)
    stacks = [r.getMessage() for r in caplog.records if "stuck_forever_in_here" in r.getMessage()]
    assert stacks, "no stack of the hung node was logged"
    assert "worker:0" in stacks[0] and "relay_mains.py" in stacks[0]


def test_a_node_that_stops_reading_its_feed_logs_its_stack_when_the_feed_times_out(sc, tmp_path, start, caplog):
    caplog.set_level(logging.INFO)
    cluster = start(sc, relay_mains.hang, {"out": str(tmp_path)}, 3, input_mode=InputMode.SPARK)
    rows = sc.parallelize([(list(range(784)), i % 10) for i in range(6000)], 3)  # more than the channels buffer
    with pytest.raises(FeedError, match="(?i)timed out|FeedTimeout"):
        cluster.train(rows, num_epochs=1, feed_timeout=5)
    stacks = [r.getMessage() for r in caplog.records if "stuck_forever_in_here" in r.getMessage()]
    assert stacks, "no stack of the nodes that stopped reading was logged"
    assert "the feed timed out" in stacks[0] and "relay_mains.py" in stacks[0]
    with pytest.raises(FeedError):  # the failed feed failed the cluster
        cluster.shutdown(timeout=60)


def test_feed_and_inference_jobs_say_what_they_are(sc, start):
    cluster = start(sc, relay_mains.echo_feed, {}, 3, input_mode=InputMode.SPARK)
    rdd = sc.parallelize(range(60), 3)
    cluster.train(rdd, num_epochs=2, feed_timeout=120)
    fed = {name: row["feed_rows"] for name, row in cluster.status().items()}
    assert fed == {f"worker:{i}": {"input": 40} for i in range(3)}, fed  # 60 rows x 2 epochs over 3 workers
    deadline = time.monotonic() + 30  # what each node read comes with its next heartbeats
    while time.monotonic() < deadline and any(
            row["feed"].get("input", {}).get("rows_read") != 40 for row in cluster.status().values()):
        time.sleep(0.5)
    read = {name: row["feed"]["input"] for name, row in cluster.status().items()}
    assert all(r["rows_read"] == 40 and r["queued_rows"] == 0 and r["epochs_read"] == 2 for r in read.values()), read
    assert sorted(cluster.inference(rdd, feed_timeout=120).collect()) == list(range(60))
    cluster.shutdown(timeout=120)
    descriptions = {j["description"] for j in spark_jobs(sc) if j.get("jobGroup") == cluster.feed_group}
    cid = cluster.cluster_id
    assert {f"tfos {cid}: feeding 2 epochs of 'input' to 3 workers", f"tfos {cid}: inference",
            f"tfos {cid}: end of feed (3 workers)"} <= descriptions, descriptions
