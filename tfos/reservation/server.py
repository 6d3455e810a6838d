"""Driver side of the control plane: collects reservations, answers queries, tracks liveness.

One thread per connection, each read bounded by a timeout, so a client that stalls in
the middle of a frame delays nobody else; connections that never authenticate are bounded
in number and in life (see :class:`ReservationServer`), and replayed frames are refused.
Waiting for the cluster spec or for the stop signal is a long poll on a condition
variable: answered the moment the event happens.

Stop requests from outside the cluster (TensorFlowOnSpark's ``reservation.Client(addr)
.request_stop()``, e.g. to end a streaming job) come signed with the cluster's *stop key*,
a one-way derivative of its secret (:func:`stop_key`). A frame signed with the stop key is
accepted only as a ``STOP_REQUEST``, which records the request (``stop_requested_by_client``)
for ``cluster.shutdown(ssc)`` and changes nothing else; every other frame needs the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import select
import socket
import socketserver
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tfos.reservation import protocol
from tfos.reservation.protocol import Message, ProtocolError

logger = logging.getLogger(__name__)

REGISTERED = "registered"
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
STOPPED = "stopped"
TERMINAL_STATES = frozenset({FINISHED, FAILED, STOPPED})
_REQUIRED_REGISTRATION_FIELDS = {"executor_id": int, "host": str, "port": int, "job_name": str, "task_index": int}
MAX_LONG_POLL_SECS = 3600.0
PEER_CHECK_SECS = 0.2  # how often a long poll checks that its requester is still connected
STOP_REQUEST = "stop_request"  # the one message the stop key may sign
LOG_STREAMS = frozenset({"out", "err", "log"})
MAX_LOG_LINES_PER_MESSAGE = 5000
MAX_LOG_LINE_CHARS = 8192
MAX_PROGRESS_METRICS = 64
MAX_FEEDS = 16  # named inputs a heartbeat may report counts for
PROGRESS_HISTORY_POINTS = 2000  # per node; thinned evenly when full (see ProgressHistory)
MAX_STACKS_CHARS = 256 * 1024
MAX_TRACKED_SESSIONS = 1 << 16  # sessions whose last sequence number is remembered (least recent go first)
DEFAULT_MAX_CONNECTIONS = 256
CONNECTIONS_PER_NODE = 8  # a node holds ~6 persistent connections (heartbeat, long poll, report, relay, ...)
_STOP_KEY_LABEL = b"tfos reservation stop request v1"


def _process_alive(value: Any) -> float | None:
    """A supervisor heartbeat's ``process`` (``{"cpu": seconds}``: the TF process is alive), checked; its CPU
    seconds, or None if absent."""
    if value is None:
        return None
    cpu = value.get("cpu") if isinstance(value, dict) else None
    if not isinstance(cpu, int | float) or isinstance(cpu, bool) or not 0 <= cpu < 1e12:
        raise ProtocolError("heartbeat 'process' must be {\"cpu\": seconds >= 0}")
    return float(cpu)


def _feed_counts(value: Any) -> dict[str, dict[str, int]] | None:
    """A heartbeat's ``feed`` (per qname: a few non-negative counts), checked and bounded; None if absent."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_FEEDS:
        raise ProtocolError(f"heartbeat 'feed' must be an object of at most {MAX_FEEDS} feeds")
    out: dict[str, dict[str, int]] = {}
    for qname, counts in value.items():
        if not isinstance(counts, dict) or len(counts) > 8 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()):
            raise ProtocolError(f"heartbeat 'feed' of {str(qname)[:100]!r} must map at most 8 names to counts >= 0")
        out[str(qname)[:100]] = {str(k)[:40]: v for k, v in counts.items()}
    return out


def stop_key(secret: bytes) -> bytes:
    """The key that signs external stop requests: derived from ``secret``, which it does not reveal."""
    return hmac.new(secret, _STOP_KEY_LABEL, hashlib.sha256).digest()


def read_authenticated(sock: socket.socket, secret: bytes, stop: bytes, timeout: float | None) -> tuple[Message, bytes]:
    """One frame signed with ``secret`` (any type) or with ``stop`` (``STOP_REQUEST`` only); returns it and its key."""
    frame = protocol.read_raw(sock, timeout)
    if frame.signed_with(secret):
        return protocol.decode_payload(frame.payload), secret
    if not frame.signed_with(stop):
        raise protocol.bad_signature()
    msg = protocol.decode_payload(frame.payload)
    if msg.type != STOP_REQUEST:
        raise ProtocolError(f"{msg.type!r} signed with the stop key: that key may only request a stop",
                            protocol.WRONG_KEY)
    return msg, stop


