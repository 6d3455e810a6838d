"""The output relay, progress and stack messages without Spark: the bounded queue, the
control-plane messages, and a real process whose fds 1 and 2 are captured (100,000-line flood)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from tfos.cluster import relay
from tfos.cluster.progress import node_status, progress_line
from tfos.cluster.relay import DriverRelay, LineQueue
from tfos.reservation import protocol
from tfos.reservation.client import ReservationClient, ReservationError
from tfos.reservation.server import ReservationServer

CHILD = r"""
import logging, os, sys, time
from tfos.cluster.relay import OutputRelay
from tfos.cluster.node_logging import configure_process_logging
host, port, secret, n = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), int(sys.argv[4])
relay = OutputRelay.for_node((host, port), secret, 0)
configure_process_logging("worker:0", relay=relay)
print("first stdout line")
print("a stderr line", file=sys.stderr)
os.write(2, b"W0000 00:00:1.0 native.cc:1] a native warning\n")
logging.getLogger("user").warning("a logging record")
started = time.monotonic()
for i in range(n):
    print(f"flood {i}")
sys.stdout.flush()
print(f"flood took {time.monotonic() - started:.3f}s")
relay.close()
"""


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server():
    srv = ReservationServer(expected=1, secret=protocol.new_secret(), host="127.0.0.1", read_timeout=2.0)
    srv.start()
    client = ReservationClient(srv.address, srv.secret)
    client.register({"executor_id": 0, "host": "127.0.0.1", "port": 5000, "job_name": "worker", "task_index": 0})
    yield srv, client
    client.close()
    srv.close()


@pytest.fixture
def records():
    handler = Records()
    log = logging.getLogger(relay.NODE_LOGGER)
    log.addHandler(handler)
    yield handler.records
    log.removeHandler(handler)


def test_queue_keeps_the_start_and_the_end_of_a_burst_and_counts_the_rest():
    q = LineQueue(max_lines=10)
    q.put_many([("out", 20, f"line {i}") for i in range(1000)])
    lines, dropped = q.take(100)
    assert [t for _, _, t in lines] == [f"line {i}" for i in range(5)] + [f"line {i}" for i in range(995, 1000)]
    assert dropped == 990
    assert q.take(100) == ([], 0)
    q.put_many([("err", 30, "x" * 10)] * 3)
    assert len(q) == 3


def test_a_warning_in_the_middle_of_a_flood_of_prints_is_kept():
    q = LineQueue(max_lines=10)
    q.put_many([("out", 20, f"print {i}") for i in range(500)])
    q.put(("err", 30, "stderr: the one line that matters"))  # e.g. read late by the stderr reader thread
    q.put_many([("out", 20, f"print {i}") for i in range(500, 1000)])
    q.put(("log", 40, "logging: an error"))
    lines, dropped = q.take(100)
    texts = [t for _, _, t in lines]
    assert "stderr: the one line that matters" in texts and texts[-1] == "logging: an error"
    assert texts[:5] == [f"print {i}" for i in range(5)]  # the burst's start stays
    assert len(lines) + dropped == 1002  # every line delivered or counted
    q.put_many([("err", 30, f"warning {i}") for i in range(100)])  # nothing below WARNING: the oldest go
    lines, dropped = q.take(100)
    assert [t for _, _, t in lines][-1] == "warning 99" and len(lines) + dropped == 100


def test_relay_levels_and_native_line_levels():
    assert relay.resolve_level(None) in relay.LEVELS
    assert relay.resolve_level("WARNINGS") == "warnings"
    with pytest.raises(ValueError, match="relay must be one of"):
        relay.resolve_level("loud")
    assert relay.line_level("out", "W0000 anything") == logging.INFO
    assert relay.line_level("err", "I0000 00:00:1733 12 cpu_feature_guard.cc:210] ...") == logging.INFO
    assert relay.line_level("err", "2026-12-02 03:00:00.123: E tensorflow/core/x.cc:1] bad") == logging.ERROR
    assert relay.line_level("err", "Traceback (most recent call last):") == logging.WARNING
    assert relay.line_level("err", "2026-12-02 03:51:05.260402: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] "
                                   "Could not find cuda drivers on your machine, GPU will not be used.") == logging.INFO
    assert relay.line_level("err", "W0000 00:00:1.0 native.cc:1] a native warning") == logging.WARNING
    assert relay.line_level("err", "I like this line") == logging.WARNING


def test_log_messages_are_validated_and_delivered_with_the_node_tag(server, records):
    srv, client = server
    assert client.log(0, [("out", 20, "ignored")]) == "off"  # no sink: the node is told the relay is off
    srv.log_sink = DriverRelay("all")
    assert client.log(0, [("out", 20, "hello"), ("log", 40, "user: bad")], dropped=3) == "all"
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (20, "[worker:0] hello"), (40, "[worker:0] user: bad"),
        (30, "[worker:0] relay dropped 3 lines (output faster than 500 lines/s or the driver out of reach); "
             "the executor's stdout/stderr logs have every line")]
    assert records[0].tfos_node == "worker:0" and records[0].tfos_stream == "out"
    for bad in ({"lines": [["pickle", 20, "x"]]}, {"lines": [["out", "20", "x"]]}, {"lines": "x"},
                {"lines": [], "dropped": -1}):
        with pytest.raises(ReservationError, match="log"):
            client.request(protocol.LOG, {"executor_id": 0, **bad})
    with pytest.raises(ReservationError, match="executor_id"):
        client.log(7, [("out", 20, "x")])
    assert srv.log_sink.lines["worker:0"] == 2 and srv.log_sink.dropped["worker:0"] == 3


def test_progress_and_stacks_round_trip(server):
    srv, client = server
    client.progress(0, {"step": 12, "loss": 0.5, "metrics": {"accuracy": 0.75, "bad": [1]}, "steps_per_sec": 3.0})
    status = node_status(srv.nodes()[0])
    assert status["step"] == 12 and status["loss"] == 0.5 and status["metrics"] == {"accuracy": 0.75}
    assert status["steps_per_sec"] == 3.0 and status["progress_age"] < 5 and status["heartbeat_age"] < 5
    assert progress_line(srv.nodes()) == "worker:0 step 12 loss 0.5 accuracy 0.75 (3 steps/s)"
    srv.nodes()[0].feed = {"input": {"rows_read": 7680, "queued_rows": 512, "epochs_read": 1}}
    assert progress_line(srv.nodes()).endswith("(3 steps/s) [input: 7680 rows read, 512 queued]")
    with pytest.raises(ReservationError, match="step"):
        client.progress(0, {"step": "twelve"})
    assert client.heartbeat_reply(0)["stacks"] == 0
    request = srv.request_stacks()
    assert client.heartbeat_reply(0)["stacks"] == request
    client.stacks(0, request, "Thread MainThread:\n  File x, line 1, in stuck\n")
    assert srv.await_stacks({0}, request, timeout=1) == {0: "Thread MainThread:\n  File x, line 1, in stuck\n"}


def test_a_process_flooding_100000_lines_is_relayed_bounded_and_counted(server, records):
    srv, client = server
    srv.log_sink = DriverRelay("all")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
               PYTHONUNBUFFERED="1")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, srv.address), srv.secret.hex(), "100000"],
                          env=env, capture_output=True, timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The executor's own streams still get everything (the tee), native writes included.
    assert proc.stdout.count(b"\nflood ") == 100001 and b"a native warning" in proc.stderr  # + "flood took"
    assert b"a logging record" in proc.stderr
    texts = [r.getMessage() for r in records]
    for expected in ("[worker:0] first stdout line", "[worker:0] a stderr line",
                     "[worker:0] W0000 00:00:1.0 native.cc:1] a native warning", "[worker:0] user: a logging record",
                     "[worker:0] flood 0", "[worker:0] flood 99999"):
        assert expected in texts
    assert texts[-1].startswith("[worker:0] flood took")
    flood = sum(1 for t in texts if t.startswith("[worker:0] flood ") and "took" not in t)
    dropped = sum(getattr(r, "tfos_dropped", 0) for r in records)
    assert flood + dropped == 100000  # never lost silently: every line relayed or counted
    bound = relay.MAX_QUEUED_LINES + relay.BURST_LINES + relay.LINES_PER_SEC * elapsed
    assert flood <= bound and dropped >= 100000 - bound
    print(f"flood: {flood} lines relayed, {dropped} dropped and counted, {elapsed:.1f}s in all; "
          f"{proc.stdout.splitlines()[-1].decode()}")


def test_progress_reporter_coalesces_and_computes_rates():
    class Client:
        def __init__(self):
            self.sent = []

        def progress(self, executor_id, body):
            self.sent.append(body)

        def close(self):
            pass

    from tfos.cluster.progress import ProgressReporter

    client = Client()
    reporter = ProgressReporter(client, 0, interval=3600)  # sends only when asked here
    reporter.report(step=1, loss=2.0, examples=32, accuracy=0.5)
    reporter._send()
    time.sleep(0.2)
    for step in range(2, 11):
        reporter.report(step=step, loss=1.0 / step, examples=32 * step, epoch=1, accuracy=0.9)
    reporter.close()
    assert [b["step"] for b in client.sent] == [1, 10]  # the latest report, not every one
    last = client.sent[-1]
    assert last["metrics"] == {"accuracy": 0.9} and last["epoch"] == 1
    assert last["examples_per_sec"] == pytest.approx(last["steps_per_sec"] * 32, rel=1e-3)
    assert 0 < last["steps_per_sec"] < 9 / 0.2 + 1
