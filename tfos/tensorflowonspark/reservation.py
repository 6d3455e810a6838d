"""TensorFlowOnSpark ``reservation``: ``Client(server_addr).request_stop()`` and ``Server(count)``.

tfos's control plane authenticates every frame (HMAC with the cluster's secret), so an
address alone cannot control a cluster. ``cluster.server_addr`` (also
``cluster.cluster_meta['server_addr']``) is ``(host, port, stop_token)``: the token is a key
derived from the secret that can sign a stop request and nothing else, and the driver logs
it. ``Client((host, port, token))`` or ``Client("host:port:token")`` can then
``request_stop()``; a ``(host, port)`` address takes the token from ``$TFOS_STOP_TOKEN``.
``register`` / ``get_reservations`` / ``await_reservations`` need the cluster's secret, which
only the nodes have, and raise. The wire format is tfos's (signed JSON), never pickle:
TensorFlowOnSpark's ``MessageSocket`` is deliberately absent.

``Server(count)`` is a native reservation server with a fresh secret, listening on
``$TFOS_SERVER_HOST`` (default: this host's address) and a port of ``$TFOS_SERVER_PORT``
(a number or a range ``9997-9999``; default any).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from tfos.reservation import protocol
from tfos.reservation.client import request_stop as _request_stop
from tfos.reservation.server import ReservationServer
from tfos.tensorflowonspark import util

logger = logging.getLogger(__name__)

TFOS_SERVER_PORT = "TFOS_SERVER_PORT"
TFOS_SERVER_HOST = "TFOS_SERVER_HOST"
TFOS_STOP_TOKEN = "TFOS_STOP_TOKEN"
BUFSIZE = 1024
MAX_RETRIES = 3


class Reservations:
    """A thread-safe list of node reservations, complete at ``required`` entries."""

    def __init__(self, required: int):
        self.required = required
        self.lock = threading.RLock()
        self.reservations: list[dict[str, Any]] = []

    def add(self, meta: dict[str, Any]) -> None:
        with self.lock:
            self.reservations.append(meta)

    def done(self) -> bool:
        with self.lock:
            return len(self.reservations) >= self.required

    def get(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.reservations)

    def remaining(self) -> int:
        with self.lock:
            return self.required - len(self.reservations)


def parse_address(server_addr: Any) -> tuple[str, int, bytes | None]:
    """``(host, port, stop key or None)`` from a tuple ``(host, port[, token])`` or a string ``host:port[:token]``."""
    parts = server_addr.split(":") if isinstance(server_addr, str) else list(server_addr)
    if len(parts) not in (2, 3):
        raise ValueError(f"reservation server address must be (host, port[, stop_token]) or 'host:port[:token]', "
                         f"got {server_addr!r}")
    token = parts[2] if len(parts) == 3 else os.environ.get(TFOS_STOP_TOKEN)
    return str(parts[0]), int(parts[1]), bytes.fromhex(token) if token else None


class Client:
    """A client of a cluster's reservation server that can ask the driver to stop a streaming job."""

    def __init__(self, server_addr: Any):
        host, port, self._stop_key = parse_address(server_addr)
        self.server_addr = (host, port)
        self.sock = None  # tfos opens one signed connection per request

    def _needs_secret(self, what: str) -> None:
        raise PermissionError(f"reservation.Client.{what}() needs the cluster's secret, which only its nodes hold; "
                              f"a Client made from an address can only request_stop()")

    def register(self, reservation: dict[str, Any]) -> None:
        self._needs_secret("register")

    def get_reservations(self) -> list[dict[str, Any]]:
        self._needs_secret("get_reservations")
        return []

    def await_reservations(self) -> list[dict[str, Any]]:
        self._needs_secret("await_reservations")
        return []

    def request_stop(self) -> str:
        """Ask the driver to end the streaming job: ``cluster.shutdown(ssc)`` stops the stream and returns."""
        if self._stop_key is None:
            raise PermissionError(f"no stop token for {self.server_addr[0]}:{self.server_addr[1]}: pass the driver's "
                                  f"cluster.server_addr (host, port, token), 'host:port:token', or set "
                                  f"${TFOS_STOP_TOKEN}")
        _request_stop(self.server_addr, self._stop_key)
        logger.info("requested stop from the reservation server at %s:%d", *self.server_addr)
        return "OK"

    def close(self) -> None:
        """Nothing stays open between requests."""


def _server_ports() -> list[int]:
    spec = os.getenv(TFOS_SERVER_PORT, "0")
    if "-" not in spec:
        return [int(spec)]
    low, _, high = spec.partition("-")
    return list(range(int(low), int(high) + 1))


class Server(ReservationServer):
    """A reservation server for ``count`` nodes (see the module doc); ``done`` once a stop was requested."""

    def __init__(self, count: int):
        super().__init__(count, protocol.new_secret(), host=self.get_server_ip())

    @property
    def reservations(self) -> Reservations:
        """The registrations so far."""
        store = Reservations(self.expected)
        for node in self.nodes():
            store.add(node.as_dict())
        return store

    @property
    def done(self) -> bool:
        """True once a stop was requested (``Client(addr).request_stop()``) or the server stopped."""
        return self.stop_requested_by_client or self.closed

    def get_server_ip(self) -> str:
        return os.getenv(TFOS_SERVER_HOST) or util.get_ip_address()

    def get_server_ports(self) -> list[int]:
        return _server_ports()

    def start(self) -> tuple[str, int, str]:  # type: ignore[override]
        """Listen on the first free port of ``get_server_ports()``; returns ``(host, port, stop token)``."""
        errors = []
        for port in self.get_server_ports():
            self._port = port
            try:
                host, bound = super().start()
                return host, bound, self.stop_key.hex()
            except OSError as exc:
                errors.append(f"{port}: {exc}")
        raise OSError(f"reservation server could not bind any of the ports {self.get_server_ports()}: {errors}")

    def await_reservations(self, sc: Any = None, status: dict = {},  # type: ignore[override] # noqa: B006 - read only
                           timeout: float = 600) -> list[dict[str, Any]]:
        """Block until ``count`` nodes registered (raises on timeout or when ``status`` has an 'error')."""
        deadline = time.monotonic() + timeout
        while True:
            if status and "error" in status:
                raise RuntimeError(f"a TF node failed while the cluster started: {status['error']}")
            try:
                return super().await_reservations(min(1.0, max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise

    def stop(self) -> None:
        """Stop listening."""
        self.close()
