"""Spark DataFrame <-> TFRecord files of ``tf.train.Example`` (local, ``file://`` or ``hdfs://``).

Writing runs on the executors: one ``part-r-NNNNN`` file per partition, each written atomically
(temporary name + rename), then a ``_SUCCESS`` marker. Reading lists the files on the driver and
decodes them on the executors, one partition per file, with an explicit schema or one inferred
from a sample of records spread over the files. Neither direction imports TensorFlow.

Column types: boolean/tinyint/smallint/int/bigint -> Int64List, float/double -> FloatList,
string/binary -> BytesList, and arrays of those. A null scalar is written as an absent feature
and read back as null. Inference maps Int64List -> bigint, FloatList -> double, BytesList ->
string (binary for ``binary_features`` and for values that are not UTF-8), and a feature becomes
an array when any sampled record holds other than exactly one value (TensorFlowOnSpark
``dfutil`` looked only at the first record).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from tfos.io.example_codec import BYTES, FLOAT, INT64, Feature, decode_example, encode_example
from tfos.io.filesystem import FileSystem, join
from tfos.io.paths import absolute_path, default_fs
from tfos.io.tfrecord import TFRecordWriter, is_data_file, read_tfrecords

__all__ = ["RowDecoder", "RowEncoder", "infer_schema", "list_tfrecord_files", "read_tfrecords_df",
           "write_tfrecords_df"]

_INT_TYPES = (T.BooleanType, T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_FLOAT_TYPES = (T.FloatType, T.DoubleType)
_BYTES_TYPES = (T.StringType, T.BinaryType)
_SIMPLE_KINDS = {
    "boolean": INT64, "tinyint": INT64, "smallint": INT64, "int": INT64, "bigint": INT64, "long": INT64,
    "float": FLOAT, "double": FLOAT, "string": BYTES, "binary": BYTES,
}


def kind_of(name: str, dtype: T.DataType) -> tuple[str, bool]:
    """(feature kind, is_array) for a Spark column type; TypeError for unsupported types."""
    is_array = isinstance(dtype, T.ArrayType)
    elem = dtype.elementType if is_array else dtype
    if isinstance(elem, _INT_TYPES):
        return INT64, is_array
    if isinstance(elem, _FLOAT_TYPES):
        return FLOAT, is_array
    if isinstance(elem, _BYTES_TYPES):
        return BYTES, is_array
    raise TypeError(f"column {name!r}: type {dtype.simpleString()} cannot be stored in a tf.train.Example "
                    "(supported: boolean, integer types, float, double, string, binary and arrays of them)")


def kind_of_dtype_string(name: str, dtype: str) -> tuple[str, bool]:
    """Like :func:`kind_of` for ``df.dtypes`` strings (``"bigint"``, ``"array<float>"``)."""
    s = dtype.strip().lower()
    is_array = s.startswith("array<") and s.endswith(">")
    elem = s[6:-1].strip() if is_array else s
    kind = _SIMPLE_KINDS.get(elem)
    if kind is None:
        raise TypeError(f"column {name!r}: unsupported dtype {dtype!r} for a tf.train.Example")
    return kind, is_array


class RowEncoder:
    """Picklable ``row -> serialized tf.train.Example`` for rows with the given columns."""

    def __init__(self, columns: Sequence[tuple[str, str, bool]]):
        self.columns = list(columns)  # (name, kind, is_array), in row order

    @classmethod
    def for_schema(cls, schema: T.StructType) -> RowEncoder:
        """Encoder for rows of a DataFrame with ``schema``."""
        return cls([(f.name, *kind_of(f.name, f.dataType)) for f in schema.fields])

    def features(self, row: Sequence[Any]) -> dict[str, Feature]:
        """The features of one row (null scalars left out)."""
        out = {}
        for (name, kind, is_array), value in zip(self.columns, row, strict=True):
            if value is None:
                continue
            if is_array:
                if any(v is None for v in value):
                    raise ValueError(f"column {name!r}: arrays with null elements cannot be stored in a "
                                     "tf.train.Example")
                values = list(value)
            else:
                values = [value]
            if kind == BYTES:
                values = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
            out[name] = Feature(kind, values)
        return out

    def __call__(self, row: Sequence[Any]) -> bytes:
        return encode_example(self.features(row))


def _convert_scalar(name: str, dtype: T.DataType, kind: str | None, value: Any) -> Any:
    if isinstance(dtype, T.StringType):
        if kind != BYTES:
            raise TypeError(f"feature {name!r} is a {kind} list, column type is string")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"feature {name!r} is not UTF-8 text: read it as binary "
                             f"(binary_features=[{name!r}] or a binary column in the schema)") from exc
    if isinstance(dtype, T.BinaryType):
        if kind != BYTES:
            raise TypeError(f"feature {name!r} is a {kind} list, column type is binary")
        return bytearray(value)
    if isinstance(dtype, T.BooleanType):
        if kind != INT64:
            raise TypeError(f"feature {name!r} is a {kind} list, column type is boolean")
        return bool(value)
    if isinstance(dtype, _INT_TYPES):
        if kind != INT64:
            raise TypeError(f"feature {name!r} is a {kind} list, column type is {dtype.simpleString()}")
        return int(value)
    if isinstance(dtype, _FLOAT_TYPES):
        if kind not in (FLOAT, INT64):
            raise TypeError(f"feature {name!r} is a {kind} list, column type is {dtype.simpleString()}")
        return float(value)
    raise TypeError(f"column {name!r}: unsupported type {dtype.simpleString()}")


class RowDecoder:
    """Picklable ``serialized tf.train.Example -> tuple`` in the order of ``schema``'s fields."""

    def __init__(self, schema: T.StructType):
        for f in schema.fields:
            kind_of(f.name, f.dataType)  # fail early on unsupported types
        self.schema = schema

    def __call__(self, record: bytes) -> tuple[Any, ...]:
        features = decode_example(record)
        out = []
        for field in self.schema.fields:
            name, dtype = field.name, field.dataType
            feature = features.get(name)
            if feature is None or feature.kind is None:
                out.append(None)
                continue
            kind, values = feature
            if isinstance(dtype, T.ArrayType):
                out.append([_convert_scalar(name, dtype.elementType, kind, v) for v in values])
            elif not values:
                out.append(None)
            elif len(values) == 1:
                out.append(_convert_scalar(name, dtype, kind, values[0]))
            else:
                raise ValueError(f"feature {name!r} holds {len(values)} values but column type "
                                 f"{dtype.simpleString()} is not an array")
        return tuple(out)


