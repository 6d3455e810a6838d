"""The driver's progress server exchanging the feed tasks' shard sizes (real sockets, no Spark)."""

from __future__ import annotations

import threading
import time

import pytest

from tfos.feed.progress import ProgressServer, exchange_sizes


@pytest.fixture
def server():
    srv = ProgressServer("127.0.0.1", {}, log=False)
    yield srv
    srv.close()


def exchange_all(server, feed, sizes, timeout=10.0, order=None):
    answers = {}

    def run(k):
        answers[k] = exchange_sizes(server.address, feed, k, len(sizes), sizes[k], timeout)

    threads = [threading.Thread(target=run, args=(k,)) for k in (order or range(len(sizes)))]
    for t in threads:
        t.start()
        time.sleep(0.05)  # arrive one after the other, as feed tasks do
    for t in threads:
        t.join(timeout + 15)
    return answers


def test_every_task_gets_every_shards_sizes_as_soon_as_the_last_one_arrives(server):
    sizes = [[101, 7], [101, 6], [99, 7]]
    started = time.monotonic()
    answers = exchange_all(server, "f1", sizes)
    assert answers == {0: sizes, 1: sizes, 2: sizes}
    assert time.monotonic() - started < 2  # no polling interval: answered when the last shard arrived


def test_a_shard_that_never_reports_is_named_after_the_timeout(server):
    started = time.monotonic()
    got = exchange_sizes(server.address, "f2", 0, 3, [5], timeout=1.0)
    assert got == [[5], None, None]
    assert 1.0 <= time.monotonic() - started < 5


def test_a_retried_stage_starts_a_new_round(server):
    assert exchange_all(server, "f3", [[1], [2]]) == {0: [[1], [2]], 1: [[1], [2]]}
    assert exchange_all(server, "f3", [[3], [4]]) == {0: [[3], [4]], 1: [[3], [4]]}


def test_an_answer_needs_the_feeds_key(server):
    host, port, key = server.address
    forged = (host, port, "00" * 32)
    with pytest.raises(ConnectionError, match="closed the connection"):
        exchange_sizes(forged, "f4", 0, 1, [1], timeout=1.0)


def test_a_task_that_died_while_waiting_is_left_out_of_the_round(server):
    import json
    import socket

    from tfos.feed.progress import _frame

    host, port, key = server.address
    body = json.dumps({"feed": "f5", "shard": 0, "shards": 2, "sizes": [999], "timeout": 10}).encode()
    with socket.create_connection((host, port)) as dead:  # shard 0 of a failed stage attempt, then killed
        dead.sendall(_frame(bytes.fromhex(key), body))
        time.sleep(0.3)
    # the retried stage, shard 1 first: it must not be answered with the dead task's sizes
    assert exchange_all(server, "f5", [[7], [8]], order=[1, 0]) == {0: [[7], [8]], 1: [[7], [8]]}


def test_the_driver_hears_every_shards_sizes_once_the_round_is_complete():
    heard = []
    srv = ProgressServer("127.0.0.1", {}, log=False, on_plan=heard.append)
    try:
        exchange_all(srv, "f6", [[4], [5], [6]])
        deadline = time.monotonic() + 5
        while not heard and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        srv.close()
    assert heard == [[[4], [5], [6]]]


def test_rows_are_counted_per_node_from_the_reports_that_name_it(server):
    from tfos.feed.progress import ProgressReporter

    reporters = [ProgressReporter(server.address, {"feed": "f7", "shard": k, "node": f"worker:{k % 2}"})
                 for k in range(3)]
    for k, reporter in enumerate(reporters):
        reporter.add("input", 10 * (k + 1))
        reporter.close()  # sends the last cumulative report
    anonymous = ProgressReporter(server.address, {"feed": "f7", "shard": 9})
    anonymous.add("input", 1000)
    anonymous.close()
    deadline = time.monotonic() + 5
    while server.rows().get("input") != 1060 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.rows() == {"input": 1060}
    assert server.rows_by_node() == {"worker:0": {"input": 40}, "worker:1": {"input": 20}}
