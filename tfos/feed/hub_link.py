"""The authenticated link between a training feed task and a node's feed hub.

A feed task (:mod:`tfos.feed.direct_task`) sends each shard of its partition straight to
the hub of the node that trains on it (:mod:`tfos.feed.hub`), wherever that node runs: no
Spark shuffle between them. A hub on the task's own host is reached over its Unix socket (in
the node's feed directory, :func:`hub_socket_path`), any other over TCP. The link uses the feed
channel's framing (:class:`~tfos.feed.channel.Connection`: msgpack control messages, Arrow IPC
``DATA``; never pickle), with one authenticated greeting on either transport:

    hub  -> HELLO {version, nonce, node}
    task -> HELLO {feed plan ..., mac}      mac = HMAC-SHA256(cluster secret, nonce + plan)
    hub  -> WELCOME {}  |  REJECT {reason, terminated, duplicate}
    task -> DATA* END_PARTITION {rows}      (the partition's row count, over all shards)
    hub  -> END_PARTITION {}                (the hub has everything; or TERMINATE / ERROR at any time)

The secret is the cluster's reservation secret (the start tasks and the TF processes have
it, the feed tasks get it in their closure); a peer without it is refused before it can send
a byte of data. The greeting's nonce is fresh per connection, so a recorded greeting cannot
be replayed. Data frames after the greeting are not signed (as Spark's own shuffle, the bytes
are only as private as the network unless Spark's network encryption is on).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import socket
import time
from typing import Any

from tfos.feed import channel as ch
from tfos.feed.errors import FeedError, FeedTimeout, PeerGone

HUB_VERSION = 1
GREETING_TIMEOUT = 30.0
CONNECT_RETRY_SECS = 0.1
HUB_SOCKET = "hub.sock"


def hub_socket_path(feed_dir: str) -> str | None:
    """Where the hub of the node with ``feed_dir`` also listens for feed tasks on its own host (a Unix
    socket), or None where that path is too long for one (the hub is then reached over TCP only)."""
    path = os.path.join(feed_dir, HUB_SOCKET)
    return path if len(os.fsencode(path)) <= ch.MAX_SUN_PATH else None


def plan_mac(secret: bytes, nonce: str, hello: dict[str, Any]) -> str:
    """The greeting's signature: the nonce and every field of the plan except ``mac`` itself."""
    body = json.dumps({k: v for k, v in hello.items() if k != "mac"}, sort_keys=True, default=str)
    return hmac.new(secret, (nonce + body).encode(), hashlib.sha256).hexdigest()


def check_plan_mac(secret: bytes, nonce: str, hello: dict[str, Any]) -> bool:
    mac = hello.get("mac")
    return isinstance(mac, str) and hmac.compare_digest(mac, plan_mac(secret, nonce, hello))


