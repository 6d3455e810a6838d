"""A SavedModel signature as :class:`tfos.pipeline.TFModel` uses it.

On the driver, :func:`read_signature` reads the signature's input and output types from
``saved_model.pb`` (no model is loaded) and :func:`spark_schema` turns the outputs into
DataFrame columns. In the Spark tasks, :func:`loaded_signature` loads the model (once per Python
worker, the two most recent kept), :func:`to_input` turns an Arrow column into the tensor a
signature input expects, and :func:`to_arrow_column` turns an output back into an Arrow column.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

SAVED_MODEL_FILE = "saved_model.pb"

# TF dtype name -> Spark SQL type name of a column holding it
_SPARK_TYPES = {"float16": "float", "bfloat16": "float", "float32": "float", "float64": "double", "int8": "byte",
                "uint8": "short", "int16": "short", "uint16": "integer", "int32": "integer", "uint32": "long",
                "int64": "long", "bool": "boolean", "string": "binary"}


@dataclass(frozen=True)
class TensorSig:
    """One input or output of a signature: TF dtype name and shape (``None`` for unknown sizes)."""

    dtype: str
    shape: tuple[int | None, ...] | None  # None: unknown rank


@dataclass(frozen=True)
class Signature:
    inputs: dict[str, TensorSig]
    outputs: dict[str, TensorSig]


def read_signature(export_dir: str, tag_set: str, key: str) -> Signature:
    """Signature ``key`` of the meta graph tagged ``tag_set`` (comma-separated) in ``export_dir``."""
    from tensorflow.core.protobuf import saved_model_pb2

    from tfos.io.filesystem import FileSystem, join

    path = join(export_dir, SAVED_MODEL_FILE)
    with FileSystem() as fs:
        if not fs.exists(path):
            what = "no saved_model.pb in it" if fs.isdir(export_dir) else "no such directory"
            raise FileNotFoundError(f"TFModel: export_dir {export_dir}: {what} (export a SavedModel there first)")
        model = saved_model_pb2.SavedModel.FromString(fs.read_bytes(path))
    tags = set(_tags(tag_set))
    graphs = list(model.meta_graphs)
    found = [g for g in graphs if set(g.meta_info_def.tags) == tags]
    if not found:
        have = [",".join(sorted(g.meta_info_def.tags)) for g in graphs]
        raise ValueError(f"TFModel: {export_dir} has no meta graph tagged {tag_set!r} (its tag sets: {have}); "
                         f"setTagSet(...) to one of them")
    signatures = found[0].signature_def
    if key not in signatures:
        listed = sorted(k for k in signatures if not k.startswith("__"))  # not the internal init op
        raise ValueError(f"TFModel: {export_dir} has no signature {key!r} (its signatures: {listed}); "
                         f"setSignatureDefKey(...) to one of them")
    sig = signatures[key]
    return Signature({k: _tensor_sig(v) for k, v in sig.inputs.items()},
                     {k: _tensor_sig(v) for k, v in sig.outputs.items()})


def _tags(tag_set: str | None) -> list[str]:
    """``"serve,gpu"`` -> ``["serve", "gpu"]``."""
    return [t.strip() for t in (tag_set or "").split(",") if t.strip()]


def _tensor_sig(info: Any) -> TensorSig:
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(info.dtype).name
    shape = info.tensor_shape
    if shape.unknown_rank:
        return TensorSig(dtype, None)
    return TensorSig(dtype, tuple(None if d.size < 0 else int(d.size) for d in shape.dim))


def spark_schema(columns: list[tuple[str, TensorSig]]) -> Any:
    """A StructType of one column per ``(name, output)``: scalars per row, or nested arrays."""
    from pyspark.sql.types import StructType, _parse_datatype_string

    fields = []
    for name, sig in columns:
        base = _SPARK_TYPES.get(sig.dtype)
        if base is None:
            raise ValueError(f"TFModel: output for column {name!r} has dtype {sig.dtype}, which has no DataFrame "
                             f"column type here (supported: {sorted(_SPARK_TYPES)})")
        if sig.shape is None or len(sig.shape) < 1:
            what = "an unknown rank" if sig.shape is None else "no batch dimension"
            raise ValueError(f"TFModel: output for column {name!r} has {what}; a signature output must be a batch "
                             f"of values, shape [batch, ...]")
        typ = base
        for _ in sig.shape[1:]:
            typ = f"array<{typ}>"
        fields.append(f"`{name}` {typ}")
    schema = _parse_datatype_string(", ".join(fields))
    return schema if isinstance(schema, StructType) else StructType([])


def task_gpu_env(task_resources: dict[str, list[str]] | None, tf_imported: bool) -> dict[str, str]:
    """``CUDA_VISIBLE_DEVICES`` for the GPUs Spark gave this task, to set before TensorFlow starts
    in this Python worker (empty when Spark schedules no GPUs or TensorFlow is already running)."""
    from tfos.cluster.gpus import GPU_RESOURCE

    gpus = (task_resources or {}).get(GPU_RESOURCE)
    if tf_imported or not gpus:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpus)}


@functools.lru_cache(maxsize=2)
def loaded_signature(export_dir: str, tag_set: str, key: str) -> tuple[Any, dict[str, Any], Any]:
    """``(signature function, its input TensorSpecs by name, the loaded model)``, loaded once per process.

    With Spark GPU scheduling, the first load in a Python worker limits TensorFlow to the GPUs
    of that task (Spark assigns an executor's GPUs to its tasks, so they stay the same)."""
    import os
    import sys

    from tfos.cluster.gpus import spark_task_resources

    os.environ.update(task_gpu_env(spark_task_resources(), "tensorflow" in sys.modules))
    import tensorflow as tf

    from tfos.io.tf_dataset import TensorFlowIO

    tags = _tags(tag_set)
    tio = TensorFlowIO(probe=export_dir)
    try:
        with tio.local_copy(export_dir) as local:
            model = tf.saved_model.load(local, tags=tags or None)
    finally:
        tio.close()
    if key not in model.signatures:
        raise ValueError(f"TFModel: {export_dir} has no signature {key!r} (its signatures: {list(model.signatures)})")
    fn = model.signatures[key]
    return fn, dict(fn.structured_input_signature[1]), model


def to_input(column: pa.Array, spec: Any, name: str, tensor: str, where: str) -> Any:
    """Arrow ``column`` as the tensor ``spec`` wants (dtype cast, rows reshaped when sizes agree)."""
    import tensorflow as tf

    from tfos.feed.arrow_codec import column_to_numpy

    if column.null_count:
        row = column.is_null().to_pylist().index(True)
        raise ValueError(f"TFModel: column {name!r} has a null at {where} (row {row} of this batch); input "
                         f"{tensor!r} needs a value in every row")
    try:
        values = column_to_numpy(column)
        if spec.dtype != tf.string:
            if values.dtype == object:
                values = np.stack(list(values))
            values = values.astype(spec.dtype.as_numpy_dtype, copy=False)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"TFModel: column {name!r} ({column.type}) at {where} cannot feed input {tensor!r} "
                         f"({spec.dtype.name} {spec.shape}): {exc}") from None
    want = spec.shape
    if want.rank is not None and tuple(values.shape[1:]) != tuple(want[1:]):
        dims = want.as_list()[1:]
        if all(d is not None for d in dims) and math.prod(dims) == math.prod(values.shape[1:]):
            values = values.reshape((len(values), *dims))
        elif not want.is_compatible_with(values.shape):
            raise ValueError(f"TFModel: column {name!r} at {where} has rows of shape {list(values.shape[1:])}; "
                             f"input {tensor!r} wants {dims}")
    return tf.convert_to_tensor(values, dtype=spec.dtype)


def to_arrow_column(value: Any, typ: pa.DataType, tensor: str, rows: int, where: str) -> pa.Array:
    """Signature output ``value`` (one entry per input row) as an Arrow array of ``typ``."""
    values = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    if values.ndim == 0 or len(values) != rows:
        got = "a scalar" if values.ndim == 0 else f"{len(values)} rows"
        raise ValueError(f"TFModel: output {tensor!r} gave {got} for the {rows} input rows at {where}")
    return _nested(values, typ)


def _nested(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        n, width = values.shape[0], values.shape[1] if values.ndim > 1 else 0
        child = _nested(values.reshape((n * width, *values.shape[2:])), typ.value_type)
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)
        return pa.ListArray.from_arrays(offsets, child, type=typ)
    if pa.types.is_binary(typ):
        return pa.array([bytes(v) for v in values.reshape(-1)], pa.binary())
    return pa.array(values.reshape(-1).astype(typ.to_pandas_dtype(), copy=False), typ)
