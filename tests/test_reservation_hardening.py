"""The reservation server's edge: bounded connections that cannot starve nodes, and refused replays."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tfos.reservation import protocol
from tfos.reservation.client import ReservationClient, ReservationError
from tfos.reservation.server import ReservationServer, stop_key

EVENT_BOUND = 60.0  # far above how long an event takes on a loaded 2-core machine
SERVER_LOGGER = "tfos.reservation.server"


def node(eid: int) -> dict:
    return {"executor_id": eid, "host": "127.0.0.1", "port": 5000 + eid, "job_name": "worker",
            "task_index": eid}


def wait_until(condition: Callable[[], object], what: str, timeout: float = EVENT_BOUND) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting until {what}")
        time.sleep(0.01)


def closed_by_server(sock: socket.socket, timeout: float = EVENT_BOUND) -> bool:
    """True once the server hung up on ``sock`` (EOF or reset); False if still open after ``timeout``."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def make_server() -> Iterator[Callable[..., ReservationServer]]:
    servers: list[ReservationServer] = []

    def make(**kwargs) -> ReservationServer:
        srv = ReservationServer(**{"expected": 1, "secret": protocol.new_secret(), **kwargs})
        srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.close()


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def test_limits_are_checked():
    secret = protocol.new_secret()
    with pytest.raises(ValueError, match="first_frame_timeout"):
        ReservationServer(1, secret, first_frame_timeout=0)
    with pytest.raises(ValueError, match="max_connections"):
        ReservationServer(1, secret, max_connections=0)
    with pytest.raises(ValueError, match="max_unauthenticated"):
        ReservationServer(1, secret, max_connections=4, max_unauthenticated=5)
    assert ReservationServer(1, secret).max_connections == 256
    assert ReservationServer(100, secret).max_connections == 800  # room for each node's connections


def test_a_silent_connection_is_closed_after_first_frame_timeout_but_an_idle_node_not(make_server, sockets):
    srv = make_server(first_frame_timeout=0.5, idle_timeout=3600.0)
    client = ReservationClient(srv.address, srv.secret, timeout=EVENT_BOUND)
    client.register(node(0))  # authenticated: idle_timeout applies from now on
    silent = socket.create_connection(srv.address)
    sockets.append(silent)
    begin = time.monotonic()
    assert closed_by_server(silent)  # before the fix: only after idle_timeout, an hour
    assert time.monotonic() - begin < EVENT_BOUND
    assert srv.connection_stats()["first_frame_timeouts"] == 1
    # The node's connection, idle at least as long, is still open and still answers.
    assert srv.connection_stats()["authenticated"] == 1
    peer = client._sock.getsockname()
    assert client.heartbeat(0) is False
    assert client._sock.getsockname() == peer
    assert srv.connection_stats()["first_frame_timeouts"] == 1


def test_a_half_frame_counts_against_the_first_frame_timeout(make_server, sockets):
    srv = make_server(first_frame_timeout=0.5, read_timeout=3600.0)
    staller = socket.create_connection(srv.address)
    sockets.append(staller)
    staller.sendall(protocol.MAGIC)  # half a header, then silence
    assert closed_by_server(staller)
    assert srv.rejected_by_reason == {protocol.STALLED: 1}


