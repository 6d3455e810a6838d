"""Executor side of the control plane: a small authenticated request/reply client."""

from __future__ import annotations

import secrets
import socket
import threading
from typing import Any

from tfos.reservation import protocol


class ReservationError(RuntimeError):
    """The reservation server refused a request or could not be reached."""


class ReservationClient:
    """One persistent connection to the driver's reservation server; thread-safe.

    Each client is one session: a random id, and frames numbered 1, 2, 3, ... so that the
    server can refuse a replayed frame (see :mod:`tfos.reservation.protocol`).
    """

    def __init__(self, address: tuple[str, int], secret: bytes, timeout: float = 30.0):
        self.address = (str(address[0]), int(address[1]))
        self.secret = secret
        self.timeout = timeout
        self.session = secrets.token_hex(16)
        self._seq = 0
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection(self.address, timeout=self.timeout)
        except OSError as exc:
            raise ReservationError(
                f"cannot reach the tfos reservation server at {self.address[0]}:{self.address[1]}: {exc}. "
                "Check that executors can open connections to the driver (spark.driver.host, firewalls)."
            ) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def request(self, msg_type: str, body: dict[str, Any] | None = None, timeout: float | None = None) -> dict:
        """Send one request and return the reply's body; ``timeout`` bounds the wait for the reply."""
        wait = self.timeout if timeout is None else timeout
        with self._lock:
            for attempt in (0, 1):
                if self._sock is None:
                    self._sock = self._connect()
                self._seq += 1  # a retry is a new frame: the server may have accepted the first one
                try:
                    protocol.send_frame(self._sock, self.secret, msg_type, body, self.session, self._seq)
                    reply = protocol.read_frame(self._sock, self.secret, wait)
                    if reply.session != self.session or reply.seq != self._seq:
                        raise protocol.ProtocolError(f"the reply answers request #{reply.seq} of session "
                                                     f"{reply.session}, not #{self._seq} of {self.session}",
                                                     protocol.REPLAY)
                    break
                except (EOFError, ConnectionError) as exc:
                    self._close_locked()
                    if attempt:
                        raise ReservationError(f"reservation server at {self.address} closed the "
                                               f"connection during {msg_type!r}: {exc}") from exc
                except TimeoutError as exc:
                    self._close_locked()
                    raise ReservationError(f"no reply to {msg_type!r} from the reservation server at "
                                           f"{self.address} within {wait:.0f}s") from exc
                except protocol.ProtocolError as exc:
                    self._close_locked()
                    raise ReservationError(f"invalid reply to {msg_type!r}: {exc}") from exc
                except OSError as exc:  # e.g. EHOSTUNREACH, ENETUNREACH: the caller's retry policy applies
                    self._close_locked()
                    raise ReservationError(f"could not talk to the reservation server at {self.address} "
                                           f"during {msg_type!r}: {exc}") from exc
        if reply.type == protocol.ERROR:
            raise ReservationError(f"reservation server refused {msg_type!r}: {reply.body.get('message')}")
        return reply.body

    def _close_locked(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    # typed helpers -------------------------------------------------------------------------
    def register(self, node: dict[str, Any]) -> None:
        self.request(protocol.REGISTER, node)

    def await_spec(self, executor_id: int, timeout: float) -> list[dict[str, Any]]:
        """Wait (long poll) until every node registered and return all registrations."""
        reply = self.request(protocol.AWAIT_SPEC, {"executor_id": executor_id, "timeout": timeout},
                             timeout=timeout + self.timeout)
        if not reply.get("ready"):
            raise ReservationError(
                f"timed out after {timeout:.0f}s waiting for the other TF nodes to register; still missing "
                f"executor ids {reply.get('missing')}"
            )
        return list(reply["nodes"])

    def heartbeat(self, executor_id: int) -> bool:
        """Record liveness; returns True once the driver asked the cluster to stop."""
        return bool(self.request(protocol.HEARTBEAT, {"executor_id": executor_id}).get("stop"))

    def report(self, executor_id: int, state: str, error: str | None = None,
               log_tail: list[str] | None = None) -> None:
        self.request(protocol.REPORT, {"executor_id": executor_id, "state": state, "error": error,
                                       "log_tail": log_tail or []})

    def heartbeat_reply(self, executor_id: int, feed: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
        """Record liveness (with the node's feed counts, if any); the whole reply (``stop``, ``stacks``:
        the latest stack request id)."""
        body: dict[str, Any] = {"executor_id": executor_id}
        if feed:
            body["feed"] = feed
        return self.request(protocol.HEARTBEAT, body)

    def vouch(self, executor_id: int, cpu_seconds: float) -> bool:
        """From the node's supervisor: its TF process is alive (with its CPU seconds so far), whether or
        not its own heartbeats get through; returns True once the driver asked the cluster to stop."""
        body = {"executor_id": executor_id, "process": {"cpu": round(cpu_seconds, 2)}}
        return bool(self.request(protocol.HEARTBEAT, body).get("stop"))

    def log(self, executor_id: int, lines: list[tuple[str, int, str]], dropped: int = 0) -> str:
        """Ship relayed output lines ``(stream, level, text)``; returns the relay level the driver asks for."""
        reply = self.request(protocol.LOG, {"executor_id": executor_id, "lines": [list(x) for x in lines],
                                            "dropped": dropped})
        return str(reply.get("relay", "off"))

    def progress(self, executor_id: int, progress: dict[str, Any]) -> None:
        self.request(protocol.PROGRESS, {**progress, "executor_id": executor_id})

    def stacks(self, executor_id: int, request: int, text: str) -> None:
        self.request(protocol.STACKS, {"executor_id": executor_id, "request": request, "text": text})

    def await_stop(self, executor_id: int, timeout: float) -> bool:
        """Long poll: returns True as soon as the driver requests the cluster stop."""
        reply = self.request(protocol.AWAIT_STOP, {"executor_id": executor_id, "timeout": timeout},
                             timeout=timeout + self.timeout)
        return bool(reply.get("stop"))

    def query(self) -> dict[str, Any]:
        return self.request(protocol.QUERY)

    def stop(self) -> None:
        self.request(protocol.STOP)


def request_stop(address: tuple[str, int], stop_key: bytes, timeout: float = 30.0) -> None:
    """Ask the driver of a cluster to end its streaming job (``cluster.shutdown(ssc)`` returns).

    ``stop_key`` is ``cluster.stop_key`` (``server.stop_key(secret)``): it can sign this request
    and nothing else, so handing it to a stop script gives no other control over the cluster.
    """
    from tfos.reservation.server import STOP_REQUEST

    client = ReservationClient(address, stop_key, timeout=timeout)
    try:
        client.request(STOP_REQUEST)
    finally:
        client.close()
