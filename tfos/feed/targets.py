"""The TF node a feed task feeds: :class:`NodeTarget` and :func:`open_feed`.

A :class:`NodeTarget` wraps a node's registry entry (found by ``registry.pick_local_node``)
with the checks a feeding task makes before and while it feeds (the node exited, terminated
or ended the input, its process is gone) and turns a lost connection into an error that says
why (:meth:`NodeTarget.explain`: ``FeedTerminated`` when the TF side wanted it, else a
``FeedError`` naming the node and, where it left one, its traceback). :func:`open_feed`
connects to the node's DataFeed and completes the greeting.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from tfos.feed import channel as ch
from tfos.feed.errors import FeedError, FeedTerminated, PeerGone
from tfos.feed.registry import node_name

logger = logging.getLogger("tfos.feed")

EXIT_MARKER_WAIT = 3.0


class NodeTarget:
    """A local TF node from the registry, with the checks a feeding task needs."""

    def __init__(self, node: dict):
        self.node = node
        self.name = node_name(node)
        self.feed_dir = ch.FeedDir(node["feed_dir"])
        self.pid = node.get("pid")

    def check(self, qname: str) -> None:
        """Raise if feeding ``qname`` to this node is pointless (it exited, terminated the input)."""
        exit_state = self.feed_dir.read_exit()
        if exit_state is not None:
            if exit_state.get("state") == "failed":
                raise FeedError(f"the TF process of {self.name} failed:\n{exit_state.get('error', '')}")
            raise FeedTerminated(f"{self.name} finished main_fun")
        if self.feed_dir.terminated(qname):
            raise FeedTerminated(f"{self.name} terminated input {qname!r}")
        if self.feed_dir.ended(qname):
            raise FeedTerminated(f"{self.name} already ended its feed {qname!r} (an earlier "
                                 f"train(end_feed=True), or the cluster is shutting down)")
        if self.pid and not ch.pid_alive(self.pid):
            raise PeerGone(f"the TF process of {self.name} (pid {self.pid}) is gone")

    def explain(self, exc: BaseException, qname: str, what: str, conn: ch.Connection | None = None) -> BaseException:
        """Turn a lost connection into FeedTerminated (the TF side wanted it) or a FeedError that says why."""
        if isinstance(exc, FeedTerminated):
            return exc
        interrupt = exc if isinstance(exc, ch.Interrupted) else None
        if interrupt is None and conn is not None:
            for msg in list(conn.inbox):
                if msg.type in ch.INTERRUPTS:
                    interrupt = ch.Interrupted(msg, self.name)
                    break
        if interrupt is not None:
            if interrupt.message.type == ch.TERMINATE:
                return FeedTerminated(str(interrupt))
            return FeedError(f"{self.name} failed while being fed {what}:\n{interrupt.info.get('error', '')}")
        if not isinstance(exc, PeerGone):
            return exc
        if self.feed_dir.terminated(qname) or self.feed_dir.ended(qname):
            return FeedTerminated(f"{self.name} ended input {qname!r}")
        deadline = time.monotonic() + EXIT_MARKER_WAIT
        while True:
            exit_state = self.feed_dir.read_exit()
            if exit_state is not None:
                if exit_state.get("state") == "failed":
                    return FeedError(f"the TF process of {self.name} failed while being fed {what}:\n"
                                     f"{exit_state.get('error', '')}")
                logger.warning("%s finished main_fun before reading all of %s; the rest is not fed", self.name, what)
                return FeedTerminated(f"{self.name} finished main_fun")
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        return FeedError(f"the TF process of {self.name} closed its data feed {qname!r} while being fed {what} "
                         f"(it crashed, was killed, or dropped its DataFeed; it reported no exit state): {exc}")


def open_feed(target: NodeTarget, qname: str, *, mode: str, partition: int, feed_timeout: float,
              extra: dict | None = None, cancel: threading.Event | None = None) -> ch.Connection:
    """Connect to ``target``'s DataFeed for ``qname`` and complete the greeting."""
    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise FeedTerminated("cancelled")
        target.check(qname)

    what = f"partition {partition} of input {qname!r}"
    conn = ch.connect(target.node["feed_dir"], qname, peer=target.name, timeout=feed_timeout, check=check,
                      liveness=check)
    try:
        hello = {"version": ch.PROTOCOL_VERSION, "qname": qname, "mode": mode, "partition": partition,
                 "feed_timeout": feed_timeout, "host": socket.gethostname(), "pid": os.getpid()}
        hello.update(extra or {})
        conn.send_control(ch.HELLO, hello, timeout=feed_timeout, what=f"{target.name} to accept {what}")
        msg = conn.recv(timeout=feed_timeout,
                        what=f"{target.name} to start reading {what} (it is busy with another feed task of this "
                             f"input, or main_fun is not reading {qname!r})")
        info = msg.control()
        if msg.type == ch.REJECT:
            if info.get("terminated"):
                raise FeedTerminated(f"{target.name} terminated input {qname!r}")
            raise FeedError(f"{target.name} refused {what}: {info.get('reason')}")
        if msg.type != ch.WELCOME:
            raise FeedError(f"{target.name} answered {msg.name} to the greeting of {what}")
        if not conn.peer_pid and info.get("pid"):
            conn.peer_pid = int(info["pid"])
        return conn
    except BaseException as exc:
        conn.close()
        err = target.explain(exc, qname, what, conn)
        if err is exc:
            raise
        raise err from exc
