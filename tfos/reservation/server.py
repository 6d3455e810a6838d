"""Driver side of the control plane: collects reservations, answers queries, tracks liveness.

One thread per connection, each read bounded by a timeout, so a client that stalls in
the middle of a frame delays nobody else. Waiting for the cluster spec or for the stop
signal is a long poll on a condition variable: answered the moment the event happens.

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
import socket
import socketserver
import threading
import time
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
STOP_REQUEST = "stop_request"  # the one message the stop key may sign
LOG_STREAMS = frozenset({"out", "err", "log"})
MAX_LOG_LINES_PER_MESSAGE = 5000
MAX_LOG_LINE_CHARS = 8192
MAX_PROGRESS_METRICS = 64
MAX_STACKS_CHARS = 256 * 1024
_STOP_KEY_LABEL = b"tfos reservation stop request v1"


def stop_key(secret: bytes) -> bytes:
    """The key that signs external stop requests: derived from ``secret``, which it does not reveal."""
    return hmac.new(secret, _STOP_KEY_LABEL, hashlib.sha256).digest()


class _Replay:
    """A socket stand-in that hands out bytes already read, so one frame can be checked against two keys."""

    def __init__(self, data: bytes):
        self._data = memoryview(data)

    def settimeout(self, _timeout: float | None) -> None:
        pass

    def recv(self, n: int) -> bytes:
        chunk, self._data = bytes(self._data[:n]), self._data[n:]
        return chunk


def _read_frame_bytes(sock: socket.socket, timeout: float | None) -> bytes:
    """The raw bytes of one frame (header, MAC, payload); a bad header stops after the header."""
    deadline = None if timeout is None else time.monotonic() + timeout
    header = protocol._recv_exact(sock, protocol._HEADER.size, deadline)
    magic, length = protocol._HEADER.unpack(header)
    if magic != protocol.MAGIC or length > protocol.MAX_PAYLOAD_BYTES:
        return header  # read_frame names what is wrong with it
    return header + protocol._recv_exact(sock, protocol._MAC_LEN + length, deadline)


def read_authenticated(sock: socket.socket, secret: bytes, stop: bytes, timeout: float | None) -> tuple[Message, bytes]:
    """One frame signed with ``secret`` (any type) or with ``stop`` (``STOP_REQUEST`` only); returns it and its key."""
    raw = _read_frame_bytes(sock, timeout)
    try:
        return protocol.read_frame(_Replay(raw), secret, None), secret  # type: ignore[arg-type]
    except ProtocolError as exc:
        if "bad signature" not in str(exc):
            raise
    msg = protocol.read_frame(_Replay(raw), stop, None)  # type: ignore[arg-type]
    if msg.type != STOP_REQUEST:
        raise ProtocolError(f"{msg.type!r} signed with the stop key: that key may only request a stop")
    return msg, stop


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


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        owner = self.server.owner
        sock: socket.socket = self.request
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        while not owner.closed:
            try:
                sock.settimeout(owner.idle_timeout)
                if not sock.recv(1, socket.MSG_PEEK):  # idle between frames is fine; EOF ends the connection
                    return
            except TimeoutError:
                logger.debug("reservation server: closing connection from %s idle for %ss", peer, owner.idle_timeout)
                return
            except OSError:
                return
            try:
                msg, key = read_authenticated(sock, owner.secret, owner.stop_key, owner.read_timeout)
            except EOFError:
                return
            except TimeoutError:
                owner.count_rejected()
                logger.warning("reservation server: closing connection from %s that stalled mid-frame for %ss",
                               peer, owner.read_timeout)
                return
            except ProtocolError as exc:
                owner.count_rejected()
                logger.warning("reservation server: rejected frame from %s: %s", peer, exc)
                return
            except OSError:
                return
            try:
                reply_type, body = owner.dispatch(msg)
            except ProtocolError as exc:
                owner.count_rejected()
                logger.warning("reservation server: rejected %r from %s: %s", msg.type, peer, exc)
                reply_type, body = protocol.ERROR, {"message": str(exc)}
            try:
                protocol.send_frame(sock, key, reply_type, body)
            except OSError:
                return


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: ReservationServer):
        self.owner = owner
        super().__init__(address, _Handler)


class ReservationServer:
    """Collects one registration per expected TF node and serves the cluster's control messages."""

    def __init__(self, expected: int, secret: bytes, host: str = "127.0.0.1", port: int = 0,
                 read_timeout: float = 30.0, idle_timeout: float = 3600.0):
        if expected < 1:
            raise ValueError(f"expected must be >= 1, got {expected}")
        if len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        self.expected = expected
        self.secret = secret
        self.stop_key = stop_key(secret)
        self.read_timeout = read_timeout  # bound on receiving one whole frame once it has begun
        self.idle_timeout = idle_timeout  # bound on silence between frames of a connection
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
    def await_reservations(self, timeout: float) -> list[dict[str, Any]]:
        """Block until every expected node registered; raise ``ReservationTimeout`` naming the missing."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._nodes) < self.expected:
                if self._abort is not None:
                    raise RuntimeError(self._abort)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    missing = sorted(set(range(self.expected)) - set(self._nodes))
                    raise ReservationTimeout(missing, self.expected, timeout)
                self._cond.wait(left)
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
        """How many frames or requests were refused (malformed, unsigned, unknown, invalid)."""
        with self._cond:
            return self._rejected

    def count_rejected(self) -> None:
        with self._cond:
            self._rejected += 1

    # message handling ----------------------------------------------------------------------
    def dispatch(self, msg: Message) -> tuple[str, dict[str, Any]]:
        handler = {
            protocol.REGISTER: self._on_register,
            protocol.AWAIT_SPEC: self._on_await_spec,
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
                raise ProtocolError(f"executor {eid} already registered as {self._nodes[eid].name}; "
                                    "tfos does not restart nodes of a running cluster")
            info = {k: v for k, v in body.items() if k not in _REQUIRED_REGISTRATION_FIELDS}
            self._nodes[eid] = NodeRecord(eid, body["host"], body["port"], body["job_name"],
                                          body["task_index"], info)
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

    def _on_await_spec(self, body: dict[str, Any]) -> dict[str, Any]:
        timeout = self._bounded_timeout(body)
        with self._cond:
            ready = self._cond.wait_for(lambda: len(self._nodes) >= self.expected or self.closed, timeout)
            if not ready or self.closed:
                missing = sorted(set(range(self.expected)) - set(self._nodes))
                return {"ready": False, "missing": missing}
            return {"ready": True, "nodes": self._spec_locked()}

    def _on_heartbeat(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            node = self._known_node(body)
            node.last_seen = time.monotonic()
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
