"""TensorFlowOnSpark ``dfutil`` names over :mod:`tfos.io.dataframe_tfrecord`.

``from tfos import dfutil`` replaces ``from tensorflowonspark import dfutil``: the functions take
the same arguments. Differences: no TensorFlow or tensorflow-hadoop jar is needed; the schema of
``loadTFRecords`` is inferred from a sample of records rather than the first one; array<string>
and array<binary> columns are supported; null values round-trip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import types as T

from tfos.io.dataframe_tfrecord import (
    RowEncoder,
    kind_of_dtype_string,
    read_tfrecords_df,
    write_tfrecords_df,
)
from tfos.io.dataframe_tfrecord import infer_schema as _infer_schema
from tfos.io.example_codec import BYTES, Feature, decode_example

__all__ = ["fromTFExample", "infer_schema", "isLoadedDF", "loadTFRecords", "loaded_from", "saveAsTFRecords",
           "toTFExample"]

_LOADED_ATTR = "_tfos_tfrecord_source"


def isLoadedDF(df: DataFrame) -> bool:  # noqa: N802 - TensorFlowOnSpark name
    """True if ``df`` itself was returned by :func:`loadTFRecords` (not a transformation of it)."""
    return loaded_from(df) is not None


def loaded_from(df: DataFrame) -> str | None:
    """The directory :func:`loadTFRecords` read ``df`` from, or None for any other DataFrame."""
    return getattr(df, _LOADED_ATTR, None)


def saveAsTFRecords(df: DataFrame, output_dir: str) -> None:  # noqa: N802
    """Save ``df`` as TFRecord files of tf.train.Example in ``output_dir`` (must not exist yet)."""
    write_tfrecords_df(df, output_dir)


def loadTFRecords(sc: Any, input_dir: str, binary_features: Sequence[str] = ()) -> DataFrame:  # noqa: N802
    """Load TFRecord files of tf.train.Example as a DataFrame, schema inferred from a sample.

    ``binary_features`` names bytes features to keep as binary (others become strings).
    """
    df = read_tfrecords_df(SparkSession.builder.getOrCreate(), input_dir, binary_features=binary_features)
    try:
        setattr(df, _LOADED_ATTR, input_dir)
    except AttributeError:  # pragma: no cover - DataFrame implementations without instance attributes
        pass
    return df


def toTFExample(dtypes: Sequence[tuple[str, str]]) -> Callable[[Iterable[Any]], list[tuple[bytearray, None]]]:  # noqa: N802
    """mapPartitions function: rows with ``df.dtypes`` -> ``(serialized Example, None)`` pairs."""
    encoder = RowEncoder([(name, *kind_of_dtype_string(name, dtype)) for name, dtype in dtypes])

    def _to_tf_example(rows: Iterable[Any]) -> list[tuple[bytearray, None]]:
        return [(bytearray(encoder(row)), None) for row in rows]

    return _to_tf_example


def _example_bytes(example: Any) -> bytes | dict[str, Feature]:
    if isinstance(example, (bytes, bytearray, memoryview)):
        return bytes(example)
    if isinstance(example, tuple):  # (bytes, None) pairs of Hadoop input formats
        return bytes(example[0])
    if isinstance(example, dict):
        return example
    if hasattr(example, "SerializeToString"):  # a tf.train.Example
        return example.SerializeToString()
    raise TypeError(f"expected a serialized or tf.train.Example, got {type(example).__name__}")


def infer_schema(example: Any, binary_features: Sequence[str] = ()) -> T.StructType:
    """Schema of one example (tf.train.Example, serialized bytes, or a list of either)."""
    examples = example if isinstance(example, list) else [example]
    return _infer_schema([_example_bytes(e) for e in examples], binary_features)


def fromTFExample(iter: Iterable[Any], binary_features: Sequence[str] = ()) -> list[Row]:  # noqa: A002, N802
    """mapPartitions function: serialized Examples (or ``(bytes, None)`` pairs) -> Rows.

    Features sorted by name; one value -> scalar, several -> list, none -> None; bytes features
    decode as UTF-8 strings unless named in ``binary_features``.
    """
    binary = set(binary_features)
    rows = []
    for record in iter:
        data = _example_bytes(record)
        features = decode_example(data) if not isinstance(data, dict) else data
        values = {}
        for name in sorted(features):
            kind, vals = features[name]
            if kind == BYTES:
                vals = [bytearray(v) if name in binary else v.decode("utf-8") for v in vals]
            values[name] = None if not vals else vals[0] if len(vals) == 1 else list(vals)
        rows.append(Row(**values))
    return rows
