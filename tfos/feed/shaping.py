"""Fed record batches -> what ``DataFeed`` hands out: :class:`BatchShaper` builds rows as the
feeder saw them, ``{tensor: ndarray}`` dicts by ``input_mapping``, or whole numpy batches
(an ndarray, a tuple of ndarrays, or a dict of named columns)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from tfos.feed import arrow_codec as codec
from tfos.feed.errors import FeedError


class BatchShaper:
    """The shapes of one DataFeed's batches, given its ``input_mapping`` (``node`` names it in errors)."""

    def __init__(self, node: str, input_mapping: dict[str, str] | list[str] | None = None):
        self.node = node
        if isinstance(input_mapping, dict):
            items = sorted(input_mapping.items())
            self.input_columns = [c for c, _ in items]
            self.input_tensors: list[str] | None = [t for _, t in items]
        elif input_mapping:
            self.input_columns = list(input_mapping)
            self.input_tensors = list(input_mapping)
        else:
            self.input_columns, self.input_tensors = [], None

    @staticmethod
    def rows(pieces: list[pa.RecordBatch]) -> list:
        """The rows of ``pieces`` as the feeder saw them."""
        rows: list = []
        for piece in pieces:
            rows.extend(codec.rows_from_batch(piece))
        return rows

    def column(self, pieces: list[pa.RecordBatch], key: str | int) -> np.ndarray:
        arrays = []
        for piece in pieces:
            schema = piece.schema
            if isinstance(key, int):
                idx = key
            else:
                idx = schema.get_field_index(key)
                if idx < 0:
                    raise FeedError(f"{self.node}: column {key!r} is not in the fed data (columns: {schema.names})")
            arrays.append(codec.column_to_numpy(piece.column(idx), schema.field(idx)))
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    def mapped(self, pieces: list[pa.RecordBatch]) -> dict[str, np.ndarray]:
        """``{tensor: ndarray}`` by ``input_mapping`` (positional rows in sorted column order)."""
        assert self.input_tensors is not None
        if not pieces:
            return {t: np.empty((0,)) for t in self.input_tensors}
        positional = codec.row_kind(pieces[0].schema) in ("tuple", "list")
        out = {}
        for i, (col, tensor) in enumerate(zip(self.input_columns, self.input_tensors, strict=False)):
            out[tensor] = self.column(pieces, i if positional else col)
        return out

    def structure(self, pieces: list[pa.RecordBatch]) -> Any:
        """One whole numpy batch: an ndarray, a tuple of ndarrays, or a dict (columns or ``input_mapping``)."""
        if self.input_tensors is not None:
            return self.mapped(pieces)
        schema = pieces[0].schema
        kind = codec.row_kind(schema)
        if kind in ("ndarray", "scalar", "object"):
            return self.column(pieces, 0)
        if kind in ("tuple", "list"):
            return tuple(self.column(pieces, i) for i in range(len(schema)))
        return {name: self.column(pieces, i) for i, name in enumerate(schema.names)}
