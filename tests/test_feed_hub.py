"""The feed hub below Spark: feed tasks (``send_partition``, run in threads here) send their
partitions' shards over TCP (or a hub's Unix socket, from its own host) to real hubs, which feed real DataFeed consumer processes over
their Unix sockets. Exact epochs, the first epoch flowing before the input has ended, the
authenticated greeting, a feed task that dies, terminate() and the driver's cancel."""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time

import numpy as np
import pytest

from tests.test_feed_consumers import ConsumerPool
from tfos.feed import hub_feed
from tfos.feed.direct_job import cancel_hubs
from tfos.feed.direct_task import send_partition
from tfos.feed.errors import FeedError
from tfos.feed.hub import FeedHub
from tfos.feed.hub_link import HubLink
from tfos.feed.plans import DirectPlan
from tfos.feed.rotation import rows_for_shard

WORKERS = 2


@pytest.fixture(scope="module")
def consumers():
    pool = ConsumerPool(WORKERS)
    yield pool
    pool.close()


@pytest.fixture
def hubs(consumers, tmp_path):
    """One hub per consumer process, each feeding that process's DataFeed."""
    consumers.reset()
    secret = secrets.token_bytes(32)
    made = []
    for i in range(WORKERS):
        feed_dir = tmp_path / f"feed-{i}"
        feed_dir.mkdir(mode=0o700)
        node = {"job_name": "worker", "task_index": i, "feed_dir": str(feed_dir), "pid": consumers.pid(i)}
        made.append(FeedHub(node, secret, 0, "127.0.0.1").start())
    yield made, secret, consumers
    for hub in made:
        hub.close()
    consumers.reset()


def plan_for(hubs, secret, partitions, *, epochs=1, remainder="drop", end_feed=True, chunk_rows=16, timeout=30.0,
             hostname="another-host"):
    """The feed plan; with ``hostname=socket.gethostname()`` the tasks reach the hubs over their Unix sockets."""
    addresses = [{"node": h.node, "host": "127.0.0.1", "port": h.port, "hostname": hostname,
                  "socket": h.socket_path} for h in hubs]
    return DirectPlan(0, "input", secrets.token_hex(6), addresses, secret, partitions, epochs, remainder, end_feed,
                      timeout, chunk_rows, 1 << 20)


def rows_of(partition_sizes):
    """Rows ``(id, features)``; ids count up over the partitions."""
    out, start = [], 0
    for m in partition_sizes:
        out.append([(start + j, np.full(4, start + j, dtype=np.float32)) for j in range(m)])
        start += m
    return out


def send_all(plan, partitions, concurrent=True):
    """Run every partition's feed task (in threads, like several executors); returns their lines."""
    lines, errors = [None] * len(partitions), []

    def run(p):
        try:
            lines[p] = list(send_partition(plan, p, iter(partitions[p])))
        except Exception as exc:  # noqa: BLE001 - checked by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in range(len(partitions))]
    for t in threads:
        t.start()
        if not concurrent:
            t.join()
    for t in threads:
        t.join(60)
    return lines, errors


@pytest.mark.parametrize(("remainder", "transport", "held_bytes"),
                         [("drop", "tcp", None), ("wrap", "tcp", None), ("drop", "unix", None), ("drop", "tcp", 2000),
                          ("wrap", "unix", 2000)])