def test_a_flood_of_silent_connections_does_not_starve_nodes(make_server, sockets, caplog):
    caplog.set_level(logging.WARNING, logger=SERVER_LOGGER)
    cap, idle_cap = 16, 4
    srv = make_server(expected=2, max_connections=cap, max_unauthenticated=idle_cap,
                      first_frame_timeout=3600.0)
    # A node that is already up: a persistent heartbeat connection and a long poll for the stop.
    node0 = ReservationClient(srv.address, srv.secret, timeout=EVENT_BOUND)
    node0.register(node(0))
    poller = ReservationClient(srv.address, srv.secret, timeout=EVENT_BOUND)
    stopped: dict = {}
    t = threading.Thread(target=lambda: stopped.setdefault("v", poller.await_stop(0, timeout=3600.0)))
    t.start()
    wait_until(lambda: srv.connection_stats()["authenticated"] == 2, "the long poll is in")
    flood = 3 * cap  # more silent connections than the server may hold
    for _ in range(flood):
        sockets.append(socket.create_connection(srv.address))
    wait_until(lambda: srv.connection_stats()["evicted"] == flood - idle_cap, "the flood was admitted")
    stats = srv.connection_stats()
    assert stats["open"] <= cap and stats["unauthenticated"] == idle_cap and stats["refused"] == 0
    assert all(closed_by_server(s) for s in sockets[: flood - idle_cap])  # the oldest were evicted
    # A new node still gets in at once, and the old one's connections were kept.
    begin = time.monotonic()
    node1 = ReservationClient(srv.address, srv.secret, timeout=EVENT_BOUND)
    node1.register(node(1))
    assert node1.heartbeat(1) is False and node0.heartbeat(0) is False
    assert time.monotonic() - begin < EVENT_BOUND  # the flood's first_frame_timeout is an hour
    assert [n.executor_id for n in srv.nodes()] == [0, 1]
    srv.request_stop()
    t.join(EVENT_BOUND)
    assert not t.is_alive() and stopped["v"] is True
    evictions = [r.getMessage() for r in caplog.records if "unauthenticated for" in r.getMessage()]
    assert len(evictions) == flood - idle_cap + 1 and "max_unauthenticated" in evictions[0]


def test_connections_beyond_the_cap_are_refused_at_once_and_logged(make_server, sockets, caplog):
    caplog.set_level(logging.WARNING, logger=SERVER_LOGGER)
    srv = make_server(max_connections=3, max_unauthenticated=1)
    clients = [ReservationClient(srv.address, srv.secret, timeout=EVENT_BOUND) for _ in range(3)]
    for c in clients:
        c.query()  # three authenticated persistent connections: the cap
    extra = socket.create_connection(srv.address)
    sockets.append(extra)
    assert closed_by_server(extra)
    assert srv.connection_stats()["refused"] == 1
    host, port = extra.getsockname()[:2]
    refusals = [r for r in caplog.records
                if r.levelno == logging.WARNING and "refused a connection" in r.getMessage()]
    assert len(refusals) == 1
    assert f"{host}:{port}" in refusals[0].getMessage() and "all 3 connections" in refusals[0].getMessage()
    with pytest.raises(ReservationError):  # a fourth client too, after its one retry
        ReservationClient(srv.address, srv.secret, timeout=EVENT_BOUND).query()
    clients[0].close()
    wait_until(lambda: srv.connection_stats()["open"] == 2, "the closed connection was released")
    assert ReservationClient(srv.address, srv.secret, timeout=EVENT_BOUND).query()["expected"] == 1
    for c in clients:
        c.close()


def capture_frames(monkeypatch) -> list[tuple[str, bytes]]:
    """Record every frame sent through ``protocol.send_frame`` as ``(type, bytes on the wire)``."""
    frames: list[tuple[str, bytes]] = []

    def recording(sock, secret, msg_type, body=None, *session_and_seq):
        frame = protocol.encode(secret, msg_type, body, *session_and_seq)
        frames.append((msg_type, frame))
        sock.sendall(frame)

    monkeypatch.setattr(protocol, "send_frame", recording)
    return frames


def test_a_replayed_heartbeat_does_not_hide_a_dead_node(make_server, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=SERVER_LOGGER)
    srv = make_server()
    client = ReservationClient(srv.address, srv.secret, timeout=EVENT_BOUND)
    client.register(node(0))
    frames = capture_frames(monkeypatch)
    assert client.heartbeat(0) is False
    monkeypatch.undo()
    client.close()  # the node goes silent
    heartbeat = next(frame for msg_type, frame in frames if msg_type == protocol.HEARTBEAT)
    last_seen = srv.nodes()[0].last_seen
    with socket.create_connection(srv.address, timeout=EVENT_BOUND) as s:
        s.sendall(heartbeat)
        assert closed_by_server(s)  # no reply: the frame was refused
    assert srv.nodes()[0].last_seen == last_seen
    assert srv.rejected == 1 and srv.rejected_by_reason == {protocol.REPLAY: 1}
    logged = [r.getMessage() for r in caplog.records]
    assert [m for m in logged if "(reason replay)" in m and "'heartbeat'" in m]