def infer_schema(examples: Iterable[bytes | dict[str, Feature]], binary_features: Iterable[str] = ()
                 ) -> T.StructType:
    """Schema covering every given example (serialized or decoded); fields sorted by name.

    int64 -> bigint, float -> double (int64 and float mixed -> double), bytes -> string
    (binary for names in ``binary_features`` or with non-UTF-8 values); array when any example
    holds != 1 value.
    """
    binary = set(binary_features)
    kinds: dict[str, set[str]] = {}
    arrays: set[str] = set()
    for ex in examples:
        features = decode_example(ex) if isinstance(ex, (bytes, bytearray, memoryview)) else ex
        for name, (kind, values) in features.items():
            seen = kinds.setdefault(name, set())
            if kind is None:
                continue
            seen.add(kind)
            if len(values) != 1:
                arrays.add(name)
            if kind == BYTES and name not in binary and not all(_is_utf8(v) for v in values):
                binary.add(name)  # not text: keep it as binary rather than fail when reading
    fields = []
    for name in sorted(kinds):
        seen = kinds[name]
        if BYTES in seen and len(seen) > 1:
            raise TypeError(f"feature {name!r} is a bytes list in some records and numeric in others")
        if name in binary:
            elem: T.DataType = T.BinaryType()
        elif FLOAT in seen:
            elem = T.DoubleType()
        elif INT64 in seen:
            elem = T.LongType()
        else:
            elem = T.StringType()
        fields.append(T.StructField(name, T.ArrayType(elem, False) if name in arrays else elem, True))
    return T.StructType(fields)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ---------------------------------------------------------------------------- files
def _resolve(sc: Any, path: str) -> str:
    return absolute_path(path, default_fs(sc), os.getcwd())


def list_tfrecord_files(path: str | Sequence[str], fs: FileSystem | None = None) -> list[str]:
    """Data files of a directory (not recursive), a glob pattern, a file, or a list of those.

    Hidden files and markers (``.x``, ``_SUCCESS``) are skipped, as Hadoop input formats do.
    """
    fs = fs or FileSystem()
    paths = [path] if isinstance(path, str) else list(path)
    files: list[str] = []
    for p in paths:
        if any(ch in p for ch in "*?["):
            files += [f for f in fs.glob(p) if is_data_file(f) and not fs.isdir(f)]
        elif fs.isdir(p):
            for name in fs.listdir(p):
                child = join(p, name)
                if is_data_file(name) and not fs.isdir(child):
                    files.append(child)
        elif fs.exists(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"no such TFRecord file or directory: {p}")
    if not files:
        raise FileNotFoundError(f"no TFRecord files in {path}")
    return files


