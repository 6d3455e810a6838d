"""The reservation control plane over real sockets: framing, authentication, robustness."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
import random
import socket
import struct
import threading
import time

import pytest

from tfos.reservation import protocol
from tfos.reservation.client import ReservationClient, ReservationError
from tfos.reservation.server import FAILED, ReservationServer, ReservationTimeout, stop_key

# Bounds on waiting for an event: far above how long it takes even on a loaded 2-core machine,
# far below the timeouts a polling or blocking implementation would run into.
EVENT_BOUND = 60.0
LONG_POLL = 600.0


@pytest.fixture
def server():
    srv = ReservationServer(expected=2, secret=protocol.new_secret(), host="127.0.0.1",
                            read_timeout=EVENT_BOUND)
    srv.start()
    yield srv
    srv.close()


def node(eid: int, job: str = "worker") -> dict:
    return {"executor_id": eid, "host": "127.0.0.1", "port": 5000 + eid, "job_name": job, "task_index": eid}


def test_frame_round_trip_and_signature():
    secret = protocol.new_secret()
    a, b = socket.socketpair()
    protocol.send_frame(a, secret, "query", {"x": [1, "y"]})
    msg = protocol.read_frame(b, secret, timeout=EVENT_BOUND)
    assert msg.type == "query" and msg.body == {"x": [1, "y"]}
    protocol.send_frame(a, protocol.new_secret(), "query", {})
    with pytest.raises(protocol.ProtocolError, match="bad signature"):
        protocol.read_frame(b, secret, timeout=EVENT_BOUND)


def test_oversized_frame_rejected_before_reading_payload():
    secret = protocol.new_secret()
    a, b = socket.socketpair()
    a.sendall(struct.pack(">4sI", protocol.MAGIC, protocol.MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(protocol.ProtocolError, match="exceeds"):
        protocol.read_frame(b, secret, timeout=EVENT_BOUND)


def entered(server: ReservationServer, handler: str) -> threading.Event:
    """An event set when the server starts handling a message with ``handler`` (e.g. a long poll)."""
    event = threading.Event()
    original = getattr(server, handler)

    def wrapped(body: dict, *more) -> dict:
        event.set()
        return original(body, *more)

    setattr(server, handler, wrapped)
    return event


def test_a_header_then_close_is_a_truncated_frame_not_a_clean_close():
    a, b = socket.socketpair()
    a.sendall(struct.pack(">4sI", protocol.MAGIC, 10))
    a.close()
    with pytest.raises(protocol.ProtocolError, match="closed mid-frame") as err:
        protocol.read_frame(b, protocol.new_secret(), timeout=EVENT_BOUND)
    assert err.value.reason == protocol.TRUNCATED
    b.close()


def test_requests_carry_session_and_sequence_and_replies_echo_them():
    secret = protocol.new_secret()
    a, b = socket.socketpair()
    protocol.send_frame(a, secret, "query", {}, "s1", 7)
    msg = protocol.read_frame(b, secret, timeout=EVENT_BOUND)
    assert (msg.session, msg.seq, msg.body) == ("s1", 7, {})
    for session, seq, what in (("", 1, "session id"), ("x" * 65, 1, "session id"), ("s", 0, "sequence"),
                               ("s", True, "sequence"), ("s", 1 << 63, "sequence")):
        a.sendall(protocol.encode(secret, "query", {}, session, seq))
        with pytest.raises(protocol.ProtocolError, match=what):
            protocol.read_frame(b, secret, timeout=EVENT_BOUND)
    a.close()
    b.close()


def test_spec_is_answered_the_moment_the_last_node_registers(server):
    c0 = ReservationClient(server.address, server.secret)
    c1 = ReservationClient(server.address, server.secret)
    c0.register(node(0))
    polling = entered(server, "_on_await_spec")
    got: dict = {}
    t = threading.Thread(target=lambda: got.setdefault("nodes", c0.await_spec(0, timeout=LONG_POLL)))
    t.start()
    assert polling.wait(EVENT_BOUND)
    c1.register(node(1))
    t.join(EVENT_BOUND)  # answered by the registration, long before the long poll's own timeout
    assert not t.is_alive()
    assert [n["executor_id"] for n in got["nodes"]] == [0, 1]
    assert server.await_reservations(1)[1]["port"] == 5001


def test_reservation_timeout_names_missing_executors(server):
    ReservationClient(server.address, server.secret).register(node(1))
    with pytest.raises(ReservationTimeout) as err:
        server.await_reservations(0.5)
    assert err.value.missing == [0]
    assert "executor ids [0] never registered" in str(err.value)


def test_duplicate_and_invalid_registrations_are_refused(server):
    client = ReservationClient(server.address, server.secret)
    client.register(node(0))
    client.register({**node(0), "port": 6000})  # a retried start task before the cluster started: replaces
    client.register(node(1))
    assert [n["port"] for n in server.await_reservations(1)] == [6000, 5001]
    with pytest.raises(ReservationError, match="already registered as worker:0 and the cluster started"):
        client.register(node(0))
    with pytest.raises(ReservationError, match="executor_id must be an int"):
        client.register(node(7))
    with pytest.raises(ReservationError, match="port"):
        client.register({**node(1), "port": "80"})
    with pytest.raises(ReservationError, match="unknown message type"):
        client.request("reboot")


def test_heartbeats_carry_feed_counts_checked_and_bounded(server):
    client = ReservationClient(server.address, server.secret)
    client.register(node(0))
    client.heartbeat_reply(0, feed={"input": {"rows_read": 40, "queued_rows": 3, "epochs_read": 2}})
    assert server.nodes()[0].feed == {"input": {"rows_read": 40, "queued_rows": 3, "epochs_read": 2}}
    with pytest.raises(ReservationError, match="must map at most 8 names to counts >= 0"):
        client.heartbeat_reply(0, feed={"input": {"rows_read": -1}})
    with pytest.raises(ReservationError, match="at most 16 feeds"):
        client.heartbeat_reply(0, feed={f"q{i}": {} for i in range(17)})
    client.heartbeat_reply(0)  # no feed: the last counts stay
    assert server.nodes()[0].feed["input"]["rows_read"] == 40


def test_a_supervisor_vouches_for_its_process_apart_from_the_process_s_own_heartbeats(server):
    client = ReservationClient(server.address, server.secret)
    client.register(node(0))
    seen = server.nodes()[0].last_seen
    assert client.vouch(0, 12.5) is False  # not stopping
    record = server.nodes()[0]
    assert record.process_cpu == 12.5 and record.alive_at is not None
    assert record.last_seen == seen  # the process's own silence still shows
    for bad in ({"cpu": -1}, {"cpu": "1"}, {"cpu": True}, [1], {"pid": 3}):
        with pytest.raises(ReservationError, match="'process' must be"):
            client.request(protocol.HEARTBEAT, {"executor_id": 0, "process": bad})
    server.request_stop()
    assert client.vouch(0, 13.0) is True


def test_failure_report_and_stop_long_poll(server):
    client = ReservationClient(server.address, server.secret)
    client.register(node(0))
    client.report(0, FAILED, error="Traceback: boom", log_tail=["line"])
    record = server.nodes()[0]
    assert record.state == FAILED and "boom" in record.error and record.log_tail == ["line"]
    polling = entered(server, "_on_await_stop")
    stopped: dict = {}
    t = threading.Thread(target=lambda: stopped.setdefault("v", client.await_stop(0, timeout=LONG_POLL)))
    t.start()
    assert polling.wait(EVENT_BOUND)
    server.request_stop()
    t.join(EVENT_BOUND)  # released by the stop, long before the long poll's own timeout
    assert not t.is_alive() and stopped["v"] is True


def test_unsigned_client_cannot_register_or_stop(server):
    intruder = ReservationClient(server.address, protocol.new_secret(), timeout=EVENT_BOUND)
    with pytest.raises(ReservationError):
        intruder.register(node(0))
    with pytest.raises(ReservationError):
        intruder.stop()
    assert server.nodes() == [] and server.rejected >= 2
    assert ReservationClient(server.address, server.secret).query()["stop"] is False


def test_pickle_payload_is_never_unpickled(server, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(Exploit())
    header = struct.pack(">4sI", protocol.MAGIC, len(payload))
    # Signed with the real secret: even an authenticated peer cannot make the server unpickle.
    frame = header + hmac.new(server.secret, header + payload, hashlib.sha256).digest() + payload
    with socket.create_connection(server.address, timeout=EVENT_BOUND) as s:
        s.sendall(frame)
        s.settimeout(EVENT_BOUND)
        assert s.recv(1) == b""  # the server drops the connection once it has judged the frame
    assert not marker.exists()
    assert server.rejected == 1 and server.rejected_by_reason == {protocol.BAD_PAYLOAD: 1}
    assert ReservationClient(server.address, server.secret).query()["registered"] == 0


def test_stalled_half_frame_does_not_block_others():
    stall = 2 * EVENT_BOUND  # the staller holds its connection longer than the client may take
    srv = ReservationServer(expected=2, secret=protocol.new_secret(), read_timeout=stall,
                            first_frame_timeout=stall)
    srv.start()
    try:
        staller = socket.create_connection(srv.address)
        staller.sendall(protocol.MAGIC + b"\x00")  # half a header, then silence
        begin = time.monotonic()
        client = ReservationClient(srv.address, srv.secret, timeout=EVENT_BOUND)
        client.register(node(0))
        assert client.query()["registered"] == 1
        assert time.monotonic() - begin < EVENT_BOUND < stall
        assert srv.rejected == 0  # the staller is still being waited for
        staller.close()
    finally:
        srv.close()


def _send_and_wait_for_close(address: tuple[str, int], data: bytes) -> None:
    """Send ``data`` on a fresh connection, end it, and wait until the server has judged it and hung up."""
    with socket.create_connection(address, timeout=EVENT_BOUND) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)  # a truncated frame is judged at once, not after read_timeout
            while conn.recv(4096):
                pass
        except OSError:  # ECONNRESET, EPIPE, ENOTCONN: the server hung up with bytes of ours unread
            pass


def test_fuzz_ten_thousand_bad_frames_each_rejected_with_a_reason_then_valid_client(server, caplog):
    caplog.set_level(logging.WARNING, logger="tfos.reservation.server")
    rng = random.Random(1234)
    secret = server.secret
    session = "fuzz-session"
    ReservationClient(server.address, secret).query()  # warm up
    with socket.create_connection(server.address, timeout=EVENT_BOUND) as conn:
        protocol.send_frame(conn, secret, "query", {}, session, 1)
        assert protocol.read_frame(conn, secret, EVENT_BOUND).seq == 1
    good = protocol.encode(secret, "query", {}, session, 2)
    kinds = {  # kind of bad frame -> the reason the server must give
        "random": protocol.BAD_MAGIC, "truncated": protocol.TRUNCATED, "oversized": protocol.OVERSIZED,
        "wrong_key": protocol.BAD_SIGNATURE, "bad_json": protocol.BAD_PAYLOAD,
        "bad_magic": protocol.BAD_MAGIC,
        "replay": protocol.REPLAY, "no_sequence": protocol.NO_SEQUENCE, "stop_key_query": protocol.WRONG_KEY,
        "old_version": protocol.BAD_VERSION,
    }
    expected: dict[str, int] = {}
    for i in range(10_000):
        kind = list(kinds)[i % len(kinds)]
        if kind == "random":
            data = rng.randbytes(rng.randint(8, 200))
        elif kind == "truncated":
            data = good[: rng.randint(1, len(good) - 1)]
        elif kind == "oversized":
            data = struct.pack(">4sI", protocol.MAGIC, protocol.MAX_PAYLOAD_BYTES + rng.randint(1, 1 << 30))
        elif kind == "wrong_key":
            data = protocol.encode(rng.randbytes(32), "register", node(0), session, 3 + i)
        elif kind == "bad_json":
            payload = rng.randbytes(rng.randint(1, 64))
            header = struct.pack(">4sI", protocol.MAGIC, len(payload))
            data = header + hmac.new(secret, header + payload, hashlib.sha256).digest() + payload
        elif kind == "bad_magic":
            data = b"XXXX" + good[4:]
        elif kind == "replay":
            data = protocol.encode(secret, "heartbeat", {"executor_id": 0}, session, 1 + i % 2)
        elif kind == "no_sequence":
            data = protocol.encode(secret, "heartbeat", {"executor_id": 0})
        elif kind == "stop_key_query":
            data = protocol.encode(stop_key(secret), "query", {}, session, 3 + i)
        else:
            payload = b'{"v":1,"type":"heartbeat","body":{"executor_id":0}}'
            header = struct.pack(">4sI", protocol.MAGIC, len(payload))
            data = header + hmac.new(secret, header + payload, hashlib.sha256).digest() + payload
        expected[kinds[kind]] = expected.get(kinds[kind], 0) + 1
        _send_and_wait_for_close(server.address, data)
    # Every frame was parsed and refused, for the reason its kind calls for, and each refusal logged why.
    assert server.rejected_by_reason == expected, server.connection_stats()
    assert server.rejected == 10_000
    logged = [r for r in caplog.records
              if r.name == "tfos.reservation.server" and "rejected frame" in r.getMessage()]
    assert len(logged) == 10_000
    assert {r.getMessage().split("(reason ")[1].split(")")[0] for r in logged} == set(kinds.values())
    assert server.connection_stats()["refused"] == 0
    client = ReservationClient(server.address, server.secret, timeout=EVENT_BOUND)
    client.register(node(0))
    client.register(node(1))
    assert [n["executor_id"] for n in client.await_spec(0, timeout=EVENT_BOUND)] == [0, 1]
    assert server.rejected == 10_000