class HubLink:
    """One feed task's connection to one node's feed hub, greeted and authenticated.

    ``stopped`` is set (with the hub's reason) once the hub no longer wants rows: its node
    called ``terminate()`` or finished, or the partition was already fed by another attempt.
    """

    def __init__(self, hub: dict[str, Any], hello: dict[str, Any], secret: bytes, timeout: float):
        self.node = str(hub["node"])
        self.where = f"the feed hub of {self.node} at {hub['host']}:{hub['port']}"
        self.timeout = timeout
        self.stopped: str | None = None
        self.rows_sent = 0
        self.conn, self.local = _connect(hub, self.where, timeout)
        if self.local:
            self.where = f"the feed hub of {self.node} at {hub['socket']}"
        try:
            greet = self.conn.recv(timeout=GREETING_TIMEOUT, what=f"the greeting of {self.where}")
            info = greet.control() if greet.type == ch.HELLO else {}
            if greet.type != ch.HELLO or info.get("version") != HUB_VERSION:
                raise FeedError(f"{self.where} greeted with {greet.name} {info}: not a tfos feed hub of this version "
                                f"(hub protocol {HUB_VERSION})")
            signed = dict(hello)
            signed["mac"] = plan_mac(secret, str(info.get("nonce", "")), signed)
            self.conn.send_control(ch.HELLO, signed, timeout=GREETING_TIMEOUT, what=f"{self.where} to read our plan")
            reply = self.conn.recv(timeout=GREETING_TIMEOUT, what=f"{self.where} to accept the feed")
            if reply.type == ch.REJECT:
                why = reply.control()
                if why.get("terminated") or why.get("duplicate"):
                    self.stopped = str(why.get("reason"))
                else:
                    raise FeedError(f"{self.where} refused partition {hello.get('partition')} of input "
                                    f"{hello.get('qname')!r}: {why.get('reason')}")
            elif reply.type != ch.WELCOME:
                raise FeedError(f"{self.where} answered {reply.name} to the feed's greeting")
        except BaseException:
            self.conn.close()
            raise

    def send(self, payload: Any, rows: int) -> None:
        """Send one chunk of this hub's shard (nothing once ``stopped``)."""
        if self.stopped:
            return
        try:
            self.conn.send(ch.DATA, payload, timeout=self.timeout, what=f"{self.where} to take more rows")
            self.rows_sent += rows
        except ch.Interrupted as exc:
            self._interrupted(exc)
        except PeerGone as exc:
            raise FeedError(f"{self.where} went away while it was being fed: {exc} (its TF process died or "
                            f"was stopped; the driver's error names the node)") from exc

    def end(self, partition_rows: int) -> None:
        """Tell the hub the partition's row count (over all shards) and wait until it has everything."""
        if self.stopped:
            return
        what = f"{self.where} to confirm the end of the partition"
        try:
            try:
                self.conn.send_control(ch.END_PARTITION, {"rows": partition_rows}, timeout=self.timeout, what=what)
            except ch.Interrupted as exc:
                self._interrupted(exc)
                return
            while True:
                msg = self.conn.recv(timeout=self.timeout, what=what)
                if msg.type == ch.END_PARTITION:
                    return
                if msg.type in ch.INTERRUPTS:
                    self._interrupted(ch.Interrupted(msg, self.where))
                    return
        except PeerGone as exc:
            raise FeedError(f"{self.where} went away before it confirmed the end of the partition: {exc}") from exc

    def fail(self, message: str) -> None:
        """Tell the hub this partition failed (best effort): its node's feed fails with ``message``."""
        try:
            self.conn.send_control(ch.ERROR, {"error": message[:60_000]}, timeout=5.0, what=f"{self.where} to read ERROR")
        except Exception:  # noqa: BLE001 - it may be gone already
            pass

    def _interrupted(self, exc: ch.Interrupted) -> None:
        if exc.message.type == ch.TERMINATE:
            self.stopped = str(exc.info.get("reason") or "terminated")
            return
        raise FeedError(f"{self.where} failed: {exc.info.get('error', '')}") from None

    def close(self) -> None:
        self.conn.close()


def _local_socket(hub: dict[str, Any]) -> str | None:
    """The hub's Unix socket when it runs on this host (same host name) and has one, else None."""
    path = hub.get("socket")
    return path if path and hub.get("hostname") == socket.gethostname() else None


def _connect(hub: dict[str, Any], where: str, timeout: float) -> tuple[ch.Connection, bool]:
    """A connection to the hub and whether it is the local Unix socket: that one when the hub runs on this
    host, else TCP; retried while the hub is not listening yet (its TF process is starting) up to ``timeout``."""
    deadline = time.monotonic() + timeout
    local = _local_socket(hub)
    while True:
        if local and os.path.exists(local):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(min(10.0, timeout))
            try:
                sock.connect(local)
                return ch.Connection(sock, where, peer_pid=0, drain_on_send=True), True
            except OSError:  # a stale socket file, or not accepting: TCP says whether the hub is up
                sock.close()
        try:
            sock = socket.create_connection((hub["host"], int(hub["port"])), timeout=min(10.0, timeout))
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH) and \
                    not isinstance(exc, TimeoutError):
                raise FeedError(f"cannot connect to {where}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise FeedTimeout(f"timed out after {timeout:g}s (feed_timeout) connecting to {where}: {exc} "
                                  f"(is its TF process running?)") from exc
            time.sleep(CONNECT_RETRY_SECS)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return ch.Connection(sock, where, peer_pid=0, drain_on_send=True), False
