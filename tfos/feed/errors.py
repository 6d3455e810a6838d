"""Errors raised by the feed (InputMode.SPARK) on either side of the channel."""

from __future__ import annotations


class FeedError(RuntimeError):
    """Feeding failed: the message says which node, partition and wait was involved."""


class FeedTimeout(FeedError, TimeoutError):
    """A blocking wait of the feed ran past its timeout; the message says what it waited for."""


class PeerGone(FeedError):
    """The other end of a feed channel closed or died while we needed it."""


class MalformedRowError(FeedError, ValueError):
    """A row cannot be fed: it does not match the kind, arity, shape or type of the rows before it."""

    def __init__(self, partition: int, offset: int, problem: str):
        super().__init__(f"malformed row in partition {partition}, row offset {offset}: {problem}")
        self.partition = partition
        self.offset = offset
        self.problem = problem

    def __reduce__(self):  # keep the fields through pickling (Spark ships task errors as text anyway)
        return (MalformedRowError, (self.partition, self.offset, self.problem))


class FeedTerminated(Exception):  # noqa: N818 - a signal, not an error
    """The TF side asked to stop feeding (``DataFeed.terminate()``) or ended its feed: stop quietly."""
