"""Rows in chunks: how many rows go into one Arrow chunk (:class:`ChunkSizer`) and the cutting
itself (:func:`iter_chunks`), shared by the shard map tasks, the inference tasks and the benchmarks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

DEFAULT_CHUNK_ROWS = 4096
DEFAULT_CHUNK_BYTES = 4 << 20
FIRST_CHUNK_ROWS = 64


class ChunkSizer:
    """Rows per chunk: at most ``chunk_rows`` and about ``chunk_bytes`` (learned from the data)."""

    def __init__(self, chunk_rows: int, chunk_bytes: int):
        self.max_rows, self.max_bytes = max(1, chunk_rows), max(1, chunk_bytes)
        self.rows = min(self.max_rows, FIRST_CHUNK_ROWS)

    def learn(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            per_row = max(1, batch.nbytes // batch.num_rows)
            self.rows = int(min(self.max_rows, max(1, self.max_bytes // per_row)))


def iter_chunks(rows: Iterable[Any], sizer: ChunkSizer) -> Iterator[tuple[int, list]]:
    """``(index of the chunk's first row, rows)`` of ``sizer.rows`` rows each (asked anew per chunk)."""
    chunk: list = []
    first = 0
    for j, row in enumerate(rows):
        if not chunk:
            first = j
        chunk.append(row)
        if len(chunk) >= sizer.rows:
            yield first, chunk
            chunk = []
    if chunk:
        yield first, chunk