def test_every_worker_gets_the_same_rows_each_epoch_from_uneven_partitions(hubs, remainder, transport, held_bytes,
                                                                            monkeypatch):
    """``held_bytes``: what a hub holds in memory; 2,000 bytes keeps a chunk or two, the rest goes to disk."""
    if held_bytes is not None:
        monkeypatch.setattr(hub_feed, "HELD_BYTES", held_bytes)
    made, secret, pool = hubs
    sizes = [13, 0, 40, 1, 7]
    parts = rows_of(sizes)
    assert all(h.socket_path and os.path.exists(h.socket_path) for h in made)
    plan = plan_for(made, secret, len(sizes), epochs=3, remainder=remainder,
                    hostname=socket.gethostname() if transport == "unix" else "another-host")
    for i in range(WORKERS):
        pool.submit(i, "epochs", feed_dir=made[i].target.node["feed_dir"], node=made[i].node, batch_size=5)
    lines, errors = send_all(plan, parts)
    assert not errors
    # a hub on the task's own host is reached over its Unix socket, one elsewhere over TCP
    via_unix = [sorted(json.loads(line[0])["unix_socket"]) for line in lines if line]
    assert via_unix == [sorted(h.node for h in made) if transport == "unix" else []] * len(sizes)
    got = [pool.result(i) for i in range(WORKERS)]
    shard = [sum(rows_for_shard(m, p % WORKERS, k, WORKERS) for p, m in enumerate(sizes)) for k in range(WORKERS)]
    per_epoch = min(shard) if remainder == "drop" else max(shard)
    for k, result in enumerate(got):
        epochs = result["input"]
        assert [sum(e["sizes"]) for e in epochs] == [per_epoch] * 3, f"worker {k}: {epochs}"
        mine = {int(x) for p, m in enumerate(sizes) for j, (x, _) in enumerate(parts[p])
                if (p + j) % WORKERS == k}
        for e in epochs:
            assert set(map(int, e["ids"])) <= mine  # only this worker's shard, never another's rows
        if remainder == "wrap":  # every row of the shard in every epoch, some twice
            assert all(set(map(int, e["ids"])) == mine for e in epochs)
    spilled = [f.spill.disk_bytes for h in made for f in h._feeds.values()]
    assert all(spilled) if held_bytes else not any(spilled)


def test_an_input_fed_once_frees_what_the_node_has_so_memory_holds_the_backlog_only(hubs, monkeypatch):
    monkeypatch.setattr(hub_feed, "HELD_BYTES", 3000)
    made, secret, pool = hubs
    sizes = [150, 150]
    plan = plan_for(made, secret, len(sizes))
    for i in range(WORKERS):
        pool.submit(i, "epochs", feed_dir=made[i].target.node["feed_dir"], node=made[i].node, batch_size=5)
    _, errors = send_all(plan, rows_of(sizes))
    assert not errors
    got = [pool.result(i) for i in range(WORKERS)]
    assert [[sum(e["sizes"]) for e in g["input"]] for g in got] == [[150]] * WORKERS
    for k, g in enumerate(got):
        assert sorted(map(int, g["input"][0]["ids"])) == [p * 150 + j for p in range(2) for j in range(150)
                                                         if (p + j) % WORKERS == k]
    for h in made:
        (feed,) = h._feeds.values()
        # every chunk passed through memory or disk, and nothing is held once the node has it all
        assert feed.spill.held_bytes == 0
        assert feed.spill.rows == 150


def test_the_first_rows_reach_the_node_before_the_rest_of_the_input_is_read(hubs):
    made, secret, pool = hubs
    parts = rows_of([200, 200])
    plan = plan_for(made, secret, 2, end_feed=True)
    for i in range(WORKERS):
        pool.submit(i, "terminate_after", feed_dir=made[i].target.node["feed_dir"], node=made[i].node,
                    batches=3, batch_size=10)
    # only partition 0: partition 1 is not even started, yet every worker can read 30 rows
    lines, errors = send_all(plan, parts[:1])
    assert not errors and lines[0]
    got = [pool.result(i, timeout=30) for i in range(WORKERS)]
    assert [g["rows"] for g in got] == [30, 30]
    assert all(g["should_stop"] for g in got)
    # the nodes terminated: partition 1's feed task is turned away without sending a row
    later = list(send_partition(plan, 1, iter(parts[1])))
    assert '"complete": false' in later[0] and '"rows": 0' in later[0]


@pytest.mark.parametrize("hostname", ["another-host", socket.gethostname()], ids=["tcp", "unix"])
def test_a_feed_task_without_the_cluster_secret_is_refused_before_sending_a_row(hubs, hostname):
    made, secret, _ = hubs
    plan = plan_for(made, secret, 1, hostname=hostname)
    hub = plan.hubs[0]
    with pytest.raises(FeedError, match="refused partition 0 of input 'input': not authenticated"):
        HubLink(hub, plan.hello(0, 0, 0), secrets.token_bytes(32), 5.0)


