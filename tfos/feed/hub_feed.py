"""One named input of one ``train()`` call, as a node's feed hub gathers and feeds it: :class:`HubFeed`.

The feed tasks of the input's partitions connect to the hub (:mod:`tfos.feed.hub`) and send
this node's shard of each partition, then the partition's row count. :meth:`HubFeed.receive`
(one thread per feed task) appends every chunk to a spill file on local disk at once, so no
feed task ever waits for TensorFlow. The feeder thread hands the node its rows over the
node's own data feed channel, as one local feed task (the DataFeed sees an ordinary feed):

- the first epoch as the rows arrive, holding back only what
  :func:`~tfos.feed.rotation.epoch_allowance` says the other workers might not get; once every
  partition has ended the hub knows every shard's size and so the exact rows per epoch;
- every later epoch from the spill file (:meth:`SpillFile.epoch`), the input is not read again.

A feed task that goes away after it sent rows fails the feed (a retry would send those rows
twice and break exact epochs); one that sent nothing may be retried. ``terminate()`` on the
node (or its main finishing) stops the feed: every feed task still sending is told to stop
and later ones are turned away, so Spark computes no more of the input for this node. The hub
reports rows, its state and its final statistics to the driver's progress server.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from itertools import islice
from typing import Any

from tfos.feed import arrow_codec as codec
from tfos.feed import channel as ch
from tfos.feed.errors import FeedError, FeedTerminated, FeedTimeout, PeerGone
from tfos.feed.progress import ProgressReporter, report_error
from tfos.feed.rotation import epoch_allowance, rows_for_shard, shard_sizes
from tfos.feed.spill import SpillFile, spill_dir
from tfos.feed.targets import NodeTarget, open_feed

logger = logging.getLogger("tfos.feed")

WAIT_SLICE = 0.5
# The received chunks a hub holds in memory, per input, before it spills the rest to local disk. An
# input fed for one epoch frees each chunk once the node has it, so this bounds what the node may
# fall behind its feed tasks; one fed again holds its first chunks for every epoch.
HELD_BYTES = 32 << 20


class HubFeed:
    """One input of one feed (``train()`` call) at one node's hub; see the module doc."""

    def __init__(self, plan: dict[str, Any], target: NodeTarget):
        self.feed_id = str(plan["feed"])
        self.qname = str(plan["qname"])
        self.shard = int(plan["shard"])
        self.num_shards = int(plan["shards"])
        # None until the driver says (a DataFrame's partitions are known once its job ran)
        self.num_partitions: int | None = int(plan["partitions"]) or None
        self.epochs = int(plan["epochs"])
        self.remainder = str(plan.get("remainder", "drop"))
        self.end_feed = bool(plan.get("end_feed"))
        self.timeout = float(plan.get("feed_timeout") or 600.0)
        progress = plan.get("progress")
        self.progress = tuple(progress) if progress else None
        self.target = target
        self.node = target.name
        self.what = f"shard {self.shard} of input {self.qname!r}"
        self.ident = f"{self.feed_id}:{self.qname}"  # the driver's name for this hub's reports of this input
        self._changed = threading.Condition()
        self._dir = spill_dir()
        self.spill = SpillFile(self._dir, "input.arrows", memory_bytes=HELD_BYTES)
        self._fed_once = self.epochs == 1 and self.remainder != "wrap"  # no chunk is read twice
        self.received: dict[int, int] = {}  # partition -> rows of this shard received
        self.ended: dict[int, int] = {}  # partition -> its row count over all shards
        self._sending: set[int] = set()  # partitions whose feed task is connected now
        self._senders: set[ch.Connection] = set()
        self._last_change = time.monotonic()
        self.error: str | None = None
        self.stopped: str | None = None  # why the feed stopped early (terminate(), main finished)
        self.cancelled: str | None = None  # why the driver gave the feed up (its job failed)
        self.state = "feeding"
        self.rows_fed = 0  # rows handed to the node so far, all epochs
        self.reporter = ProgressReporter(self.progress, {"feed": self.ident, "shard": self.shard,
                                                         "node": self.node}) if self.progress else None
        self._feeder = threading.Thread(target=self._feed, name=f"tfos-hub-feed-{self.qname}", daemon=True)
        self._feeder.start()

    # ------------------------------------------------------------------------------------
    # the feed tasks' side
    # ------------------------------------------------------------------------------------
    def refusal(self, partition: int) -> dict[str, Any] | None:
        """Why a feed task of ``partition`` may not send (REJECT fields), or None."""
        try:  # terminate() marks the feed directory at once: turn the task away before it sends a row
            self.target.check(self.qname)
        except FeedTerminated as exc:
            self.stop(str(exc))
        except FeedError:
            pass  # the node failed: its feeder reports it
        with self._changed:
            if self.stopped or self.state == "terminated":
                return {"reason": f"{self.node} stopped reading {self.qname!r}: {self.stopped}", "terminated": True}
            if self.state != "feeding" and not self.error:
                return {"reason": f"the feed of {self.what} to {self.node} has ended", "duplicate": True}
            if self.error:
                return {"reason": f"the feed of {self.what} to {self.node} failed: {self.error}"}
            if partition < 0 or (self.num_partitions is not None and partition >= self.num_partitions):
                return {"reason": f"partition {partition} is outside the input's {self.num_partitions} partitions"}
            if partition in self.ended or partition in self._sending:
                return {"reason": f"partition {partition} was already fed to {self.node} (a speculative or "
                                  f"repeated task attempt)", "duplicate": True}
            return None

    def receive(self, conn: ch.Connection, partition: int) -> None:
        """Take one feed task's rows of ``partition`` (in the connection's thread) until its end mark."""
        with self._changed:
            self._sending.add(partition)
            self._senders.add(conn)
            self.received.setdefault(partition, 0)
        ended = False
        try:
            while True:
                msg = conn.recv(timeout=self.timeout, what=f"the next rows of partition {partition} of "
                                                           f"{self.qname!r} from its feed task")
                if msg.type == ch.DATA:
                    rows = sum(b.num_rows for b in codec.from_ipc(msg.payload))
                    with self._changed:
                        if self.stopped or self.error or self.state != "feeding":
                            continue  # the feed ended: the rest of the partition is not wanted
                        self.spill.append(msg.payload, rows)
                        self.spill.finish()
                        self.received[partition] += rows
                        self._touch()
                elif msg.type == ch.END_PARTITION:
                    total = int(msg.control().get("rows", -1))
                    expected = rows_for_shard(total, partition % self.num_shards, self.shard, self.num_shards)
                    with self._changed:
                        got = self.received.get(partition, 0)
                        if got != expected and not self.stopped:
                            self._fail_locked(f"partition {partition} of {self.qname!r} has {total} rows, so "
                                              f"{expected} for {self.what}, but its feed task sent {got}")
                            return
                        self.ended[partition] = total
                        ended = True
                        self._touch()
                    conn.send_control(ch.END_PARTITION, {}, timeout=self.timeout, what="the feed task to read the end")
                    return
                elif msg.type == ch.ERROR:
                    with self._changed:
                        self._fail_locked(str(msg.control().get("error", "the feed task failed")))
                    return
                else:
                    raise FeedError(f"unexpected {msg.name} from the feed task of partition {partition}")
        except (FeedError, OSError) as exc:
            with self._changed:
                if self.stopped or self.error or ended:
                    return
                got = self.received.get(partition, 0)
                if got:
                    self._fail_locked(f"the feed task of partition {partition} of {self.qname!r} went away after "
                                      f"sending {got} rows of {self.what} ({exc}); a retry would feed them again, "
                                      f"so exact epochs cannot be kept")
                else:  # nothing of it arrived: a retried task may send the partition
                    self.received.pop(partition, None)
                    logger.info("%s: the feed task of partition %d of %r went away before sending rows: %s",
                                self.node, partition, self.qname, exc)
        finally:
            with self._changed:
                self._sending.discard(partition)
                self._senders.discard(conn)
            conn.close()

    def stop(self, reason: str) -> None:
        """The node stopped reading (``terminate()``, its main finished): end the feed, turn the feed tasks away."""
        with self._changed:
            if self.state == "feeding" and not self.stopped:
                self.stopped = reason
                self._changed.notify_all()

    def join(self, timeout: float) -> None:
        """Wait until the feeder reported the feed's end to the driver."""
        self._feeder.join(timeout)

    def job_ended(self, num_partitions: int, partitions: list[int]) -> None:
        """The driver says the input had ``num_partitions`` partitions and no feed task ran for
        ``partitions`` (empty): count them ended with no rows."""
        with self._changed:
            if self.num_partitions is None:
                self.num_partitions = num_partitions
            for p in partitions:
                if p not in self.ended and not self.received.get(p):
                    self.ended[p] = 0
            self._touch()

    def cancel(self, reason: str) -> None:
        """The driver gave this feed up (its Spark job failed or was cancelled): stop feeding."""
        with self._changed:
            if self.state == "feeding" and not self.cancelled:
                self.cancelled = reason or "cancelled by the driver"
                self._changed.notify_all()

    def _touch(self) -> None:
        self._last_change = time.monotonic()
        self._changed.notify_all()

    def _fail_locked(self, message: str) -> None:
        if self.error is None:
            self.error = message
            logger.error("%s: %s", self.node, message)
            self._changed.notify_all()

    # ------------------------------------------------------------------------------------
    # the node's side
    # ------------------------------------------------------------------------------------
    def _feed(self) -> None:
        conn = None
        fed = 0
        first_at = None
        exact = None
        data_done = False  # every epoch's rows and end mark are in the node's socket
        try:
            conn = open_feed(self.target, self.qname, mode="train", partition=self.shard, feed_timeout=self.timeout,
                             extra={"epochs": self.epochs, "feed": self.feed_id, "hub": True})
            slow = f"{self.node} to read more of {self.what}: it stopped consuming; raise feed_timeout if a step " \
                   f"can take longer"

            def send(payload: Any, rows: int) -> None:
                nonlocal fed, first_at
                if self.cancelled:
                    raise _Cancelled(self.cancelled)
                conn.send(ch.DATA, payload, timeout=self.timeout, what=slow)
                first_at = first_at or time.time()
                fed += rows
                self.rows_fed = fed
                if self.reporter is not None:
                    self.reporter.add(self.qname, rows)

            exact = self._first_epoch(send)
            conn.send_control(ch.END_EPOCH, {"epoch": 0, "rows": exact}, timeout=self.timeout, what=slow)
            for epoch in range(1, self.epochs):
                for payload, rows in self.spill.epoch(epoch, exact):
                    send(payload, rows)
                conn.send_control(ch.END_EPOCH, {"epoch": epoch, "rows": exact}, timeout=self.timeout, what=slow)
            data_done = True
            conn.send_control(ch.END_FEED if self.end_feed else ch.END_PARTITION, {"rows": fed},
                              timeout=self.timeout, what=f"{self.node} to read the end of {self.what}")
            self._finish("done", fed, exact, first_at)
        except _Cancelled as exc:
            if fed == 0 and conn is not None:  # the node got nothing: it can be fed again, by a later train()
                _tell_end(conn)
                logger.info("%s: the driver cancelled the feed of %s before any row: %s", self.node, self.what, exc)
                self._finish("cancelled", fed, exact, first_at)
            else:  # the node is inside an epoch that can never be completed: its DataFeed fails
                logger.error("%s: the driver cancelled the feed of %s after %d rows: %s", self.node, self.what,
                             fed, exc)
                _tell_error(conn, f"the driver cancelled the feed after {fed} rows: {exc}")
                self._finish("failed", fed, exact, first_at)
        except BaseException as exc:  # noqa: BLE001 - every end is reported to the driver
            err = exc if isinstance(exc, FeedTerminated) else self.target.explain(exc, self.qname, self.what, conn)
            if data_done and isinstance(err, FeedTerminated | PeerGone):  # it read everything, then left
                self._finish("done", fed, exact, first_at)
            elif isinstance(err, FeedTerminated):
                logger.info("%s: stopped feeding %s after %d rows: %s", self.node, self.what, fed, err)
                self._finish("terminated", fed, exact, first_at, reason=str(err))
            else:
                message = f"{type(err).__name__}: the feed of {self.what} to {self.node} failed: {err}"
                if self.error and self.error not in message:
                    message = f"FeedError: {self.node}: {self.error}"
                with self._changed:
                    self._fail_locked(message)
                report_error(self.progress, {"feed": self.ident, "shard": self.shard}, message)
                if fed == 0 and self.error and conn is not None:  # the input failed before any row: the node
                    _tell_end(conn)                                # stays ready for another feed
                else:
                    _tell_error(conn, message)
                self._finish("failed", fed, exact, first_at)
        finally:
            if conn is not None:
                conn.close()

    def _first_epoch(self, send: Callable[[Any, int], None]) -> int:
        """Feed the first epoch as the rows arrive; returns the rows per epoch once known."""
        sent_chunks = 0
        fed = 0
        while True:
            with self._changed:
                exact, allowed, chunks = self._wait_for_rows(sent_chunks, fed)
            for _, _, rows in chunks:
                if exact is not None and fed + rows > exact:
                    if exact > fed:  # the last rows of the epoch: cut the chunk
                        piece = self.spill.table(sent_chunks).slice(0, exact - fed)
                        send(codec.to_ipc(piece.to_batches()), exact - fed)
                        fed = exact
                    break
                if exact is None and fed + rows > allowed:
                    break
                send(self.spill.read(sent_chunks), rows)
                if self._fed_once:
                    with self._changed:
                        self.spill.release(sent_chunks)
                fed += rows
                sent_chunks += 1
            if exact is not None and (fed >= exact or sent_chunks >= len(self.spill.chunks)):
                break
        if exact is not None and fed < exact:  # remainder="wrap": rows from the start of the spill again
            for payload, rows in islice(self.spill.epoch(0, exact), len(self.spill.chunks), None):
                send(payload, rows)
        self._log_plan(exact)
        return exact

    def _wait_for_rows(self, sent_chunks: int, fed: int) -> tuple[int | None, int, list[tuple[int, int, int]]]:
        """(exact, allowed, chunks not sent yet) as soon as one can be sent or the epoch's size is known."""
        while True:
            if self.error:
                raise FeedError(f"{self.node}: {self.error}")
            if self.stopped:
                raise FeedTerminated(self.stopped)
            if self.cancelled:
                raise _Cancelled(self.cancelled)
            exact, allowed = epoch_allowance(self.received, self.ended, self.num_partitions, self.num_shards,
                                             self.remainder)
            chunks = self.spill.chunks[sent_chunks:]
            if exact is not None or (chunks and fed + chunks[0][2] <= allowed):
                return exact, allowed, list(chunks)
            self._changed.wait(WAIT_SLICE)
            self.target.check(self.qname)  # the node terminated the input, finished or died meanwhile
            waited = time.monotonic() - self._last_change
            if waited > self.timeout:
                missing = sorted(set(range(self.num_partitions or 0)) - set(self.ended))
                raise FeedTimeout(f"{self.node} waited {waited:.0f}s (feed_timeout) for more of {self.what}: "
                                  f"partitions {_brief(missing)} have not been fully sent (their feed tasks did not "
                                  f"start or stalled: are executors free to run them?)")

    def _log_plan(self, exact: int) -> None:
        sizes = shard_sizes(self.ended, self.num_shards)
        own = sizes[self.shard]
        left = own - exact
        logger.info("%s: %s has %d rows; %d rows per epoch%s", self.node, self.what, own, exact,
                    f" ({left} left out of each epoch, remainder='drop')" if left > 0 else
                    f" ({-left} fed twice per epoch, remainder='wrap')" if left < 0 else "")
        if self.reporter is not None:
            self.reporter.info(self.qname, {"shard_sizes": sizes, "rows_per_epoch": exact})

    def _finish(self, state: str, fed: int, exact: int | None, first_at: float | None, reason: str = "") -> None:
        with self._changed:
            self.state = state
            if state == "terminated" and not self.stopped:
                self.stopped = reason or "terminated"
            senders = list(self._senders)
            self._changed.notify_all()
        for conn in senders:  # feed tasks still sending: stop them (they end quietly)
            try:
                conn.send_control(ch.TERMINATE, {"reason": self.stopped or state}, timeout=2.0,
                                  what="the feed task to read TERMINATE")
            except Exception:  # noqa: BLE001 - it may be gone already
                pass
        if self.reporter is not None:
            info = {"state": state, "rows": fed, "rows_per_epoch": exact, "first_batch_at": first_at,
                    "rows_in_shard": self.spill.rows, "spilled_bytes": self.spill.disk_bytes}
            if self.ended and len(self.ended) >= self.num_partitions:
                info["shard_sizes"] = shard_sizes(self.ended, self.num_shards)
            self.reporter.info(self.qname, info)
            self.reporter.state(self.qname, state)
            self.reporter.close()
        self.close()

    def close(self) -> None:
        """Remove the spill (once no feed task writes to it any more)."""
        deadline = time.monotonic() + 5.0
        with self._changed:
            while self._sending and time.monotonic() < deadline:
                self._changed.wait(0.1)
            self.spill.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _tell_end(conn: ch.Connection) -> None:
    """End this feed at the node's DataFeed without a row (best effort): it waits for the next feed."""
    try:
        conn.send_control(ch.END_PARTITION, {"rows": 0}, timeout=5.0, what="the DataFeed to read the end")
    except Exception:  # noqa: BLE001 - it may be gone
        pass


def _tell_error(conn: ch.Connection | None, message: str) -> None:
    """Tell the node's DataFeed why its feed failed (best effort): its read raises with these words."""
    if conn is None:
        return
    try:
        conn.send_control(ch.ERROR, {"error": message[:60_000]}, timeout=5.0, what="the DataFeed to read ERROR")
    except Exception:  # noqa: BLE001 - it may be gone
        pass


class _Cancelled(Exception):  # noqa: N818 - a signal
    pass


def _brief(items: list[int], limit: int = 10) -> str:
    return ", ".join(map(str, items[:limit])) + (f" and {len(items) - limit} more" if len(items) > limit else "")