class ProgressHistory:
    """One node's progress reports as points (``step``, ``time``, numeric metrics), at most ``limit``.

    When full, every other point goes and from then on only every other report is kept (the
    stride doubles), so the points stay evenly spread over the whole run; the latest report is
    always the last point. Not thread-safe: the server guards it with its lock.
    """

    def __init__(self, limit: int = PROGRESS_HISTORY_POINTS):
        if limit < 2:
            raise ValueError(f"a progress history needs room for at least 2 points, got {limit}")
        self.limit = limit
        self._points: list[dict[str, float]] = []
        self._stride = 1  # keep one report in this many
        self._reports = 0
        self._latest: dict[str, float] | None = None

    def add(self, point: dict[str, float]) -> None:
        self._latest = point
        self._reports += 1
        if (self._reports - 1) % self._stride:
            return
        self._points.append(point)
        if len(self._points) >= self.limit:  # the latest is kept apart: at most `limit` points in all
            self._points = self._points[::2]
            self._stride *= 2

    def points(self) -> list[dict[str, float]]:
        """The kept points, oldest first, ending with the latest report (copies)."""
        out = list(self._points)
        if self._latest is not None and (not out or out[-1] is not self._latest):
            out.append(self._latest)
        return [dict(p) for p in out]

    def __len__(self) -> int:
        latest_apart = self._latest is not None and (not self._points or self._points[-1] is not self._latest)
        return len(self._points) + latest_apart


