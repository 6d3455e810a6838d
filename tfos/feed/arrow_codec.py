"""Rows <-> Arrow record batches for the feed, both directions.

Encoding (Spark task side, :class:`RowEncoder`): a chunk of RDD rows becomes one Arrow record
batch. The first row of a partition fixes the *row kind* and the fields:

==========  =======================================  ======================================
row kind    rows                                     columns
==========  =======================================  ======================================
tuple/list  ``(a, b, ...)`` / ``[a, b, ...]``        ``_0, _1, ...``
row         ``pyspark.sql.Row``                      the Row's field names
dict        ``{"x": ..., "y": ...}``                 the first row's keys
ndarray     a numpy array per row                    ``_0`` (a tensor column)
scalar      int, float, bool, str, bytes, numpy      ``_0``
object      anything else                            ``_0`` (pickled)
==========  =======================================  ======================================

Each column gets a codec from the partition's first chunk: plain Arrow (numbers, strings,
bytes, lists, structs...), a fixed-shape tensor (numpy arrays of one shape and numeric dtype,
stored as ``arrow.fixed_shape_tensor``, read back with no per-row work), or pickled bytes for
values Arrow cannot represent (custom objects, ragged n-d arrays, huge ints): slower, but it
works. A later row that does not fit its column (another kind, arity, key set, shape, or a type
that cannot be widened, e.g. a string among ints) raises :class:`MalformedRowError` naming the
partition index and the row offset. Integer columns widen to float and all-null columns take
the first real type (the TF side copes with chunks of either type).

Decoding (TF side): :func:`rows_from_batch` rebuilds rows of the original kind (tuples stay
tuples, dicts dicts, Rows Rows, numpy arrays numpy arrays; nested tuples come back as lists),
:func:`column_to_numpy` turns a column into one numpy array for whole-batch consumers.

DataFrames are never encoded here: ``mapInArrow`` batches are fed as they are (row kind
``row``).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from tfos.feed.errors import FeedError, MalformedRowError

ROW_KIND_KEY = b"tfos.row_kind"
ENCODING_KEY = b"tfos.encoding"
PICKLE = b"pickle"
BOOL_TENSOR = b"bool"  # Arrow tensors cannot hold bool: stored as uint8 0/1, viewed back as bool
DTYPE_KEY = b"tfos.dtype"  # dense integer lists stored narrower than their values' dtype: that dtype
KINDS = ("tuple", "list", "row", "dict", "ndarray", "scalar", "object")
_SCALAR_TYPES = (bool, int, float, str, bytes, np.generic)
_NUMERIC_KINDS = "biuf"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _row_kind(row: Any) -> str:
    if isinstance(row, tuple):
        return "row" if hasattr(row, "__fields__") else "tuple"
    if isinstance(row, list):
        return "list"
    if isinstance(row, dict):
        return "dict"
    if isinstance(row, np.ndarray):
        return "ndarray"
    if row is None or isinstance(row, _SCALAR_TYPES):
        return "scalar"
    return "object"


def _describe(kind: str, names: list[str]) -> str:
    if kind in ("tuple", "list"):
        return f"a {kind} of {len(names)} fields"
    if kind in ("row", "dict"):
        return f"a {kind} with fields {names}"
    return f"a {kind} row"


# ---------------------------------------------------------------------------------------------
# column codecs
# ---------------------------------------------------------------------------------------------
class _ColumnCodec:
    """How one column is stored; fixed by the first chunk of a partition, widened where safe."""

    def __init__(self, name: str):
        self.name = name
        self.mode: str | None = None  # "arrow" | "tensor" | "pickle" | "dense"; None until known
        self.type: pa.DataType | None = None
        self.shape: tuple[int, ...] = ()
        self.dtype: np.dtype | None = None
        self._chunk_field: pa.Field | None = None  # "dense": the field of the chunk just encoded

    def field(self) -> pa.Field:
        if self.mode == "dense" and self._chunk_field is not None:
            return self._chunk_field
        if self.mode == "pickle":
            return pa.field(self.name, pa.binary(), metadata={ENCODING_KEY: PICKLE})
        if self.mode == "tensor" and self.dtype == np.bool_:
            return pa.field(self.name, self.type, metadata={ENCODING_KEY: BOOL_TENSOR})
        return pa.field(self.name, self.type)

    def encode(self, values: Sequence[Any], err: _Locator) -> pa.Array:
        if self.mode is None or (self.mode == "arrow" and pa.types.is_null(self.type)):
            return self._first(values, err)
        if self.mode == "pickle":
            return _pickled(values)
        if self.mode == "tensor":
            return self._tensor(values, err)
        if self.mode == "dense":
            return self._dense(values, err)
        return self._arrow(values, err)

    # first chunk: choose the codec
    def _first(self, values: Sequence[Any], err: _Locator) -> pa.Array:
        sample = next((v for v in values if v is not None), None)
        if sample is None:
            self.mode, self.type = "arrow", pa.null()
            return pa.nulls(len(values))
        if isinstance(sample, np.ndarray) and sample.ndim >= 1 and sample.dtype.kind in _NUMERIC_KINDS:
            if all(type(v) is np.ndarray and v.shape == sample.shape for v in values):
                self.mode, self.shape, self.dtype = "tensor", sample.shape, sample.dtype
                storage = np.dtype(np.uint8) if sample.dtype == np.bool_ else sample.dtype
                self.type = pa.fixed_shape_tensor(pa.from_numpy_dtype(storage), list(sample.shape))
                return self._tensor(values, err)
            if not (sample.ndim == 1 and all(v is None or (isinstance(v, np.ndarray) and v.ndim == 1)
                                             for v in values)):
                self.mode = "pickle"
                return _pickled(values)
        if type(sample) is list and sample and type(sample[0]) in (int, float, bool):
            dense = _dense_numbers(values)
            if dense is not None:
                self.mode = "dense"
                self.type = pa.list_(pa.from_numpy_dtype(dense[1]))
                return self._pack_dense(*dense)
        try:
            arr = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            try:
                typ = pa.array([sample]).type
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                self.mode = "pickle"
                return _pickled(values)
            err.raise_first_misfit(self.name, values, typ)
            raise  # not reached
        self.mode, self.type = "arrow", arr.type
        return arr

    def _arrow(self, values: Sequence[Any], err: _Locator) -> pa.Array:
        # infer, then compare: pa.array(values, type=int64) would silently truncate 1.5 to 1
        try:
            arr = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            err.raise_first_misfit(self.name, values, self.type)
            raise
        if arr.type == self.type:
            return arr
        if pa.types.is_null(arr.type):
            return pa.nulls(len(arr), self.type)
        unified = _unify(self.type, arr.type)
        if unified is None:
            err.raise_first_misfit(self.name, values, self.type)
        if unified != arr.type:
            arr = arr.cast(unified)
        self.type = unified  # widened (e.g. int64 -> double); the TF side handles both
        return arr

    def _dense(self, values: Sequence[Any], err: _Locator) -> pa.Array:
        """Lists of numbers: one dense chunk where they allow it, else the general path."""
        dense = _dense_numbers(values)
        if dense is not None:
            unified = _unify(self.type, pa.list_(pa.from_numpy_dtype(dense[1])))
            if unified is not None:
                self.type = unified
                return self._pack_dense(*dense)
        self._chunk_field = None
        self.mode = "arrow"  # ragged, nulls, or another type: from now on like any Arrow column
        try:
            return self._arrow(values, err)
        finally:
            if self.mode == "arrow" and pa.types.is_list(self.type):
                self.mode = "dense"  # later chunks may be dense again

    def _pack_dense(self, dense: np.ndarray, logical: np.dtype) -> pa.Array:
        """A (rows, width) array as a fixed-size list, integers stored in the narrowest type that
        holds them; ``logical`` is the dtype the values have as numbers (restored on reading)."""
        rows, width = dense.shape
        meta = None
        if dense.dtype.kind in "iu" and dense.size:
            narrow = np.result_type(np.min_scalar_type(dense.min()), np.min_scalar_type(dense.max()))
            if narrow.itemsize < dense.dtype.itemsize:
                dense = dense.astype(narrow)
            if dense.dtype != logical:
                meta = {DTYPE_KEY: logical.str.encode()}
        storage = np.uint8 if dense.dtype == np.bool_ else dense.dtype
        flat = pa.array(np.ascontiguousarray(dense).reshape(-1).view(storage))
        if dense.dtype == np.bool_:
            flat = flat.cast(pa.bool_())
        arr = pa.FixedSizeListArray.from_arrays(flat, width)
        self._chunk_field = pa.field(self.name, arr.type, metadata=meta)
        return arr

    def _tensor(self, values: Sequence[Any], err: _Locator) -> pa.Array:
        dtype = self.dtype
        for i, v in enumerate(values):
            if type(v) is not np.ndarray or v.shape != self.shape:
                what = f"array of shape {v.shape}" if isinstance(v, np.ndarray) else type(v).__name__
                err.raise_at(i, f"field {self.name!r}: expected a numpy array of shape {self.shape} like the "
                                f"rows before, got {what}")
            if v.dtype != dtype and not np.can_cast(v.dtype, dtype, "same_kind"):
                err.raise_at(i, f"field {self.name!r}: expected dtype {dtype} like the rows before, got {v.dtype}")
        stacked = np.ascontiguousarray(np.stack(values).astype(dtype, copy=False))
        if dtype == np.bool_:
            stacked = stacked.view(np.uint8)
        return pa.FixedShapeTensorArray.from_numpy_ndarray(stacked)


def _dense_numbers(values: Sequence[Any]) -> tuple[np.ndarray, np.dtype] | None:
    """``values`` (Python lists of numbers, all of one length) as one 2-D numpy array and the
    dtype numpy gives those numbers (the array may be stored narrower); else None."""
    if not values or not all(type(v) is list for v in values):
        return None
    small = _small_ints(values)
    if small is not None:
        return small, np.dtype(np.int64)
    try:
        dense = np.array(values)
    except (ValueError, TypeError, OverflowError):
        return None
    if dense.ndim != 2 or dense.dtype.kind not in "biuf":
        return None
    return dense, dense.dtype


def _small_ints(values: Sequence[list]) -> np.ndarray | None:
    """Equal-length lists of ints in 0..255 (pixels, small codes) as a (rows, width) uint8 array,
    made by ``bytes()`` in C, several times faster than ``np.array`` infers and converts them. None
    when they are not all such lists (a float, bool-only row start, larger int...)."""
    first = values[0]
    if not first or type(first[0]) is not int:
        return None
    width = len(first)
    if any(len(v) != width for v in values):
        return None
    try:
        blob = b"".join(map(bytes, values))
    except (TypeError, ValueError):  # a float or other non-int, or an int outside 0..255
        return None
    return np.frombuffer(blob, dtype=np.uint8).reshape(len(values), width)


def _unify(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    if a == b:
        return a
    try:
        schema = pa.unify_schemas([pa.schema([pa.field("x", a)]), pa.schema([pa.field("x", b)])],
                                  promote_options="permissive")
    except (pa.ArrowException, TypeError):
        return None
    unified = schema.field("x").type
    # permissive promotion turns int + string into string etc.; accept numeric widening only
    if pa.types.is_string(unified) and not (pa.types.is_string(a) and pa.types.is_string(b)):
        return None
    return unified


def _pickled(values: Sequence[Any]) -> pa.Array:
    return pa.array([pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL) for v in values], type=pa.binary())


class _Locator:
    """Turns a position in a chunk into the partition index and row offset of the error."""

    def __init__(self, partition: int, first_offset: int, stride: int):
        self.partition, self.first_offset, self.stride = partition, first_offset, stride

    def offset(self, i: int) -> int:
        return self.first_offset + i * self.stride

    def raise_at(self, i: int, problem: str) -> None:
        raise MalformedRowError(self.partition, self.offset(i), problem)

    def raise_first_misfit(self, name: str, values: Sequence[Any], typ: pa.DataType) -> None:
        for i, v in enumerate(values):
            if v is None:
                continue
            try:
                fits = _unify(typ, pa.array([v]).type) is not None
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                fits = False
            if not fits:
                self.raise_at(i, f"field {name!r}: expected {typ} like the rows before, got "
                                 f"{type(v).__name__} {_short(v)}")
        raise MalformedRowError(self.partition, self.offset(0),
                                f"field {name!r}: values of this chunk do not fit one Arrow type (expected {typ})")


# ---------------------------------------------------------------------------------------------
# encoder
# ---------------------------------------------------------------------------------------------
class RowEncoder:
    """Encodes chunks of the rows of one partition into Arrow record batches (see module doc)."""

    def __init__(self, partition: int):
        self.partition = partition
        self.kind: str | None = None
        self.row_type: type | None = None
        self.names: list[str] = []
        self.codecs: list[_ColumnCodec] = []

    def _establish(self, row: Any) -> None:
        kind = _row_kind(row)
        self.kind, self.row_type = kind, type(row)
        if kind == "row":
            self.names = list(row.__fields__)
        elif kind in ("tuple", "list"):
            self.names = [f"_{i}" for i in range(len(row))]
        elif kind == "dict":
            self.names = [str(k) for k in row]
            self._keys = list(row)
        else:
            self.names = ["_0"]
        self.codecs = [_ColumnCodec(n) for n in self.names]
        if kind == "object":
            self.codecs[0].mode = "pickle"

    def _columns(self, rows: Sequence[Any], err: _Locator) -> list[Sequence[Any]]:
        kind, n = self.kind, len(self.names)
        if kind in ("tuple", "list", "row"):
            row_type = self.row_type
            if not all(type(r) is row_type and len(r) == n for r in rows):
                for i, r in enumerate(rows):
                    if _row_kind(r) != kind or len(r) != n:
                        got = f"a {_row_kind(r)} of {len(r)} fields" if isinstance(r, (tuple, list)) else \
                            f"{type(r).__name__} {_short(r)}"
                        err.raise_at(i, f"expected {_describe(kind, self.names)} like the rows before, got {got}")
            if kind == "row":
                for i, r in enumerate(rows):
                    if list(r.__fields__) != self.names:
                        err.raise_at(i, f"expected a Row with fields {self.names}, got {list(r.__fields__)}")
            return list(zip(*rows, strict=False)) if rows else [[] for _ in range(n)]
        if kind == "dict":
            keys = self._keys
            for i, r in enumerate(rows):
                if not isinstance(r, dict) or len(r) != n or any(k not in r for k in keys):
                    got = f"keys {list(r)}" if isinstance(r, dict) else f"{type(r).__name__} {_short(r)}"
                    err.raise_at(i, f"expected a dict with keys {keys} like the rows before, got {got}")
            return [[r[k] for r in rows] for k in keys]
        if kind in ("ndarray", "scalar"):
            for i, r in enumerate(rows):
                if _row_kind(r) != kind:
                    err.raise_at(i, f"expected {_describe(kind, self.names)} like the rows before, got "
                                    f"{type(r).__name__} {_short(r)}")
        return [rows]

    def encode(self, rows: Sequence[Any], first_offset: int = 0, stride: int = 1) -> pa.RecordBatch:
        """One record batch of ``rows``; ``first_offset``/``stride`` locate them in the partition."""
        if not rows:
            raise ValueError("no rows to encode")
        if self.kind is None:
            self._establish(rows[0])
        err = _Locator(self.partition, first_offset, stride)
        columns = self._columns(rows, err)
        arrays = [codec.encode(col, err) for codec, col in zip(self.codecs, columns, strict=False)]
        fields = [codec.field() for codec in self.codecs]
        schema = pa.schema(fields, metadata={ROW_KIND_KEY: self.kind.encode()})
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


# ---------------------------------------------------------------------------------------------
# IPC helpers
# ---------------------------------------------------------------------------------------------
def to_ipc(batches: pa.RecordBatch | Sequence[pa.RecordBatch]) -> pa.Buffer:
    """An Arrow IPC stream (schema + batches) in one buffer."""
    if isinstance(batches, pa.RecordBatch):
        batches = [batches]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue()


def from_ipc(payload: Any) -> list[pa.RecordBatch]:
    """The record batches of one IPC stream (zero-copy over ``payload``)."""
    reader = pa.ipc.open_stream(pa.py_buffer(payload))
    return [b for b in reader]


# ---------------------------------------------------------------------------------------------
# decoding (TF side)
# ---------------------------------------------------------------------------------------------
def row_kind(schema: pa.Schema) -> str:
    meta = schema.metadata or {}
    kind = meta.get(ROW_KIND_KEY, b"row").decode()
    return kind if kind in KINDS else "row"


def is_pickled(field: pa.Field) -> bool:
    return bool(field.metadata) and field.metadata.get(ENCODING_KEY) == PICKLE


def _tensor_ndarray(array: pa.Array, field: pa.Field | None) -> np.ndarray:
    nd = array.to_numpy_ndarray()
    if field is not None and field.metadata and field.metadata.get(ENCODING_KEY) == BOOL_TENSOR:
        nd = nd.view(np.bool_)
    return nd


def _is_tensor(typ: pa.DataType) -> bool:
    return isinstance(typ, pa.FixedShapeTensorType)


def column_values(array: pa.Array, field: pa.Field) -> list:
    """Python values of one column (numpy arrays for tensor columns)."""
    if is_pickled(field):
        return [None if b is None else pickle.loads(b) for b in array.to_pylist()]
    if _is_tensor(array.type):
        nd = _tensor_ndarray(array, field)
        if not nd.flags.writeable:
            nd = nd.copy()
        return list(nd)
    if _numeric_lists(array.type) and _no_nulls(array):
        nd = column_to_numpy(array)  # stored width: Python ints are the same, and a narrow array lists faster
        if nd.dtype == np.uint8 and nd.ndim == 2:  # byte-wide rows (pixels): list(bytes) is ~40% faster
            return _byte_rows(nd)
        if nd.dtype != object:  # uniform: numpy builds the Python values far faster than Arrow
            return nd.tolist()
    return array.to_pylist()


def _byte_rows(nd: np.ndarray) -> list[list[int]]:
    """``nd.tolist()`` for a 2-d uint8 array, built by ``list(bytes)`` per row (a C loop over cached small ints)."""
    width = nd.shape[1]
    buf = nd.tobytes()
    return [list(buf[i:i + width]) for i in range(0, len(buf), width)] if width else [[] for _ in range(len(nd))]


def _no_nulls(array: pa.Array) -> bool:
    """No null anywhere in ``array``, nested list values included."""
    while True:
        if array.null_count:
            return False
        if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
                or pa.types.is_fixed_size_list(array.type)):
            return True
        array = array.flatten()


def _numeric_lists(typ: pa.DataType) -> bool:
    """A number type, or (fixed-size) lists of them, nested at any depth."""
    while pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        typ = typ.value_type
    return pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ)


def rows_from_batch(batch: pa.RecordBatch) -> list:
    """The rows of ``batch`` as the feeder saw them (see the module doc for the kinds)."""
    kind = row_kind(batch.schema)
    cols = [column_values(batch.column(i), batch.schema.field(i)) for i in range(batch.num_columns)]
    names = batch.schema.names
    if kind in ("ndarray", "scalar", "object"):
        return cols[0]
    if kind == "tuple":
        return list(zip(*cols, strict=False)) if cols else [() for _ in range(batch.num_rows)]
    if kind == "list":
        return [list(t) for t in zip(*cols, strict=False)] if cols else [[] for _ in range(batch.num_rows)]
    if kind == "dict":
        return [dict(zip(names, t, strict=False)) for t in zip(*cols, strict=False)]
    try:
        from pyspark.sql import Row
    except ImportError:  # no pyspark in this process: plain tuples
        return list(zip(*cols, strict=False))
    factory = Row(*names)
    return [factory(*t) for t in zip(*cols, strict=False)]


_VECTOR_FIELDS = {"type", "size", "indices", "values"}


def column_to_numpy(array: pa.Array | pa.ChunkedArray, field: pa.Field | None = None) -> np.ndarray:
    """One numpy array for a whole column: shape ``(rows, *value_shape)``.

    Tensor columns and fixed-length lists become dense n-d arrays without per-row work;
    strings/bytes become object arrays (``tf.string``); Spark ML vectors become dense float64
    rows; ragged lists become an object array of arrays; pickled columns are unpickled
    (per row) and stacked when they can be.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    typ = array.type
    if field is not None and is_pickled(field):
        values = [pickle.loads(b) for b in array.to_pylist()]
        try:
            return np.stack([np.asarray(v) for v in values])
        except ValueError:
            out = np.empty(len(values), dtype=object)
            out[:] = values
            return out
    if _is_tensor(typ):
        return _tensor_ndarray(array, field)
    if pa.types.is_null(typ):
        return np.full(len(array), None, dtype=object)
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        out = _list_to_numpy(array)
        logical = field.metadata.get(DTYPE_KEY) if field is not None and field.metadata else None
        if logical and out.dtype != object:
            out = out.astype(np.dtype(logical.decode()))
        return out
    if pa.types.is_struct(typ):
        names = {typ.field(i).name for i in range(typ.num_fields)}
        if names == _VECTOR_FIELDS:
            return _vectors_to_numpy(array)
        out = np.empty(len(array), dtype=object)
        out[:] = array.to_pylist()
        return out
    if pa.types.is_dictionary(typ):
        return column_to_numpy(array.dictionary_decode())
    return array.to_numpy(zero_copy_only=False)