def test_the_hubs_unix_socket_is_its_owners_alone_and_goes_with_the_hub(hubs):
    made, secret, _ = hubs
    path = made[0].socket_path
    assert os.stat(path).st_mode & 0o077 == 0  # no other user on the host can even connect
    made[0].close()
    assert not os.path.exists(path)
    # a task on the hub's host whose socket is gone tries the hub's TCP port instead (closed too: an error naming it)
    with pytest.raises(FeedError, match=r"the feed hub of worker:0 at 127\.0\.0\.1:\d+"):
        HubLink(plan_for(made, secret, 1, hostname=socket.gethostname()).hubs[0], {}, secret, 1.0)


def test_a_feed_task_that_dies_after_sending_rows_fails_the_nodes_datafeed_naming_it(hubs):
    made, secret, pool = hubs
    plan = plan_for(made, secret, 2, chunk_rows=4)
    for i in range(WORKERS):
        pool.submit(i, "collect", feed_dir=made[i].target.node["feed_dir"], node=made[i].node, batch_size=4)
    # partition 1: a retry of an attempt that sent nothing is fine, one after rows is not
    link = HubLink(plan.hubs[0], plan.hello(1, 0, 0), secret, 5.0)
    link.close()  # went away before sending anything
    rows = rows_of([0, 50])[1]

    def dies_midway():
        for j, row in enumerate(rows):
            if j == 30:  # once every node has rows of this partition (one that had none would stay ready)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not all(
                        f.rows_fed for h in made for f in h._feeds.values()):
                    time.sleep(0.05)
                raise RuntimeError("executor lost")
            yield row

    with pytest.raises(RuntimeError, match="executor lost"):
        list(send_partition(plan, 1, dies_midway()))
    for i in range(WORKERS):
        with pytest.raises(AssertionError, match="partition 1 of input 'input'") as info:
            pool.result(i, timeout=30)
        assert "went away" in str(info.value) or "executor lost" in str(info.value)


def test_a_cancelled_feed_leaves_an_unfed_node_ready_for_the_next_feed(hubs):
    made, secret, pool = hubs
    plan = plan_for(made, secret, 3)
    for i in range(WORKERS):
        pool.submit(i, "collect", feed_dir=made[i].target.node["feed_dir"], node=made[i].node, batch_size=4)
    link = HubLink(plan.hubs[0], plan.hello(0, 0, 0), secret, 5.0)  # opens the feed at hub 0 only
    link.close()
    time.sleep(0.5)
    cancel_hubs(plan, "the job failed reading partition 2")
    again = plan_for(made, secret, 2)
    _, errors = send_all(again, rows_of([20, 21]))
    assert not errors
    got = [pool.result(i, timeout=30) for i in range(WORKERS)]
    assert [len(g) for g in got] == [20, 20]  # 41 rows, 20 per worker, 1 left out


def test_the_hub_leaves_no_spill_behind(hubs, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path))
    made, secret, pool = hubs
    plan = plan_for(made, secret, 2, epochs=2)
    for i in range(WORKERS):
        pool.submit(i, "epochs", feed_dir=made[i].target.node["feed_dir"], node=made[i].node)
    _, errors = send_all(plan, rows_of([30, 30]))
    assert not errors
    [pool.result(i) for i in range(WORKERS)]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(n.startswith("tfos-feed-spill-") for n in os.listdir(tmp_path)):
        time.sleep(0.1)
    assert not [n for n in os.listdir(tmp_path) if n.startswith("tfos-feed-spill-")]


def test_partitions_no_feed_task_ran_for_count_as_empty_once_the_driver_says_so(hubs):
    from tfos.feed.direct_job import _announce_job_end

    made, secret, pool = hubs
    plan = plan_for(made, secret, 3)
    for i in range(WORKERS):
        pool.submit(i, "collect", feed_dir=made[i].target.node["feed_dir"], node=made[i].node, batch_size=4)
    parts = rows_of([10, 0, 11])
    lines = [list(send_partition(plan, p, iter(parts[p])))[0] for p in (0, 2)]  # Spark ran no task for 1
    time.sleep(0.5)
    assert not pool.slots[0][1].poll(0), "a worker ended its epoch before partition 1 was accounted for"
    _announce_job_end([plan], [3], lines)
    got = [pool.result(i, timeout=30) for i in range(WORKERS)]
    assert [len(g) for g in got] == [10, 10]  # 21 rows: shards of 11 and 10, 10 each