def test_replays_are_refused_without_disturbing_the_live_client(make_server, monkeypatch):
    srv = make_server()
    client = ReservationClient(srv.address, srv.secret, timeout=EVENT_BOUND)
    frames = capture_frames(monkeypatch)
    client.register(node(0))
    client.heartbeat(0)
    monkeypatch.undo()
    sent = [frame for msg_type, frame in frames if msg_type in (protocol.REGISTER, protocol.HEARTBEAT)]
    for frame in sent:  # replayed on the live session, while the client is connected
        with socket.create_connection(srv.address, timeout=EVENT_BOUND) as s:
            s.sendall(frame)
            assert closed_by_server(s)
    assert srv.rejected_by_reason == {protocol.REPLAY: 2} and len(srv.nodes()) == 1
    assert client.heartbeat(0) is False  # its next frames are still newer than anything seen
    # A frame without a session, and a stop-key frame that borrows the node's session with a huge
    # number, are refused; the borrowed number does not lock the node's session out.
    for frame in (protocol.encode(srv.secret, protocol.HEARTBEAT, {"executor_id": 0}),
                  protocol.encode(stop_key(srv.secret), protocol.QUERY, {}, client.session,
                                  protocol.MAX_SEQ)):
        with socket.create_connection(srv.address, timeout=EVENT_BOUND) as s:
            s.sendall(frame)
            assert closed_by_server(s)
    assert srv.rejected_by_reason == {protocol.REPLAY: 2, protocol.NO_SEQUENCE: 1, protocol.WRONG_KEY: 1}
    assert client.heartbeat(0) is False
    client.close()


def test_the_client_refuses_a_reply_to_another_request():
    secret = protocol.new_secret()
    listener = socket.create_server(("127.0.0.1", 0))

    def stale_server() -> None:
        conn, _ = listener.accept()
        with conn:
            request = protocol.read_frame(conn, secret, EVENT_BOUND)
            protocol.send_frame(conn, secret, protocol.OK, {"stop": True}, request.session, request.seq + 1)
            conn.recv(1)

    t = threading.Thread(target=stale_server, daemon=True)
    t.start()
    client = ReservationClient(listener.getsockname(), secret, timeout=EVENT_BOUND)
    with pytest.raises(ReservationError, match="reply answers request #2 "):
        client.heartbeat(0)
    client.close()
    t.join(EVENT_BOUND)
    listener.close()


def test_a_registered_node_whose_process_dies_during_its_long_poll_is_marked_failed(make_server):
    """A real process registers and waits for the others; SIGKILLed, the server marks its node failed
    within a second or so (the long poll sees its connection close), not at the reservation timeout."""
    import os
    import signal
    import subprocess
    import sys

    srv = make_server(expected=2)
    host, port = srv.address
    code = (
        "import sys\n"
        "from tfos.reservation.client import ReservationClient\n"
        f"c = ReservationClient(({host!r}, {port}), bytes.fromhex({srv.secret.hex()!r}))\n"
        f"c.register({node(0)!r})\n"
        "print('registered', flush=True)\n"
        "c.await_spec(0, 300)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "registered"
        wait_until(lambda: [n.state for n in srv.nodes()] == ["registered"], "the node registered")
        time.sleep(0.5)  # its long poll is in flight
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: [n.state for n in srv.nodes()] == ["failed"], "the dead node was marked failed")
        assert time.monotonic() - killed < 10
        (failed,) = srv.nodes()
        assert "the start task of worker:0 (executor 0 on 127.0.0.1, pid" in failed.error
        assert "went away while it waited for the other nodes to register" in failed.error
    finally:
        proc.kill()
        proc.wait()
    # the dead node's generation is over for it: a retried start task cannot slip back in
    client = ReservationClient(srv.address, srv.secret)
    with pytest.raises(ReservationError, match="already registered"):
        client.register(node(0))  # the dead node cannot come back into this generation
    client.close()