def _list_to_numpy(array: pa.Array) -> np.ndarray:
    n = len(array)
    if array.null_count == 0:
        if pa.types.is_fixed_size_list(array.type):
            width = array.type.list_size
            uniform = True
        else:
            import pyarrow.compute as pc

            lengths = pc.list_value_length(array)
            lo, hi = pc.min_max(lengths).values()
            width = lo.as_py() if n else 0
            uniform = n == 0 or lo.as_py() == hi.as_py()
        if uniform:
            flat = column_to_numpy(array.flatten())
            return flat.reshape((n, width) + flat.shape[1:])
    out = np.empty(n, dtype=object)
    out[:] = [None if v is None else np.asarray(v) for v in array.to_pylist()]
    return out


def _vectors_to_numpy(array: pa.Array) -> np.ndarray:
    rows = array.to_pylist()
    size = max((r["size"] or len(r["values"] or [])) for r in rows if r is not None) if rows else 0
    out = np.zeros((len(rows), size), dtype=np.float64)
    for i, r in enumerate(rows):
        if r is None:
            continue
        if r["type"] == 1:
            out[i, :len(r["values"])] = r["values"]
        else:
            out[i, r["indices"]] = r["values"]
    return out


# ---------------------------------------------------------------------------------------------
# inference results (TF side -> feed task)
# ---------------------------------------------------------------------------------------------
def results_length(results: Any) -> int:
    if isinstance(results, dict):
        lengths = {len(v) for v in results.values()}
        if len(lengths) > 1:
            raise FeedError(f"batch_results: the arrays of the result dict differ in length: {sorted(lengths)}")
        return lengths.pop() if lengths else 0
    return len(results)


