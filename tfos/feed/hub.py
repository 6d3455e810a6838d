"""A node's feed hub: where the training feed tasks send this node's rows, over TCP, or from its
own host over a Unix socket in the node's feed directory.

Started in the TF process of every chief/worker of an InputMode.SPARK cluster, before
``main_fun`` (:meth:`FeedHub.start`), on the port the node reserved and registered with the
driver (with the socket's path and the host's name), so the driver knows every hub's address
before the first ``train()``. Each
connection is greeted and authenticated (:mod:`tfos.feed.hub_link`), then handed to the
:class:`~tfos.feed.hub_feed.HubFeed` of its feed and input (made by the first feed task of
that ``train()`` call), in its own thread. The hub lives and dies with its TF process.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from typing import Any

from tfos.feed import channel as ch
from tfos.feed.hub_feed import HubFeed
from tfos.feed.hub_link import GREETING_TIMEOUT, HUB_VERSION, check_plan_mac, hub_socket_path
from tfos.feed.spill import reap_spills
from tfos.feed.targets import NodeTarget

logger = logging.getLogger("tfos.feed")

KEEP_ENDED_FEEDS = 16
PLAN_FIELDS = ("feed", "qname", "partition", "shard", "shards", "partitions", "epochs")


class FeedHub:
    """The listeners of one node's feed hub (TCP, and a Unix socket for its own host) and the feeds it
    holds (see the module doc)."""

    def __init__(self, node: dict[str, Any], secret: bytes, port: int, host: str = ""):
        self.target = NodeTarget(node)
        self.node = self.target.name
        self.secret = secret
        self._feeds: dict[tuple[str, str], HubFeed] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sock = socket.create_server((host, port), backlog=128)  # SO_REUSEADDR: the node just released it
        self.port = self._sock.getsockname()[1]
        self._sock.settimeout(0.5)
        self.socket_path = hub_socket_path(node["feed_dir"]) if node.get("feed_dir") else None
        self._unix = _unix_listener(self.socket_path) if self.socket_path else None

    def start(self) -> FeedHub:
        reap_spills()  # spills of hubs and feed tasks whose process was killed
        for listener in (self._sock, self._unix):
            if listener is not None:
                threading.Thread(target=self._accept_loop, args=(listener,), name="tfos-feed-hub", daemon=True).start()
        logger.info("%s: feed hub listening on port %d%s", self.node, self.port,
                    f" and {self.socket_path}" if self._unix else "")
        return self

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                sock, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock, peer), name="tfos-feed-hub-conn", daemon=True).start()

    def _serve(self, sock: socket.socket, peer: Any) -> None:
        if sock.family == socket.AF_UNIX:
            peer = ("this host (Unix socket)",)
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = ch.Connection(sock, f"a feed task at {peer[0]}", peer_pid=0)
        try:
            nonce = secrets.token_hex(16)
            conn.send_control(ch.HELLO, {"version": HUB_VERSION, "nonce": nonce, "node": self.node, "pid": os.getpid()},
                              timeout=GREETING_TIMEOUT, what="a feed task to read our greeting")
            msg = conn.recv(timeout=GREETING_TIMEOUT, what="the greeting of a feed task")
            hello = msg.control() if msg.type == ch.HELLO else {}
            if not check_plan_mac(self.secret, nonce, hello):
                logger.warning("%s: refused a feed connection from %s: not signed with this cluster's secret",
                               self.node, peer[0])
                conn.send_control(ch.REJECT, {"reason": "not authenticated"}, timeout=5.0, what="REJECT")
                conn.close()
                return
            if hello.get("driver"):  # the driver gives a feed up, or says which partitions were empty
                self._from_driver(hello)
                conn.send_control(ch.WELCOME, {"node": self.node}, timeout=5.0, what="WELCOME")
                conn.close()
                return
            missing = [f for f in PLAN_FIELDS if f not in hello]
            feed = None if missing else self._feed(hello)
            why = {"reason": f"the feed plan lacks {missing}"} if missing else feed.refusal(int(hello["partition"]))
        except Exception as exc:  # noqa: BLE001 - a bad peer must not stop the hub
            logger.warning("%s: dropped a feed connection from %s: %s", self.node, peer[0], exc)
            conn.close()
            return
        try:
            if why is not None:
                conn.send_control(ch.REJECT, why, timeout=5.0, what="the feed task to read REJECT")
                conn.close()
                return
            conn.peer = f"the feed task of partition {hello['partition']} of {hello['qname']!r} at {peer[0]}"
            conn.send_control(ch.WELCOME, {"node": self.node}, timeout=GREETING_TIMEOUT, what="WELCOME")
        except Exception as exc:  # noqa: BLE001
            logger.warning("%s: a feed task went away during its greeting: %s", self.node, exc)
            conn.close()
            return
        feed.receive(conn, int(hello["partition"]))

    def _feed(self, hello: dict[str, Any]) -> HubFeed:
        key = (str(hello["feed"]), str(hello["qname"]))
        with self._lock:
            feed = self._feeds.get(key)
            if feed is None:
                # kept a while after it ended (small): it turns away the late attempts of its feed tasks
                ended = [k for k, f in self._feeds.items() if f.state != "feeding"]
                for old in ended[:-KEEP_ENDED_FEEDS]:  # a stream feeds one micro-batch per train() call
                    del self._feeds[old]
                feed = self._feeds[key] = HubFeed(hello, self.target)
            return feed

    def _from_driver(self, hello: dict[str, Any]) -> None:
        if hello.get("job_ended") and not [f for f in PLAN_FIELDS if f not in hello]:
            self._feed(hello)  # a hub no feed task reached still learns the input (all of it empty here)
        with self._lock:
            feeds = [f for (feed_id, qname), f in self._feeds.items() if feed_id == str(hello.get("feed"))
                     and hello.get("qname") in (None, qname)]
        for feed in feeds:
            if hello.get("cancel"):
                feed.cancel(str(hello.get("reason", "")))
            if hello.get("job_ended"):
                feed.job_ended(int(hello["job_ended"]), [int(p) for p in hello.get("empty", [])])

    def close(self, reason: str = "", timeout: float = 3.0) -> None:
        """Stop listening; with ``reason`` (the node's main ended) also end every feed still open and wait
        up to ``timeout`` until each has told the driver, so none waits for a hub that is gone."""
        self._closed.set()
        if reason:
            with self._lock:
                feeds = list(self._feeds.values())
            for feed in feeds:
                feed.stop(reason)
            deadline = time.monotonic() + timeout
            for feed in feeds:
                feed.join(max(0.0, deadline - time.monotonic()))
        for listener in (self._sock, self._unix):
            try:
                if listener is not None:
                    listener.close()
            except OSError:
                pass
        if self._unix is not None:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass


def _unix_listener(path: str) -> socket.socket | None:
    """The hub's Unix socket at ``path`` (owner only), or None where it cannot be made (TCP still serves)."""
    try:
        sock = ch.unix_listener(path, backlog=128)
    except OSError as exc:
        logger.warning("feed hub: no Unix socket at %s (%s); feed tasks on this host use TCP", path, exc)
        return None
    sock.settimeout(0.5)
    return sock
