"""Inference results owed to the feed tasks: the rows handed out from each inference connection
that still await their results (:class:`PendingResults`), and sending results back in order."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from tfos.feed import arrow_codec as codec
from tfos.feed import channel as ch
from tfos.feed.errors import FeedError, FeedTimeout, PeerGone

logger = logging.getLogger("tfos.feed")


class Outstanding:
    """Rows handed out from one inference connection that still await their results."""

    __slots__ = ("conn", "partition", "rows", "finished")

    def __init__(self, conn: ch.Connection, partition: int):
        self.conn, self.partition, self.rows, self.finished = conn, partition, 0, False


class PendingResults:
    """The inference connections of one DataFeed, oldest first, with the rows each is owed results for.

    ``current`` is the connection being read (None while reading a training feed task); a
    finished connection stays open until all its results went back.
    """

    def __init__(self, node: str):
        self.node = node
        self.outstanding: deque[Outstanding] = deque()
        self.current: Outstanding | None = None
        self.seen = False  # an inference feed task connected (results are owed)

    def open(self, conn: ch.Connection, partition: int) -> None:
        """An inference feed task connected: the rows read from now on are owed results."""
        self.seen = True
        self.current = Outstanding(conn, partition)
        self.outstanding.append(self.current)

    def handed_out(self, rows: int) -> None:
        if self.current is not None:  # inference: these rows now await their results
            self.current.rows += rows

    @property
    def owed(self) -> bool:
        """Whether rows handed out (or being read) still await results."""
        return self.current is not None or bool(self.outstanding)

    def end_connection(self, conn: ch.Connection) -> None:
        """Everything of ``conn`` has been handed out: close it now, or once its results went back."""
        if self.current is None:  # a training connection: nothing owed
            conn.close()
            return
        current = self.current
        self.current = None
        if current.rows:
            current.finished = True  # closed once its results went back
        else:
            if current in self.outstanding:
                self.outstanding.remove(current)
            conn.close()

    def send(self, results: Any, timeout: float) -> None:
        """``DataFeed.batch_results``: one result per row handed out, in order, to the tasks owed them."""
        if not self.seen and not self.outstanding:
            logger.debug("batch_results() ignored: no inference feed is waiting for results")
            return
        results = codec.normalize_results(results)
        n = codec.results_length(results)
        start = 0
        self.retire_answered()
        while start < n:
            head = self.outstanding[0] if self.outstanding else None
            if head is None or head.rows == 0:
                raise FeedError(f"batch_results() got {n - start} more results than rows handed out by "
                                f"next_batch() on {self.node}")
            k = min(head.rows, n - start)
            payload = pickle_results(codec.results_slice(results, start, start + k))
            try:
                head.conn.send(ch.RESULTS, payload, timeout=timeout,
                               what=f"the feed task of partition {head.partition} to take its results")
            except (PeerGone, FeedTimeout) as exc:
                logger.warning("%s: could not return results of partition %d: %s", self.node, head.partition, exc)
            head.rows -= k
            start += k
            self.retire_answered()

    def retire_answered(self) -> None:
        """Close the connections of finished partitions whose results all went back."""
        while self.outstanding and self.outstanding[0].rows == 0 and self.outstanding[0] is not self.current:
            head = self.outstanding.popleft()
            if head.finished:
                head.conn.close()

    def connections(self) -> list[ch.Connection]:
        return [o.conn for o in self.outstanding]

    def clear(self) -> None:
        self.outstanding.clear()
        self.current = None


def pickle_results(results: Any) -> bytes:
    import pickle

    return pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL)