def results_slice(results: Any, start: int, stop: int) -> Any:
    if isinstance(results, dict):
        return {k: v[start:stop] for k, v in results.items()}
    return results[start:stop]


def normalize_results(results: Any) -> Any:
    """Tensors -> numpy; tuples/other sequences -> list; dicts keep their keys."""
    if hasattr(results, "numpy") and callable(results.numpy):
        results = results.numpy()
    if isinstance(results, dict):
        return {k: normalize_results(v) for k, v in results.items()}
    if isinstance(results, (np.ndarray, list)):
        return results
    try:
        import pandas as pd

        if isinstance(results, (pd.Series, pd.DataFrame)):
            return results.to_numpy()
    except ImportError:
        pass
    return list(results)


def split_results(results: Any) -> list:
    """One value per input row, from what ``batch_results`` was given."""
    if isinstance(results, dict):
        keys = list(results)
        return [dict(zip(keys, vals, strict=False)) for vals in zip(*(results[k] for k in keys), strict=False)]
    return list(results)


def results_to_batch(values: Sequence[Any], schema: pa.Schema) -> pa.RecordBatch:
    """Per-row results -> a record batch of ``schema`` (DataFrame inference output)."""
    def plain(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, np.generic):
            return v.item()
        return v

    names = schema.names
    if len(names) == 1:
        columns = [[plain(v[names[0]]) if isinstance(v, dict) else plain(v) for v in values]]
    else:
        columns = []
        for j, name in enumerate(names):
            col = []
            for v in values:
                if isinstance(v, dict):
                    col.append(plain(v.get(name)))
                elif isinstance(v, (tuple, list, np.ndarray)):
                    col.append(plain(v[j]))
                else:
                    raise FeedError(f"an inference result {_short(v)} cannot fill the {len(names)} output columns "
                                    f"{names}: return tuples, lists or dicts per row")
            columns.append(col)
    arrays = []
    for field, col in zip(schema, columns, strict=False):
        try:
            arrays.append(pa.array(col, type=field.type))
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise FeedError(f"inference results do not fit output column {field.name!r} ({field.type}): {exc}") \
                from exc
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def schema_summary(schema: pa.Schema) -> str:
    return json.dumps({f.name: str(f.type) for f in schema})
