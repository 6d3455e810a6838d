"""The reservation control plane over real sockets: framing, authentication, robustness."""

from __future__ import annotations

import hashlib
import hmac
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
from tfos.reservation.server import FAILED, ReservationServer, ReservationTimeout


@pytest.fixture
def server():
    srv = ReservationServer(expected=2, secret=protocol.new_secret(), host="127.0.0.1", read_timeout=1.0)
    srv.start()
    yield srv
    srv.close()


def node(eid: int, job: str = "worker") -> dict:
    return {"executor_id": eid, "host": "127.0.0.1", "port": 5000 + eid, "job_name": job, "task_index": eid}


def test_frame_round_trip_and_signature():
    secret = protocol.new_secret()
    a, b = socket.socketpair()
    protocol.send_frame(a, secret, "query", {"x": [1, "y"]})
    msg = protocol.read_frame(b, secret, timeout=1)
    assert msg.type == "query" and msg.body == {"x": [1, "y"]}
    protocol.send_frame(a, protocol.new_secret(), "query", {})
    with pytest.raises(protocol.ProtocolError, match="bad signature"):
        protocol.read_frame(b, secret, timeout=1)


def test_oversized_frame_rejected_before_reading_payload():
    secret = protocol.new_secret()
    a, b = socket.socketpair()
    a.sendall(struct.pack(">4sI", protocol.MAGIC, protocol.MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(protocol.ProtocolError, match="exceeds"):
        protocol.read_frame(b, secret, timeout=1)


def test_spec_is_answered_the_moment_the_last_node_registers(server):
    c0 = ReservationClient(server.address, server.secret)
    c1 = ReservationClient(server.address, server.secret)
    c0.register(node(0))
    got: dict = {}

    def wait() -> None:
        got["nodes"] = c0.await_spec(0, timeout=30)
        got["at"] = time.monotonic()

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.3)
    registered_at = time.monotonic()
    c1.register(node(1))
    t.join(5)
    assert [n["executor_id"] for n in got["nodes"]] == [0, 1]
    assert got["at"] - registered_at < 0.2  # event-driven, not a polling interval
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
    with pytest.raises(ReservationError, match="already registered"):
        client.register(node(0))
    with pytest.raises(ReservationError, match="executor_id must be an int"):
        client.register(node(7))
    with pytest.raises(ReservationError, match="port"):
        client.register({**node(1), "port": "80"})
    with pytest.raises(ReservationError, match="unknown message type"):
        client.request("reboot")


def test_failure_report_and_stop_long_poll(server):
    client = ReservationClient(server.address, server.secret)
    client.register(node(0))
    client.report(0, FAILED, error="Traceback: boom", log_tail=["line"])
    record = server.nodes()[0]
    assert record.state == FAILED and "boom" in record.error and record.log_tail == ["line"]
    stopped: dict = {}
    t = threading.Thread(target=lambda: stopped.setdefault("v", client.await_stop(0, timeout=30)))
    t.start()
    time.sleep(0.2)
    begin = time.monotonic()
    server.request_stop()
    t.join(5)
    assert stopped["v"] is True and time.monotonic() - begin < 0.5


def test_unsigned_client_cannot_register_or_stop(server):
    intruder = ReservationClient(server.address, protocol.new_secret(), timeout=2)
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
    with socket.create_connection(server.address, timeout=2) as s:
        s.sendall(frame)
        s.settimeout(2)
        assert s.recv(1) == b""  # the server drops the connection
    time.sleep(0.2)
    assert not marker.exists()
    assert server.rejected == 1
    assert ReservationClient(server.address, server.secret).query()["registered"] == 0


def test_stalled_half_frame_does_not_block_others(server):
    staller = socket.create_connection(server.address)
    staller.sendall(protocol.MAGIC + b"\x00")  # half a header, then silence
    begin = time.monotonic()
    client = ReservationClient(server.address, server.secret, timeout=5)
    client.register(node(0))
    assert client.query()["registered"] == 1
    assert time.monotonic() - begin < 0.5
    staller.close()


def test_fuzz_ten_thousand_bad_frames_then_valid_client(server):
    rng = random.Random(1234)
    secret = server.secret
    good = protocol.encode(secret, "query", {})
    kinds = ["random", "truncated", "oversized", "wrong_key", "bad_json", "bad_magic"]
    sent = 0
    conns: list[socket.socket] = []
    while sent < 10_000:
        kind = kinds[sent % len(kinds)]
        if kind == "random":
            data = rng.randbytes(rng.randint(1, 200))
        elif kind == "truncated":
            data = good[: rng.randint(1, len(good) - 1)]
        elif kind == "oversized":
            data = struct.pack(">4sI", protocol.MAGIC, protocol.MAX_PAYLOAD_BYTES + rng.randint(1, 1 << 30))
        elif kind == "wrong_key":
            data = protocol.encode(rng.randbytes(32), "register", node(0))
        elif kind == "bad_json":
            payload = rng.randbytes(rng.randint(1, 64))
            header = struct.pack(">4sI", protocol.MAGIC, len(payload))
            data = header + hmac.new(secret, header + payload, hashlib.sha256).digest() + payload
        else:
            data = b"XXXX" + good[4:]
        # Several frames per connection, as a misbehaving peer would send them.
        if not conns or rng.random() < 0.2:
            for c in conns:
                c.close()
            conns = [socket.create_connection(server.address)]
        try:
            conns[0].sendall(data)
        except OSError:
            conns[0].close()
            conns = []
        sent += 1
    for c in conns:
        c.close()
    client = ReservationClient(server.address, server.secret, timeout=5)
    client.register(node(0))
    client.register(node(1))
    assert [n["executor_id"] for n in client.await_spec(0, timeout=5)] == [0, 1]
    assert server.rejected > 100
