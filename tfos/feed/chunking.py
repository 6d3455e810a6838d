"""Rows in chunks: how many rows go into one Arrow chunk (:class:`ChunkSizer`) and the cutting
itself (:func:`iter_chunks`; :func:`encoded_chunks` cuts and encodes), shared by the shard map
tasks, the inference tasks and the benchmarks.

Why :func:`encoded_chunks` pauses Python's cyclic garbage collector: a chunk holds thousands of
freshly made rows (a tuple and a list per MNIST row, 8,192 tracked containers per 4,096-row
chunk), far above the collector's first threshold (700), so gathering and encoding one chunk
set off about ten young-generation collections and one older one, each walking every element
of every list still alive: 7-10 us per 784-int row, a quarter of an inference task's CPU. With
the collector paused from the first row of a chunk until its rows are released, the allocation
count rises and falls back (CPython counts frees too) and no collection runs; garbage cycles
made meanwhile are found by the next collection after the pause, so memory stays bounded by
one chunk.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

import pyarrow as pa

DEFAULT_CHUNK_ROWS = 4096
DEFAULT_CHUNK_BYTES = 4 << 20
FIRST_CHUNK_ROWS = 64


class ChunkSizer:
    """Rows per chunk: at most ``chunk_rows`` and about ``chunk_bytes`` (learned from the data).

    The first chunk has ``FIRST_CHUNK_ROWS`` rows and each next one up to 4x the last, so the
    first rows leave after a few milliseconds of reading instead of a whole chunk's worth.
    """

    def __init__(self, chunk_rows: int, chunk_bytes: int):
        self.max_rows, self.max_bytes = max(1, chunk_rows), max(1, chunk_bytes)
        self.rows = min(self.max_rows, FIRST_CHUNK_ROWS)

    def learn(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            per_row = max(1, batch.nbytes // batch.num_rows)
            self.rows = int(min(self.max_rows, max(1, self.max_bytes // per_row), 4 * self.rows))


def iter_chunks(rows: Iterable[Any], sizer: ChunkSizer) -> Iterator[tuple[int, list]]:
    """``(index of the chunk's first row, rows)`` of ``sizer.rows`` rows each (asked anew per chunk)."""
    it = iter(rows)
    first = 0
    while chunk := list(islice(it, sizer.rows)):
        yield first, chunk
        first += len(chunk)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside the block (as it was before, after it)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def encoded_chunks(rows: Iterable[Any], sizer: ChunkSizer,
                   encode: Callable[[list, int], pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``encode(rows, index of the first)`` of each chunk of ``sizer.rows`` rows, in order.

    Each chunk is gathered and encoded with the garbage collector paused (see the module doc),
    and its rows are released before the batch is yielded: the caller's work on the batch runs
    with the collector on. ``sizer`` learns from each batch.
    """
    it = iter(rows)
    first = 0
    while True:
        with gc_paused():
            chunk = list(islice(it, sizer.rows))
            if not chunk:
                return
            batch = encode(chunk, first)
            first += len(chunk)
            del chunk
        sizer.learn(batch)
        yield batch