def _plottable(value: Any) -> bool:
    """A finite number that fits a float (JSON ints may be of any size)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _history_point(progress: dict[str, Any], elapsed: float) -> dict[str, float]:
    """The plottable part of a checked PROGRESS body: step, time and the finite numeric metrics."""
    point: dict[str, float] = {"time": round(elapsed, 3)}
    if _plottable(progress.get("step")):
        point["step"] = progress["step"]
    for name, value in {"loss": progress.get("loss"), **progress["metrics"]}.items():
        if name not in ("step", "time") and _plottable(value):
            point[name] = value
    return point


class ReservationTimeout(TimeoutError):
    """Not every expected node registered in time."""

    def __init__(self, missing: list[int], expected: int, timeout: float):
        self.missing = missing
        super().__init__(
            f"timed out after {timeout:.0f}s waiting for {expected} TF nodes to register: executor ids "
            f"{missing} never registered. Likely causes: fewer executors than num_executors are running "
            f"(check the Spark UI's Executors tab and cluster resources/queue capacity), another job "
            f"holds the executors' task slots, spark.task.cpus differs from spark.executor.cores, or an "
            f"executor cannot reach the driver at the reservation address (firewall, spark.driver.host)."
        )


@dataclass
class NodeRecord:
    """What the driver knows about one TF node."""

    executor_id: int
    host: str
    port: int
    job_name: str
    task_index: int
    info: dict[str, Any]
    state: str = REGISTERED
    last_seen: float = field(default_factory=time.monotonic)
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)  # the latest PROGRESS body
    progress_at: float | None = None
    stacks: dict[int, str] = field(default_factory=dict)  # stack request id -> the node's answer
    history: ProgressHistory = field(default_factory=ProgressHistory, repr=False)  # bounded PROGRESS points
    feed: dict[str, dict[str, int]] = field(default_factory=dict)  # per qname: rows read/queued (heartbeats)
    # the node's supervisor on its executor vouching that the TF process is alive, whatever its Python
    # threads do (a main in a long call that holds the GIL sends no heartbeats): when, and its CPU seconds
    alive_at: float | None = None
    process_cpu: float | None = None

    @property
    def name(self) -> str:
        return f"{self.job_name}:{self.task_index}"

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.info,
            "executor_id": self.executor_id,
            "host": self.host,
            "port": self.port,
            "job_name": self.job_name,
            "task_index": self.task_index,
        }


class LogSink(Protocol):
    """Where relayed node output goes on the driver (``tfos.cluster.relay.DriverRelay``)."""

    level: str

    def deliver(self, node: str, lines: list[tuple[str, int, str]], dropped: int) -> None: ...


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the peer has closed ``sock`` (EOF or reset is waiting), without consuming anything."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True


@dataclass(eq=False)
class _Connection:
    """One accepted connection; ``authenticated`` once a frame signed with the secret was accepted on it."""

    sock: socket.socket
    peer: str
    accepted: float = field(default_factory=time.monotonic)
    authenticated: bool = False
    evicted: bool = False


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        owner = self.server.owner
        sock: socket.socket = self.request
        conn = owner._connection(sock)
        if conn is None:
            return
        peer = conn.peer
        while not owner.closed:
            if conn.authenticated:
                wait, read_timeout = owner.idle_timeout, owner.read_timeout
            else:  # the first frame, and everything on a connection never signed with the secret
                wait = conn.accepted + owner.first_frame_timeout - time.monotonic()
                read_timeout = max(0.001, min(owner.read_timeout, wait))
            try:
                if wait <= 0:
                    raise TimeoutError
                sock.settimeout(wait)
                if not sock.recv(1, socket.MSG_PEEK):  # idle between frames is fine; EOF ends the connection
                    return
            except TimeoutError:
                if conn.authenticated:
                    logger.debug("reservation server: closing connection from %s idle for %ss",
                                 peer, owner.idle_timeout)
                else:
                    owner._count_first_frame_timeout(peer)
                return
            except OSError:
                return
            try:
                msg, key = read_authenticated(sock, owner.secret, owner.stop_key, read_timeout)
                if not owner._accept_sequence(conn, msg, key):
                    return  # evicted while its frame arrived
            except EOFError:
                return
            except TimeoutError:
                if not conn.evicted:
                    owner.count_rejected(protocol.STALLED)
                    logger.warning("reservation server: closing connection from %s that stalled mid-frame "
                                   "for %.1fs (reason %s)", peer, read_timeout, protocol.STALLED)
                return
            except ProtocolError as exc:
                if not conn.evicted:
                    owner.count_rejected(exc.reason)
                    logger.warning("reservation server: rejected frame from %s (reason %s): %s",
                                   peer, exc.reason, exc)
                return
            except OSError:
                return
            try:
                reply_type, body = owner.dispatch(msg, peer_gone=lambda: _peer_closed(sock))
            except ProtocolError as exc:
                owner.count_rejected(exc.reason)
                logger.warning("reservation server: rejected %r from %s (reason %s): %s", msg.type, peer,
                               exc.reason, exc)
                reply_type, body = protocol.ERROR, {"message": str(exc)}
            try:
                protocol.send_frame(sock, key, reply_type, body, msg.session, msg.seq)
            except OSError:
                return

    def finish(self) -> None:
        self.server.owner._release(self.request)  # before socketserver closes the socket


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: ReservationServer):
        self.owner = owner
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.owner._admit(request, client_address):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.owner._release(request)
            raise


class ReservationServer:
    """Collects one registration per expected TF node and serves the cluster's control messages.

    Connections are bounded so that nobody without the secret can tie the server up: a
    connection must deliver its first frame within ``first_frame_timeout`` seconds; at most
    ``max_connections`` are open at once (default: 256, or 8 per expected node if more), of
    which at most ``max_unauthenticated`` have not yet sent a frame signed with the secret.
    A new connection beyond either limit evicts the oldest unauthenticated one; only when
    every open connection is authenticated is it refused (closed at once, logged, counted).
    Authenticated connections (nodes, including their long polls) are never evicted.

    Every request carries a session id and a sequence number (:mod:`protocol`); a frame whose
    number is not above the last one accepted from its session is rejected as a replay. The
    server remembers the latest ``MAX_TRACKED_SESSIONS`` sessions.
    """

    def __init__(self, expected: int, secret: bytes, host: str = "127.0.0.1", port: int = 0,
                 read_timeout: float = 30.0, idle_timeout: float = 3600.0, first_frame_timeout: float = 10.0,
                 max_connections: int | None = None, max_unauthenticated: int | None = None,
                 progress_history_points: int = PROGRESS_HISTORY_POINTS):
        if expected < 1:
            raise ValueError(f"expected must be >= 1, got {expected}")
        if len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        if progress_history_points < 2:
            raise ValueError(f"progress_history_points must be >= 2, got {progress_history_points}")
        if first_frame_timeout <= 0:
            raise ValueError(f"first_frame_timeout must be > 0 seconds, got {first_frame_timeout}")
        if max_connections is None:
            max_connections = max(DEFAULT_MAX_CONNECTIONS, CONNECTIONS_PER_NODE * expected)
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if max_unauthenticated is None:
            max_unauthenticated = max(1, min(max_connections, max(16, max_connections // 4)))
        if not 1 <= max_unauthenticated <= max_connections:
            raise ValueError(f"max_unauthenticated must be in [1, max_connections={max_connections}], "
                             f"got {max_unauthenticated}")
        self.expected = expected
        self.secret = secret
        self.stop_key = stop_key(secret)
        self.read_timeout = read_timeout  # bound on receiving one whole frame once it has begun
        self.idle_timeout = idle_timeout  # bound on silence between frames of an authenticated connection
        self.first_frame_timeout = first_frame_timeout  # bound on an unauthenticated connection's life
        self.max_connections = max_connections
        self.max_unauthenticated = max_unauthenticated
        self.progress_history_points = progress_history_points  # per node
        self._started = time.monotonic()
        self._conn_lock = threading.Lock()  # guards the connection and session tables below
        self._connections: dict[socket.socket, _Connection] = {}
        self._unauthenticated: OrderedDict[_Connection, None] = OrderedDict()  # oldest first
        self._sessions: OrderedDict[tuple[str, str], int] = OrderedDict()  # (key, session) -> last seq
        self._conn_counts = {"refused": 0, "evicted": 0, "first_frame_timeouts": 0, "sessions_forgotten": 0}
        self._rejected_by_reason: dict[str, int] = {}
        self._host, self._port = host, port
        self._cond = threading.Condition()
        self._nodes: dict[int, NodeRecord] = {}
        self._stop_requested = False
        self._client_stop_requests = 0
        self._rejected = 0
        self._version = 0
        self._abort: str | None = None
        self._stacks_request = 0
        self.log_sink: LogSink | None = None  # relayed node output; None: nodes are told the relay is off
        self._tcp: _TCPServer | None = None
        self._thread: threading.Thread | None = None
        self.closed = False

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        """Bind and start serving; returns the (host, port) clients must use."""
        self._tcp = _TCPServer((self._host, self._port), self)
        self._thread = threading.Thread(target=self._tcp.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="tfos-reservation-server", daemon=True)
        self._thread.start()
        logger.info("reservation server listening on %s:%d for %d nodes", *self.address, self.expected)
        return self.address

    @property
    def address(self) -> tuple[str, int]:
        if self._tcp is None:
            raise RuntimeError("reservation server is not started")
        host, port = self._tcp.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Stop serving and wake every waiter."""
        with self._cond:
            self.closed = True
            self._stop_requested = True
            self._cond.notify_all()
        if self._tcp is not None:
            self._tcp.shutdown()
            self._tcp.server_close()
            self._tcp = None

    # driver-side API -----------------------------------------------------------------------
    def await_reservations(self, timeout: float, on_wait: Any = None,
                           every: float = 15.0) -> list[dict[str, Any]]:
        """Block until every expected node registered; raise ``ReservationTimeout`` naming the missing.

        ``on_wait(missing_executor_ids, waited_secs)`` is called every ``every`` seconds while
        nodes are missing (outside the lock), so a long wait says what it waits for."""
        begin = time.monotonic()
        deadline = begin + timeout
        next_note = begin + every
        with self._cond:
            while len(self._nodes) < self.expected:
                if self._abort is not None:
                    raise RuntimeError(self._abort)
                now = time.monotonic()
                left = deadline - now
                missing = sorted(set(range(self.expected)) - set(self._nodes))
                if left <= 0 or self.closed:
                    raise ReservationTimeout(missing, self.expected, timeout)
                if on_wait is not None and now >= next_note:
                    next_note = now + every
                    self._cond.release()
                    try:
                        on_wait(missing, now - begin)
                    finally:
                        self._cond.acquire()
                    continue
                self._cond.wait(min(left, next_note - now) if on_wait is not None else left)
            return self._spec_locked()

    def abort(self, reason: str) -> None:
        """Wake a driver waiting in ``await_reservations`` because the start failed elsewhere."""
        with self._cond:
            self._abort = reason
            self._version += 1
            self._cond.notify_all()

    def request_stop(self) -> None:
        """Release every node waiting in ``await_stop`` (parameter servers, evaluators, stragglers)."""
        with self._cond:
            self._stop_requested = True
            self._version += 1
            self._cond.notify_all()

    @property
    def stop_requested_by_client(self) -> bool:
        """True once someone holding the stop key sent a ``STOP_REQUEST`` (TensorFlowOnSpark's ``server.done``)."""
        with self._cond:
            return self._client_stop_requests > 0

    def wait_closed(self, timeout: float) -> bool:
        """Block until the server is closed (True) or ``timeout`` passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.closed, timeout)

    def request_stacks(self) -> int:
        """Ask every node for its Python stacks (carried by the next heartbeat reply); returns the request id."""
        with self._cond:
            self._stacks_request += 1
            return self._stacks_request

    def await_stacks(self, executor_ids: set[int], request: int, timeout: float) -> dict[int, str]:
        """The answers to stack request ``request`` of ``executor_ids`` that arrive within ``timeout``."""
        def answered() -> dict[int, str]:
            return {e: n.stacks[request] for e, n in self._nodes.items() if e in executor_ids and request in n.stacks}

        with self._cond:
            self._cond.wait_for(lambda: len(answered()) >= len(executor_ids) or self.closed, timeout)
            return answered()

    def progress_history(self) -> dict[str, list[dict[str, float]]]:
        """Every node's progress so far, keyed by node name (``"worker:0"``), in executor order: a list of
        points ``{"step": ..., "time": s since the server started, "loss": ..., "accuracy": ...}``, oldest
        first, at most ``progress_history_points`` per node (thinned evenly). A copy: changing it changes
        nothing here. Nodes that never reported are left out."""
        with self._cond:
            return {n.name: n.history.points() for n in sorted(self._nodes.values(), key=lambda n: n.executor_id)
                    if len(n.history)}

    def nodes(self) -> list[NodeRecord]:
        with self._cond:
            return sorted(self._nodes.values(), key=lambda n: n.executor_id)

    def wait_for_change(self, version: int, timeout: float) -> int:
        """Block until node state changes past ``version`` (or timeout); returns the new version."""
        with self._cond:
            self._cond.wait_for(lambda: self._version != version or self.closed, timeout)
            return self._version

    @property
    def version(self) -> int:
        with self._cond:
            return self._version

    @property
    def rejected(self) -> int:
        """How many frames or requests were refused (malformed, unsigned, replayed, unknown, invalid)."""
        with self._cond:
            return self._rejected

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        """``rejected`` split by reason (``protocol.BAD_MAGIC``, ``protocol.REPLAY``, ...)."""
        with self._cond:
            return dict(self._rejected_by_reason)

    def count_rejected(self, reason: str = protocol.INVALID_REQUEST) -> None:
        """Count one refused frame or request."""
        with self._cond:
            self._rejected += 1
            self._rejected_by_reason[reason] = self._rejected_by_reason.get(reason, 0) + 1

    def connection_stats(self) -> dict[str, int]:
        """Open connections now (``open``, ``authenticated``, ``unauthenticated``) and counts since
        start: ``refused``, ``evicted``, ``first_frame_timeouts``, ``sessions_forgotten``."""
        with self._conn_lock:
            return {"open": len(self._connections), "unauthenticated": len(self._unauthenticated),
                    "authenticated": len(self._connections) - len(self._unauthenticated), **self._conn_counts}

    # connections ---------------------------------------------------------------------------
    def _admit(self, sock: socket.socket, address: Any) -> bool:
        """Register a new connection, evicting the oldest unauthenticated one if a limit is reached."""
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        victim: _Connection | None = None
        with self._conn_lock:
            full = len(self._connections) >= self.max_connections
            if (full or len(self._unauthenticated) >= self.max_unauthenticated) and self._unauthenticated:
                victim, _ = self._unauthenticated.popitem(last=False)
                del self._connections[victim.sock]
                victim.evicted = True
                self._conn_counts["evicted"] += 1
                try:  # under the lock: the victim's handler cannot have closed the socket yet
                    victim.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            elif full:
                self._conn_counts["refused"] += 1
                refused = self._conn_counts["refused"]
            if victim is not None or not full:
                conn = _Connection(sock, peer)
                self._connections[sock] = conn
                self._unauthenticated[conn] = None
        if victim is not None:
            logger.warning("reservation server: closed the connection from %s, unauthenticated for %.1fs, "
                           "to admit one from %s: the limits are %d unauthenticated (max_unauthenticated) "
                           "and %d open connections (max_connections)", victim.peer,
                           time.monotonic() - victim.accepted, peer, self.max_unauthenticated,
                           self.max_connections)
        elif full:
            logger.warning("reservation server: refused a connection from %s: all %d connections allowed "
                           "(max_connections) are open and authenticated (%d refused so far); raise "
                           "max_connections if the cluster needs more", peer, self.max_connections, refused)
            return False
        return True

    def _connection(self, sock: socket.socket) -> _Connection | None:
        with self._conn_lock:
            return self._connections.get(sock)

    def _release(self, sock: socket.socket) -> None:
        with self._conn_lock:
            conn = self._connections.pop(sock, None)
            if conn is not None:
                self._unauthenticated.pop(conn, None)

    def _count_first_frame_timeout(self, peer: str) -> None:
        with self._conn_lock:
            self._conn_counts["first_frame_timeouts"] += 1
        logger.info("reservation server: closing the connection from %s: no frame signed with the secret "
                    "within %ss (first_frame_timeout)", peer, self.first_frame_timeout)

    def _accept_sequence(self, conn: _Connection, msg: Message, key: bytes) -> bool:
        """Check ``msg`` is newer than everything accepted from its session; False: ``conn`` was evicted."""
        if msg.session is None or msg.seq is None:
            raise ProtocolError(f"{msg.type!r} carries no session id and sequence number, which "
                                f"protocol version {protocol.PROTOCOL_VERSION} requires of every request: "
                                "send it with tfos.reservation.client.ReservationClient",
                                protocol.NO_SEQUENCE)
        scope = ("secret" if key is self.secret else "stop", msg.session)
        with self._conn_lock:
            if conn.evicted:
                return False
            last = self._sessions.get(scope)
            if last is not None and msg.seq <= last:
                raise ProtocolError(f"replayed or reordered frame: {msg.type!r} #{msg.seq} of session "
                                    f"{msg.session}, which already sent #{last}", protocol.REPLAY)
            self._sessions[scope] = msg.seq
            self._sessions.move_to_end(scope)
            if len(self._sessions) > MAX_TRACKED_SESSIONS:
                self._sessions.popitem(last=False)
                self._conn_counts["sessions_forgotten"] += 1
            if key is self.secret and not conn.authenticated:
                conn.authenticated = True
                self._unauthenticated.pop(conn, None)
        return True

    # message handling ----------------------------------------------------------------------
    def dispatch(self, msg: Message, peer_gone: Callable[[], bool] | None = None) -> tuple[str, dict[str, Any]]:
        """Answer one authenticated request. ``peer_gone()`` says whether the requester has closed its
        connection meanwhile (a long poll uses it to notice a start task that died while it waited)."""
        if msg.type == protocol.AWAIT_SPEC:
            return protocol.OK, self._on_await_spec(msg.body, peer_gone)
        handler = {
            protocol.REGISTER: self._on_register,
            protocol.HEARTBEAT: self._on_heartbeat,
            protocol.REPORT: self._on_report,
            protocol.AWAIT_STOP: self._on_await_stop,
            protocol.QUERY: self._on_query,
            protocol.STOP: self._on_stop,
            protocol.LOG: self._on_log,
            protocol.PROGRESS: self._on_progress,
            protocol.STACKS: self._on_stacks,
            STOP_REQUEST: self._on_stop_request,
        }.get(msg.type)
        if handler is None:
            raise ProtocolError(f"unknown message type {msg.type!r}")
        return protocol.OK, handler(msg.body)

    def _spec_locked(self) -> list[dict[str, Any]]:
        return [n.as_dict() for n in sorted(self._nodes.values(), key=lambda n: n.executor_id)]

    def _executor_id(self, body: dict[str, Any]) -> int:
        eid = body.get("executor_id")
        if not isinstance(eid, int) or isinstance(eid, bool) or not 0 <= eid < self.expected:
            raise ProtocolError(f"executor_id must be an int in [0, {self.expected}), got {eid!r}")
        return eid

    def _known_node(self, body: dict[str, Any]) -> NodeRecord:
        eid = self._executor_id(body)
        node = self._nodes.get(eid)
        if node is None:
            raise ProtocolError(f"executor {eid} has not registered")
        return node

    def _on_register(self, body: dict[str, Any]) -> dict[str, Any]:
        for key, typ in _REQUIRED_REGISTRATION_FIELDS.items():
            if not isinstance(body.get(key), typ) or isinstance(body.get(key), bool):
                raise ProtocolError(f"register needs {key!r} of type {typ.__name__}, got {body.get(key)!r}")
        eid = self._executor_id(body)
        with self._cond:
            if eid in self._nodes:
                if len(self._nodes) == self.expected or self._nodes[eid].state != REGISTERED:
                    raise ProtocolError(f"executor {eid} already registered as {self._nodes[eid].name} and the "
                                        f"cluster started: a node cannot rejoin a running cluster (tfos.run(..., "
                                        f"max_restarts=N) restarts the whole cluster after a node failure)")
                # Spark retried the barrier start stage before every node registered: the new attempt replaces it.
                logger.info("executor %d registered again (a retried start task) as %s:%d", eid, body["job_name"],
                            body["task_index"])
            info = {k: v for k, v in body.items() if k not in _REQUIRED_REGISTRATION_FIELDS}
            self._nodes[eid] = NodeRecord(eid, body["host"], body["port"], body["job_name"],
                                          body["task_index"], info,
                                          history=ProgressHistory(self.progress_history_points))
            self._version += 1
            logger.info("registered %s:%d as executor %d (%d/%d)", body["job_name"], body["task_index"], eid,
                        len(self._nodes), self.expected)
            self._cond.notify_all()
        return {}

    def _bounded_timeout(self, body: dict[str, Any]) -> float:
        timeout = body.get("timeout", 60.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
            raise ProtocolError(f"timeout must be a non-negative number, got {timeout!r}")
        return min(float(timeout), MAX_LONG_POLL_SECS)

    def _on_await_spec(self, body: dict[str, Any], peer_gone: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Wait until every node registered. A registered node whose start task closes this long poll
        before the cluster formed has died (its Python worker crashed or was killed, its task was
        cancelled): it is marked failed at once, so the driver need not wait for Spark to say so."""
        deadline = time.monotonic() + self._bounded_timeout(body)

        def over() -> bool:  # every node registered, or the server closed
            return len(self._nodes) >= self.expected or self.closed

        with self._cond:
            while not over() and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(min(left, PEER_CHECK_SECS) if peer_gone is not None else left)
                if peer_gone is not None and not over() and peer_gone():
                    self._start_task_gone(body)
                    return {"ready": False, "missing": []}
            if len(self._nodes) < self.expected or self.closed:
                missing = sorted(set(range(self.expected)) - set(self._nodes))
                return {"ready": False, "missing": missing}
            return {"ready": True, "nodes": self._spec_locked()}

    def _start_task_gone(self, body: dict[str, Any]) -> None:
        """The start task of the node of ``body`` closed its connection while waiting for the others
        (called with the lock held): the node failed before the cluster started."""
        node = self._nodes.get(body.get("executor_id"))  # type: ignore[arg-type]
        if node is None or node.state != REGISTERED:
            return
        node.state = FAILED
        node.error = (f"the start task of {node.name} (executor {node.executor_id} on {node.host}, pid "
                      f"{node.info.get('pid')}) went away while it waited for the other nodes to register: its "
                      f"Python worker was killed or crashed, or Spark killed the task; see that executor's log")
        node.last_seen = time.monotonic()
        self._version += 1
        self._cond.notify_all()
        logger.error("node %s (executor %d on %s) is %s: %s", node.name, node.executor_id, node.host, FAILED,
                     node.error)

    def _on_heartbeat(self, body: dict[str, Any]) -> dict[str, Any]:
        feed = _feed_counts(body.get("feed"))
        alive = _process_alive(body.get("process"))
        with self._cond:
            node = self._known_node(body)
            if alive is not None:  # from the node's supervisor: the process lives, not that its Python answers
                node.alive_at, node.process_cpu = time.monotonic(), alive
                return {"stop": self._stop_requested}
            node.last_seen = time.monotonic()
            if feed is not None:
                node.feed = feed
            return {"stop": self._stop_requested, "stacks": self._stacks_request}

    def _on_report(self, body: dict[str, Any]) -> dict[str, Any]:
        state = body.get("state")
        if state not in (RUNNING, FINISHED, FAILED, STOPPED):
            raise ProtocolError(f"unknown node state {state!r}")
        with self._cond:
            node = self._known_node(body)
            if node.state in TERMINAL_STATES:
                return {}
            node.state = state
            node.last_seen = time.monotonic()
            if state == FAILED:
                node.error = str(body.get("error") or "no traceback reported")
                tail = body.get("log_tail") or []
                node.log_tail = [str(x) for x in tail][-50:]
            self._version += 1
            self._cond.notify_all()
        log = logger.error if state == FAILED else logger.info
        log("node %s (executor %d on %s) is %s", node.name, node.executor_id, node.host, state)
        return {}

    def _on_await_stop(self, body: dict[str, Any]) -> dict[str, Any]:
        timeout = self._bounded_timeout(body)
        with self._cond:
            self._known_node(body)
            stop = self._cond.wait_for(lambda: self._stop_requested, timeout)
            return {"stop": bool(stop)}

    def _on_query(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            return {
                "expected": self.expected,
                "registered": len(self._nodes),
                "stop": self._stop_requested,
                "states": {str(n.executor_id): n.state for n in self._nodes.values()},
            }

    def _on_stop(self, body: dict[str, Any]) -> dict[str, Any]:
        self.request_stop()
        return {}

    def _on_stop_request(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            self._client_stop_requests += 1
            self._version += 1
            self._cond.notify_all()
        logger.info("reservation server: stop requested from outside the cluster")
        return {}

    def _on_log(self, body: dict[str, Any]) -> dict[str, Any]:
        lines, dropped = body.get("lines", []), body.get("dropped", 0)
        if not isinstance(lines, list) or len(lines) > MAX_LOG_LINES_PER_MESSAGE:
            raise ProtocolError(f"log needs a list of at most {MAX_LOG_LINES_PER_MESSAGE} lines")
        if not isinstance(dropped, int) or isinstance(dropped, bool) or dropped < 0:
            raise ProtocolError(f"log 'dropped' must be a non-negative int, got {dropped!r}")
        checked: list[tuple[str, int, str]] = []
        for line in lines:
            if not (isinstance(line, list) and len(line) == 3 and line[0] in LOG_STREAMS
                    and isinstance(line[1], int) and not isinstance(line[1], bool) and isinstance(line[2], str)):
                raise ProtocolError("each log line must be [stream ('out', 'err' or 'log'), level (int), text]")
            checked.append((line[0], min(max(line[1], 0), 50), line[2][:MAX_LOG_LINE_CHARS]))
        with self._cond:
            node = self._known_node(body)
        sink = self.log_sink
        if sink is None:
            return {"relay": "off"}
        if checked or dropped:
            sink.deliver(node.name, checked, dropped)
        return {"relay": sink.level}

    def _on_progress(self, body: dict[str, Any]) -> dict[str, Any]:
        metrics = body.get("metrics", {})
        if not isinstance(metrics, dict) or len(metrics) > MAX_PROGRESS_METRICS:
            raise ProtocolError(f"progress 'metrics' must be an object of at most {MAX_PROGRESS_METRICS} entries")
        progress: dict[str, Any] = {"metrics": {str(k)[:100]: v for k, v in metrics.items()
                                                if isinstance(v, int | float | str) and not isinstance(v, bool)}}
        for key in ("step", "loss", "examples", "steps_per_sec", "examples_per_sec", "epoch"):
            value = body.get(key)
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
                raise ProtocolError(f"progress {key!r} must be a number, got {value!r}")
            progress[key] = value
        with self._cond:
            node = self._known_node(body)
            node.progress = progress
            node.progress_at = node.last_seen = time.monotonic()
            node.history.add(_history_point(progress, node.progress_at - self._started))
        return {}

    def _on_stacks(self, body: dict[str, Any]) -> dict[str, Any]:
        request, text = body.get("request"), body.get("text")
        if not isinstance(request, int) or isinstance(request, bool) or not isinstance(text, str):
            raise ProtocolError("stacks needs an int 'request' and a string 'text'")
        with self._cond:
            node = self._known_node(body)
            node.stacks = {request: text[:MAX_STACKS_CHARS]}
            self._cond.notify_all()
        return {}