def sample_records(files: Sequence[str], sample_size: int, compression: str | None = "auto",
                   fs: FileSystem | None = None, max_files: int = 16) -> list[bytes]:
    """Up to ``sample_size`` records taken from up to ``max_files`` files spread over ``files``."""
    fs = fs or FileSystem()
    n = min(len(files), max_files)
    picks = sorted({round(i * (len(files) - 1) / max(n - 1, 1)) for i in range(n)})
    per_file = max(1, math.ceil(sample_size / len(picks)))
    out: list[bytes] = []
    for i in picks:
        for k, record in enumerate(read_tfrecords(files[i], compression, fs=fs)):
            if k >= per_file:
                break
            out.append(record)
    return out


def write_tfrecords_df(df: DataFrame, output_dir: str, *, compression: str | None = None,
                       mode: str = "error") -> list[str]:
    """Write ``df`` as TFRecord files of tf.train.Example, one ``part-r-NNNNN`` per partition.

    ``output_dir`` may be local, ``file://`` or ``hdfs://``; paths without a scheme resolve
    against Spark's ``fs.defaultFS``. ``mode``: ``error`` (the directory must not exist or be
    empty), ``overwrite`` (delete it first) or ``append`` (add files; names may collide). Returns
    the written file paths.
    """
    if mode not in ("error", "overwrite", "append"):
        raise ValueError(f"mode must be error, overwrite or append, got {mode!r}")
    out = _resolve(df.sparkSession.sparkContext, output_dir)
    fs = FileSystem()
    if fs.exists(out):
        if mode == "overwrite":
            fs.delete(out, recursive=True)
        elif mode == "error" and (not fs.isdir(out) or fs.listdir(out)):
            raise FileExistsError(f"output directory {out} already exists (use mode='overwrite')")
    fs.makedirs(out)
    encoder = RowEncoder.for_schema(df.schema)
    comp = (compression or "").upper()
    ext = {"GZIP": ".gz", "ZLIB": ".zlib"}.get(comp, "")

    def _write_partition(index: int, rows: Iterator[Any]) -> Iterator[tuple[str, int]]:
        path = join(out, f"part-r-{index:05d}{ext}")
        with TFRecordWriter(path, comp, fs=FileSystem()) as writer:
            for row in rows:
                writer.write(encoder(row))
        yield path, writer.records_written

    written = df.rdd.mapPartitionsWithIndex(_write_partition).collect()
    fs.write_bytes(join(out, "_SUCCESS"), b"")
    return [p for p, _ in written]


def read_tfrecords_df(spark: SparkSession | Any, input_path: str | Sequence[str], *,
                      schema: T.StructType | str | None = None, binary_features: Iterable[str] = (),
                      sample_size: int = 1000, compression: str | None = "auto") -> DataFrame:
    """DataFrame of the tf.train.Example records under ``input_path`` (dir, glob, file or list).

    ``spark`` is a SparkSession or SparkContext. With no ``schema`` it is inferred from up to
    ``sample_size`` records spread over the files (see :func:`infer_schema`); ``schema`` may
    be a StructType or a DDL string (``"x bigint, y array<float>"``).
    """
    if not isinstance(spark, SparkSession):  # a SparkContext (or None): the session on it
        spark = SparkSession.builder.getOrCreate()
    sc = spark.sparkContext
    paths = [input_path] if isinstance(input_path, str) else list(input_path)
    paths = [_resolve(sc, p) for p in paths]
    fs = FileSystem()
    files = list_tfrecord_files(paths, fs)
    if schema is None:
        sample = sample_records(files, sample_size, compression, fs)
        if not sample:
            raise ValueError(f"cannot infer a schema: no records in {input_path}; pass schema=")
        schema = infer_schema(sample, binary_features)
    elif isinstance(schema, str):
        parsed = T._parse_datatype_string(schema)
        if not isinstance(parsed, T.StructType):
            raise ValueError(f"schema {schema!r} is not a struct type")
        schema = parsed
    decoder = RowDecoder(schema)
    comp = compression

    def _read_file(path: str) -> Iterator[tuple[Any, ...]]:
        for record in read_tfrecords(path, comp, fs=FileSystem()):
            yield decoder(record)

    rdd = sc.parallelize(files, len(files)).flatMap(_read_file)
    return spark.createDataFrame(rdd, schema, verifySchema=False)
