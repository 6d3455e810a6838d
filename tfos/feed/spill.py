"""A shard feed task's local copy of its shard: :class:`SpillFile` (one input's chunks on disk,
replayed once per epoch with the surplus dropped or the shortfall wrapped), the spill
directories (``tfos-feed-spill-<pid>-*`` under Spark's local dir) and :func:`reap_spills`,
which removes those of dead feed tasks."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from tfos.feed import arrow_codec as codec
from tfos.feed import channel as ch

logger = logging.getLogger("tfos.feed")


class SpillFile:
    """The chunks of one input of one shard, replayed once per epoch: held in memory up to
    ``memory_bytes`` in all, the rest on local disk (the file is made only when a chunk goes there)."""

    def __init__(self, directory: str, name: str, memory_bytes: int = 0):
        self.path = os.path.join(directory, name)
        self._f: Any = None  # opened by the first chunk that does not fit in memory
        self.chunks: list[tuple[int, int, int]] = []  # (offset in the file or -1 if held, length, rows)
        self.rows = 0
        self._size = 0
        self._memory_bytes = memory_bytes
        self._held: dict[int, Any] = {}  # chunk index -> payload, for the chunks held in memory
        self.held_bytes = 0
        self.disk_bytes = 0
        self._unflushed = False

    def append(self, payload: Any, rows: int) -> None:
        """Keep one chunk (an Arrow IPC stream); ``payload`` must not change afterwards."""
        if self.held_bytes + len(payload) <= self._memory_bytes:
            self._held[len(self.chunks)] = payload
            self.chunks.append((-1, len(payload), rows))
            self.held_bytes += len(payload)
        else:
            if self._f is None:
                self._f = open(self.path, "w+b")  # noqa: SIM115 - closed in close()
            self._f.write(payload)
            self._unflushed = True
            self.chunks.append((self._size, len(payload), rows))
            self._size += len(payload)
            self.disk_bytes += len(payload)
        self.rows += rows

    def finish(self) -> None:
        if self._unflushed:
            self._f.flush()
            self._unflushed = False

    def read(self, i: int) -> Any:
        """Chunk ``i`` as it was appended (an Arrow IPC stream)."""
        offset, length, _ = self.chunks[i]
        if offset < 0:
            if i not in self._held:
                raise ValueError(f"chunk {i} of {self.path} was released: it cannot be fed again")
            return self._held[i]
        self.finish()
        return os.pread(self._f.fileno(), length, offset)

    def release(self, i: int) -> None:
        """Free chunk ``i`` if it is held in memory (an input fed once needs no copy of what it fed)."""
        payload = self._held.pop(i, None)
        if payload is not None:
            self.held_bytes -= len(payload)

    def table(self, i: int) -> pa.Table:
        """Chunk ``i`` decoded."""
        return pa.Table.from_batches(codec.from_ipc(self.read(i)))

    def epoch(self, epoch: int, target: int) -> Iterator[tuple[Any, int]]:
        """(payload, rows) of one epoch of exactly ``target`` rows.

        With more rows than ``target`` the surplus is skipped, at a position that moves each
        epoch (so over the epochs every row is seen); with fewer, rows from the start of a
        moving window are fed again at the end (wrap).
        """
        self.finish()
        total = self.rows
        if target == total or total == 0:
            for i, (_, _, rows) in enumerate(self.chunks):
                if target:
                    yield self.read(i), rows
            return
        if target < total:
            drop = total - target
            start = (epoch * drop) % total
            skipped = [(start, min(total, start + drop))]
            if start + drop > total:
                skipped.append((0, start + drop - total))
            pos = 0
            for i, (_, _, rows) in enumerate(self.chunks):
                lo, hi = pos, pos + rows
                pos = hi
                cuts = [(max(a, lo), min(b, hi)) for a, b in skipped if a < hi and b > lo]
                if not cuts:
                    yield self.read(i), rows
                    continue
                table = self.table(i)
                keep, cursor = [], lo
                for a, b in sorted(cuts):
                    if a > cursor:
                        keep.append(table.slice(cursor - lo, a - cursor))
                    cursor = b
                if cursor < hi:
                    keep.append(table.slice(cursor - lo, hi - cursor))
                batches = [b for t in keep for b in t.to_batches() if b.num_rows]
                if batches:
                    yield codec.to_ipc(batches), sum(b.num_rows for b in batches)
            return
        # wrap: everything, then (target - total) rows again from a moving start
        for i, (_, _, rows) in enumerate(self.chunks):
            yield self.read(i), rows
        extra = target - total
        start = (epoch * extra) % total
        while extra > 0:
            pos = 0
            for i, (_, _, rows) in enumerate(self.chunks):
                lo, hi = pos, pos + rows
                pos = hi
                if extra <= 0 or hi <= start:
                    continue
                a = max(start, lo)
                take = min(hi - a, extra)
                piece = self.table(i).slice(a - lo, take)
                yield codec.to_ipc(piece.to_batches()), take
                extra -= take
                start = a + take
            start = 0

    def close(self) -> None:
        self._held.clear()
        self.held_bytes = 0
        if self._f is not None:
            self._f.close()


SPILL_PREFIX = "tfos-feed-spill-"
_SPILL_NAME = re.compile(rf"^{SPILL_PREFIX}(\d+)-")


def _spill_base() -> str:
    """Where spill directories go: Spark's first local dir (``SPARK_LOCAL_DIRS``), else the system temp dir."""
    local = (os.environ.get("SPARK_LOCAL_DIRS") or "").split(",")[0]
    return local if local and os.path.isdir(local) else tempfile.gettempdir()


def spill_dir() -> str:
    """A new private spill directory, named after this process (``tfos-feed-spill-<pid>-*``)."""
    return tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-", dir=_spill_base())


def reap_spills(base: str | None = None) -> list[str]:
    """Remove the spill directories in ``base`` left by feed tasks whose process is gone (killed
    tasks skip their ``finally``); returns the removed paths."""
    base = base or _spill_base()
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        m = _SPILL_NAME.match(name)
        if not m or ch.pid_alive(int(m.group(1))):
            continue
        path = os.path.join(base, name)
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        logger.info("removed %d spill directories of dead feed tasks: %s", len(removed), removed)
    return removed
