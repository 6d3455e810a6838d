"""The TF node's end of one named input's channel: :class:`FeedReceiver`.

It accepts the feed tasks one at a time on the node's listening socket, greets them (or refuses
them, saying why), decodes their messages into one ordered queue of events (record batches and
the ``EPOCH_END`` / ``PARTITION_END`` / ``FEED_END`` marks), counts rows and epochs, and ends
the feed (``ended`` marker) or terminates it (``terminate()``: every feed task is told to stop).
A training feed task that goes away before the end of its last epoch makes the read raise
``FeedError``: that epoch can never be completed.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections import deque
from typing import Any

import pyarrow as pa

from tfos.feed import arrow_codec as codec
from tfos.feed import channel as ch
from tfos.feed.errors import FeedError, FeedTimeout, PeerGone
from tfos.feed.results import PendingResults

logger = logging.getLogger("tfos.feed")

EPOCH_END = "end of epoch"
PARTITION_END = "end of partition"
FEED_END = "end of feed"
HELLO_TIMEOUT = 30.0
WAIT_LOG_SECS = 120.0
TERMINATE_DRAIN_SECS = 2.0


class FeedReceiver:
    """The events of one named input of this node, in order (see the module doc)."""

    def __init__(self, feed_dir: str, qname: str, node: str, train_mode: bool, timeout: float | None,
                 results: PendingResults):
        self.qname_in, self.node, self.train_mode, self.timeout = qname, node, train_mode, timeout
        self.results = results
        self.feed_dir = ch.FeedDir(feed_dir)
        self._listener: ch.Listener | None = ch.Listener(feed_dir, qname)
        self._conn: ch.Connection | None = None
        self._hello: dict = {}
        self._events: deque[Any] = deque()  # RecordBatch | EPOCH_END | PARTITION_END | FEED_END, in order
        self.done = False
        self.terminated = False
        self.rows_read = 0
        self.epochs_read = 0
        self._conn_epochs = 0  # epochs ended on the current connection

    def msg_timeout(self) -> float:
        return float(self._hello.get("feed_timeout") or 600.0)

    # ------------------------------------------------------------------------------------
    # events
    # ------------------------------------------------------------------------------------
    def queued_rows(self) -> int:
        """Rows received and decoded but not read yet (safe from another thread: a snapshot)."""
        for _ in range(3):
            try:
                return sum(ev.num_rows for ev in list(self._events) if isinstance(ev, pa.RecordBatch))
            except RuntimeError:  # the deque changed while it was copied: try again
                continue
        return 0

    def take(self, limit: int) -> Any:
        """The next event; a record batch is cut to at most ``limit`` rows (the rest stays queued)."""
        ev = self.next_event()
        if isinstance(ev, pa.RecordBatch) and ev.num_rows > limit:
            self._events.appendleft(ev.slice(limit))
            ev = ev.slice(0, limit)
        if isinstance(ev, pa.RecordBatch):
            self.rows_read += ev.num_rows
            self.results.handed_out(ev.num_rows)
        return ev

    def next_event(self) -> Any:
        while True:
            if self._events:
                ev = self._events.popleft()
                if ev is PARTITION_END:  # everything of this connection has been handed out
                    self._end_connection()
                return ev
            if self.done:
                return FEED_END
            if self._conn is None:
                self._accept()
                continue
            self._read_message()

    def first_batch(self) -> pa.RecordBatch | None:
        """The first record batch still to come, left queued (waits for it); None if the feed ends first."""
        seen: list[Any] = []
        try:
            while True:
                ev = self.next_event()
                seen.append(ev)
                if isinstance(ev, pa.RecordBatch) or ev is FEED_END:
                    break
        finally:
            self._events.extendleft(reversed(seen))
        return seen[-1] if isinstance(seen[-1], pa.RecordBatch) else None

    def _read_message(self) -> None:
        conn = self._conn
        assert conn is not None
        part = self._hello.get("partition")
        try:
            msg = conn.recv(timeout=self.msg_timeout(),
                            what=f"the next message of the feed task for partition {part}")
        except PeerGone:
            epochs = int(self._hello.get("epochs") or 0)
            if self._hello.get("mode") == "train" and self._conn_epochs < epochs:
                # the epoch can never be completed: reading on would break exact epochs silently
                self._conn = None
                conn.close()
                raise FeedError(f"{self.node}: the feed task of shard {part} of {self.qname_in!r} went away in "
                                f"epoch {self._conn_epochs + 1}/{epochs} (its Spark task failed, was killed or "
                                f"cancelled: see the driver's error); {self.rows_read} rows read so far") from None
            logger.warning("%s: the feed task of partition %s closed its connection before the end of its data "
                           "(task failed, killed or cancelled); %d rows read so far", self.node, part, self.rows_read)
            self._events.append(PARTITION_END)
            return
        if msg.type == ch.DATA:
            try:
                batches = codec.from_ipc(msg.payload)
            except pa.ArrowException as exc:
                self._fail(conn, f"undecodable data from the feed task of partition {part}: {exc}")
            self._events.extend(b for b in batches if b.num_rows)
        elif msg.type == ch.END_EPOCH:
            self.epochs_read += 1
            self._conn_epochs += 1
            self._events.append(EPOCH_END)
        elif msg.type == ch.END_FEED:
            # queued after the data before it; with the queue empty next_event then keeps
            # returning FEED_END
            self._events.append(FEED_END)
            self._conn = None
            conn.close()
            self.end_feed()
        elif msg.type == ch.END_PARTITION:
            self._events.append(PARTITION_END)
        elif msg.type == ch.ERROR and self._hello.get("mode") == "train":
            # a feed hub whose input failed (a feed task died after sending rows, a malformed row):
            # this epoch can never be completed, and the hub says why
            self._conn = None
            conn.close()
            raise FeedError(f"{self.node}: the feed of shard {part} of {self.qname_in!r} failed in epoch "
                            f"{self._conn_epochs + 1}: {msg.control().get('error', '')}; {self.rows_read} rows read "
                            f"so far")
        elif msg.type in (ch.TERMINATE, ch.ERROR):
            info = msg.control()
            logger.warning("%s: the feed task of partition %s stopped: %s", self.node, part,
                           info.get("error") or info.get("reason"))
            self._events.append(PARTITION_END)
        else:
            self._fail(conn, f"unexpected {msg.name} message from the feed task of partition {part}")

    def _end_connection(self) -> None:
        conn = self._conn
        self._conn = None
        if conn is None:
            return
        self.results.end_connection(conn)

    # ------------------------------------------------------------------------------------
    # feed tasks: accepting, greeting, refusing
    # ------------------------------------------------------------------------------------
    def _accept(self) -> None:
        """Wait for the next feed task (or the end of the feed) and greet it."""
        started = last_log = time.monotonic()
        while True:
            if self.feed_dir.ended(self.qname_in) or self._listener is None:
                self.end_feed()
                return
            sock = self._listener.accept(timeout=0.2)
            now = time.monotonic()
            if sock is None:
                if self.timeout is not None and now - started > self.timeout:
                    raise FeedTimeout(f"{self.node}: timed out after {self.timeout:g}s waiting for a Spark feed task "
                                      f"on data feed {self.qname_in!r} (is the driver calling cluster.train/"
                                      f"inference?)")
                if now - last_log > WAIT_LOG_SECS:
                    last_log = now
                    logger.info("%s: waiting for data on feed %r (%.0fs so far, %d rows read)", self.node,
                                self.qname_in, now - started, self.rows_read)
                continue
            try:
                conn = ch.Connection(sock, "the feed task")
                hello = conn.recv(timeout=HELLO_TIMEOUT, what="the HELLO of a new feed task").control()
            except Exception as exc:  # noqa: BLE001 - a bad peer must not stop the feed
                logger.warning("%s: dropped a feed connection: %s", self.node, exc)
                sock.close()
                continue
            conn.peer = f"the feed task of partition {hello.get('partition')}"
            reason = self._refusal(hello)
            if reason:
                self._reply(conn, ch.REJECT, {"reason": reason, "terminated": self.terminated})
                conn.close()
                if not self.terminated:
                    logger.error("%s: refused a feed task: %s", self.node, reason)
                continue
            if not self._reply(conn, ch.WELCOME, {"pid": os.getpid(), "node": self.node}):
                conn.close()
                continue
            self._conn, self._hello, self._conn_epochs = conn, hello, 0
            if hello.get("mode") == "inference":
                self.results.open(conn, int(hello.get("partition", -1)))
            logger.debug("%s: feeding partition %s of %r", self.node, hello.get("partition"), self.qname_in)
            return

    def _refusal(self, hello: dict) -> str | None:
        if hello.get("version") != ch.PROTOCOL_VERSION:
            return f"protocol version {hello.get('version')} (this DataFeed speaks {ch.PROTOCOL_VERSION})"
        if hello.get("qname") != self.qname_in:
            return f"feed for input {hello.get('qname')!r} reached the DataFeed of {self.qname_in!r}"
        if self.terminated:
            return "terminated"
        mode = hello.get("mode")
        if mode == "inference" and self.train_mode:
            return (f"cluster.inference() is feeding {self.node}, but its DataFeed({self.qname_in!r}) was created "
                    f"with train_mode=True: use train_mode=False to send results back")
        return None

    def _reply(self, conn: ch.Connection, mtype: int, obj: dict) -> bool:
        try:
            conn.send_control(mtype, obj, timeout=HELLO_TIMEOUT, what="the feed task to read our reply")
            return True
        except Exception as exc:  # noqa: BLE001
            logger.warning("%s: a feed task went away during its greeting: %s", self.node, exc)
            return False

    def _fail(self, conn: ch.Connection, message: str) -> None:
        try:
            conn.send_control(ch.ERROR, {"error": f"{self.node}: {message}\n{traceback.format_exc()}"},
                              timeout=5.0, what="the feed task to read ERROR")
        except Exception:  # noqa: BLE001
            pass
        raise FeedError(f"{self.node}: {message}")

    # ------------------------------------------------------------------------------------
    # the end: of the feed, or terminate()
    # ------------------------------------------------------------------------------------
    def end_feed(self) -> None:
        """No more data will come: later feed tasks find the 'ended' marker and do not connect."""
        if self.done:
            return
        self.done = True
        try:
            self.feed_dir.mark_ended(self.qname_in)
        except OSError:
            pass
        self.close_listener()
        logger.info("%s: data feed %r ended after %d rows", self.node, self.qname_in, self.rows_read)

    def terminate(self) -> None:
        """Stop this input: the current and all later feed tasks end without sending the rest."""
        if self.terminated:
            return
        self.terminated = True
        self.done = True
        self.feed_dir.mark_terminated(self.qname_in)
        conns = {id(conn): conn for conn in self.results.connections()}
        if self._conn is not None:
            conns[id(self._conn)] = self._conn
        for conn in conns.values():
            self._say_stop(conn, "terminate()")
        self._reject_backlog("terminated")
        self._events.clear()
        self.results.clear()
        self._conn = None
        self.close_listener()
        logger.info("%s: data feed %r terminated after %d rows", self.node, self.qname_in, self.rows_read)

    def close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _say_stop(self, conn: ch.Connection, reason: str) -> None:
        try:
            conn.send_control(ch.TERMINATE, {"reason": reason}, timeout=5.0, what="the feed task to read TERMINATE")
            conn.shutdown_write()
            conn.drain_until_eof(TERMINATE_DRAIN_SECS)
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        conn.close()

    def _reject_backlog(self, reason: str) -> None:
        if self._listener is None:
            return
        while True:
            sock = self._listener.accept(timeout=0)
            if sock is None:
                return
            try:
                conn = ch.Connection(sock, "a feed task")
                conn.recv(timeout=1.0, what="HELLO")
                conn.send_control(ch.REJECT, {"reason": reason, "terminated": True}, timeout=1.0, what="REJECT")
            except Exception:  # noqa: BLE001
                pass
            sock.close()
