"""Spark ML Estimator and Model over a tfos cluster (TensorFlowOnSpark's ``pipeline``).

``from tfos.pipeline import TFEstimator, TFModel`` replaces
``from tensorflowonspark.pipeline import TFEstimator, TFModel``; the params, their setters and
getters, and what ``fit`` / ``transform`` do are the same:

* ``TFEstimator(train_fn, tf_args, export_fn=None).fit(df)`` starts a cluster of
  ``cluster_size`` nodes running ``train_fn(args, ctx)`` (``ctx`` as TensorFlowOnSpark's
  ``TFCluster.run`` gives it: ``TFNode.DataFeed(ctx.mgr, ...)``, ``ctx.worker_num``...). InputMode.SPARK feeds the columns
  named by ``input_mapping`` (sorted by column name) for ``epochs`` epochs; InputMode.TENSORFLOW
  writes them as TFRecords to ``tfrecord_dir`` first (or uses the directory a
  ``dfutil.loadTFRecords`` DataFrame came from) for the nodes to read. ``args`` is ``tf_args``
  with every param added as an attribute (``args.batch_size``, ``args.export_dir``...). After
  shutdown, ``export_fn(args)`` runs once on one executor. Returns a :class:`TFModel` with the
  same args and the params the two share.
* ``TFModel(tf_args).transform(df)`` runs the SavedModel in ``export_dir`` (signature
  ``signature_def_key`` of the meta graph ``tag_set``) in every Spark task, ``batch_size`` rows
  at a time: column ``c`` of ``input_mapping`` feeds signature input ``input_mapping[c]``, and
  signature output ``t`` of ``output_mapping`` becomes column ``output_mapping[t]`` (columns in
  the order of the sorted output names). One output row per input row, in order; the column
  types come from the signature, so the data is read once, through Arrow.

Also TensorFlowOnSpark's helpers: ``TFParams.merge_args_params``, ``TFTypeConverters``,
``single_node_env(args)``, ``get_meta_graph_def`` and ``yield_batch``. ``grace_secs`` defaults
to 30 as there (tfos goes on as soon as the nodes that end on their own have ended).

Differences: ``transform`` needs a SavedModel (``export_dir``); TF1 checkpoints in
``model_dir`` are not loaded. ``signature_def_key`` / ``tag_set`` default to
``serving_default`` / ``serve`` (TensorFlowOnSpark: None). InputMode.TENSORFLOW and
``export_fn`` work (TensorFlowOnSpark 2.x raises). Each Spark Python worker loads a model
once and keeps the last two it loaded.
"""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.pipeline import Estimator, Model

from tfos.cluster.input_mode import InputMode

logger = logging.getLogger(__name__)

__all__ = ["Namespace", "TFEstimator", "TFModel", "TFParams", "TFTypeConverters", "get_meta_graph_def",
           "single_node_env", "yield_batch"]


def _to_dict(value: Any) -> dict:
    if isinstance(value, dict):
        return dict(value)
    raise TypeError(f"expected a dict such as {{'column': 'tensor'}}, got {type(value).__name__} {value!r}")


class TFTypeConverters:
    """Param type converters Spark lacks (TensorFlowOnSpark name)."""

    @staticmethod
    def toDict(value: Any) -> dict:  # noqa: N802 - TensorFlowOnSpark name
        """``value`` if it is a dict, else ``TypeError``."""
        return _to_dict(value)


def _has(name: str, method: str, doc: str, converter: Callable[[Any], Any]) -> type:
    """A Params mix-in holding param ``name`` with ``set<method>`` / ``get<method>`` (TFoS names)."""
    def setter(self: Params, value: Any) -> Params:
        return self._set(**{name: value})

    def getter(self: Params) -> Any:
        return self.getOrDefault(name)

    setter.__doc__ = f"Set ``{name}``: {doc}."
    getter.__doc__ = f"``{name}``: {doc}."
    setter.__name__, getter.__name__ = f"set{method}", f"get{method}"
    return type(f"Has{method}", (Params,), {name: Param(Params._dummy(), name, doc, typeConverter=converter),
                                             f"set{method}": setter, f"get{method}": getter})


HasBatchSize = _has("batch_size", "BatchSize", "rows per batch", TypeConverters.toInt)
HasClusterSize = _has("cluster_size", "ClusterSize", "nodes in the TF cluster", TypeConverters.toInt)
HasDriverPSNodes = _has("driver_ps_nodes", "DriverPSNodes", "run the parameter servers on the driver",
                        TypeConverters.toBoolean)
HasEpochs = _has("epochs", "Epochs", "epochs to feed (InputMode.SPARK)", TypeConverters.toInt)
HasExportDir = _has("export_dir", "ExportDir", "directory of the SavedModel", TypeConverters.toString)
HasGraceSecs = _has("grace_secs", "GraceSecs", "seconds to wait after the feed before shutting down",
                    TypeConverters.toFloat)
HasInputMapping = _has("input_mapping", "InputMapping", "DataFrame column -> input tensor", _to_dict)
HasInputMode = _has("input_mode", "InputMode", "InputMode.SPARK (feed the columns) or InputMode.TENSORFLOW",
                    TypeConverters.toInt)
HasMasterNode = _has("master_node", "MasterNode", "role name of the chief ('chief'; None for none)",
                     TypeConverters.identity)
HasModelDir = _has("model_dir", "ModelDir", "directory of the checkpoints", TypeConverters.toString)
HasNumPS = _has("num_ps", "NumPS", "parameter servers in the TF cluster", TypeConverters.toInt)
HasOutputMapping = _has("output_mapping", "OutputMapping", "output tensor -> DataFrame column", _to_dict)
HasProtocol = _has("protocol", "Protocol", "TF server protocol (grpc)", TypeConverters.toString)
HasReaders = _has("readers", "Readers", "reader threads (for train_fn)", TypeConverters.toInt)
HasSignatureDefKey = _has("signature_def_key", "SignatureDefKey", "signature of the SavedModel to run",
                          TypeConverters.toString)
HasSteps = _has("steps", "Steps", "training steps (for train_fn)", TypeConverters.toInt)
HasTagSet = _has("tag_set", "TagSet", "comma-separated tags of the SavedModel's meta graph", TypeConverters.toString)
HasTensorboard = _has("tensorboard", "Tensorboard", "start TensorBoard on the chief", TypeConverters.toBoolean)
HasTFRecordDir = _has("tfrecord_dir", "TFRecordDir", "where InputMode.TENSORFLOW writes the DataFrame as TFRecords",
                      TypeConverters.toString)


class Namespace(argparse.Namespace):
    """``tf_args`` as attributes: from a dict, an argparse Namespace, or an argv list (kept as ``argv``)."""

    def __init__(self, args: Any = None):
        super().__init__()
        self.argv = None
        if isinstance(args, list):
            self.argv = list(args)
        elif isinstance(args, dict):
            vars(self).update(args)
        elif isinstance(args, argparse.Namespace):
            vars(self).update(vars(args))
        elif args is not None:
            raise TypeError(f"tf_args must be a dict, an argparse.Namespace or an argv list, "
                            f"got {type(args).__name__}")


class TFParams(Params):
    """Mix-in: ``tf_args`` plus every param as one Namespace for the TF functions."""

    args: Namespace

    def merge_args_params(self) -> Namespace:
        """A copy of ``tf_args`` with every param (set or default) added as an attribute."""
        merged = copy.copy(self.args)
        for param in self.params:
            vars(merged)[param.name] = self.getOrDefault(param)
        return merged


    def _tf_args(self, merged: Namespace) -> Any:
        return self.args.argv if self.args.argv else merged



def single_node_env(args: Any) -> None:
    """Set up this process for one TF instance: ``sys.argv`` from an argv list, then ``util.single_node_env``."""
    from tfos.tensorflowonspark import util

    if isinstance(args, list):
        sys.argv = args
    elif getattr(args, "argv", None):
        sys.argv = args.argv
    num_gpus = getattr(args, "num_gpus", 1) if not isinstance(args, list) else 1
    util.single_node_env(num_gpus)


def get_meta_graph_def(saved_model_dir: str, tag_set: str) -> Any:
    """The MetaGraphDef of the SavedModel in ``saved_model_dir`` whose tags are ``tag_set`` (comma-separated)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(f"{saved_model_dir.rstrip('/')}/saved_model.pb", "rb") as f:
        saved_model.ParseFromString(f.read())
    wanted = set(tag_set.split(","))
    for meta_graph_def in saved_model.meta_graphs:
        if set(meta_graph_def.meta_info_def.tags) == wanted:
            return meta_graph_def
    found = [",".join(m.meta_info_def.tags) for m in saved_model.meta_graphs]
    raise RuntimeError(f"no MetaGraphDef with tag-set {tag_set!r} in {saved_model_dir} (it has {found})")


def yield_batch(iterable: Iterable[Any], batch_size: int, num_tensors: int = 1) -> Iterator[list[list[Any]]]:
    """Batches of a partition's rows as ``num_tensors`` column lists of up to ``batch_size`` values.

    A ``None`` row ends the input; ``bytearray`` values become ``str``, as in TensorFlowOnSpark.
    """
    columns: list[list[Any]] = [[] for _ in range(num_tensors)]
    for row in iterable:
        if row is None:
            break
        for i in range(num_tensors):
            value = row[i]
            columns[i].append(str(value) if isinstance(value, bytearray) else value)
        if len(columns[0]) >= batch_size:
            yield columns
            columns = [[] for _ in range(num_tensors)]
    if columns[0]:
        yield columns


def _sorted_columns(mapping: dict, columns: list[str], who: str, what: str) -> list[str]:
    if not mapping:
        raise ValueError(f"{who}: {what} is empty; set it to {{column: tensor}} for the DataFrame columns to use")
    missing = sorted(c for c in mapping if c not in columns)
    if missing:
        raise ValueError(f"{who}: {what} names column(s) {missing} that the DataFrame does not have "
                         f"(its columns: {columns})")
    return sorted(mapping)


class TFEstimator(Estimator, TFParams, HasInputMapping, HasClusterSize, HasNumPS, HasDriverPSNodes, HasInputMode,
                  HasMasterNode, HasProtocol, HasGraceSecs, HasTensorboard, HasModelDir, HasExportDir, HasTFRecordDir,
                  HasBatchSize, HasEpochs, HasReaders, HasSteps):
    """Spark ML Estimator: ``fit(df)`` trains ``train_fn`` on a tfos cluster (see the module doc)."""

    def __init__(self, train_fn: Callable[[Any, Any], Any], tf_args: Any, export_fn: Callable[[Any], Any] | None = None):
        super().__init__()
        if not callable(train_fn):
            raise TypeError(f"TFEstimator: train_fn must be a function (args, ctx), got {train_fn!r}")
        if export_fn is not None and not callable(export_fn):
            raise TypeError(f"TFEstimator: export_fn must be a function (args) or None, got {export_fn!r}")
        self.train_fn, self.export_fn = train_fn, export_fn
        self.args = Namespace(tf_args)
        self._setDefault(input_mapping={}, cluster_size=1, num_ps=0, driver_ps_nodes=False,
                         input_mode=InputMode.SPARK, master_node="chief", protocol="grpc", grace_secs=30.0,
                         tensorboard=False, model_dir=None, export_dir=None, tfrecord_dir=None, batch_size=100,
                         epochs=1, readers=1, steps=1000)

    def _fit(self, dataset: Any) -> TFModel:
        from tfos import dfutil
        from tfos.tensorflowonspark.TFCluster import run  # train_fn gets TensorFlowOnSpark's ctx

        args = self.merge_args_params()
        mode = args.input_mode
        if mode not in (InputMode.SPARK, InputMode.TENSORFLOW):
            raise ValueError(f"TFEstimator: input_mode must be InputMode.SPARK ({InputMode.SPARK}) or "
                             f"InputMode.TENSORFLOW ({InputMode.TENSORFLOW}), got {mode!r}")
        if args.epochs < 1:
            raise ValueError(f"TFEstimator: epochs must be >= 1, got {args.epochs}")
        if self.export_fn is not None and not args.export_dir:
            raise ValueError("TFEstimator: export_fn needs export_dir; setExportDir(path)")
        columns = list(dataset.columns)
        feed = None
        if mode == InputMode.SPARK:
            feed = dataset.select(_sorted_columns(self.getInputMapping(), columns, "TFEstimator", "input_mapping"))
        elif dfutil.isLoadedDF(dataset):
            args.tfrecord_dir = dfutil.loaded_from(dataset)
            logger.info("TFEstimator: the DataFrame was loaded from TFRecords in %s; the nodes read those",
                        args.tfrecord_dir)
        else:
            if not args.tfrecord_dir:
                raise ValueError("TFEstimator: InputMode.TENSORFLOW writes the DataFrame as TFRecords for the nodes "
                                 "to read; setTFRecordDir(path) to say where")
            mapping = self.getInputMapping()
            out = dataset.select(_sorted_columns(mapping, columns, "TFEstimator", "input_mapping")) if mapping \
                else dataset
            logger.info("TFEstimator: writing %s as TFRecords to %s", out.dtypes, args.tfrecord_dir)
            dfutil.saveAsTFRecords(out, args.tfrecord_dir)
        tf_args = self._tf_args(args)
        sc = dataset.sparkSession.sparkContext
        cluster = run(sc, self.train_fn, tf_args, args.cluster_size, args.num_ps, args.tensorboard, mode,
                      driver_ps_nodes=args.driver_ps_nodes, master_node=args.master_node)
        try:
            if feed is not None:
                cluster.train(feed, args.epochs)
        except BaseException:
            try:
                cluster.shutdown(timeout=30)
            except Exception as exc:  # noqa: BLE001 - the feed's own error is the one to raise
                logger.warning("TFEstimator: shutting the cluster down after the failed feed also failed: %s", exc)
            raise
        cluster.shutdown(grace_secs=args.grace_secs)
        if self.export_fn is not None:
            from tfos.parallel import run as run_parallel

            logger.info("TFEstimator: running export_fn on one executor (export_dir %s)", args.export_dir)
            run_parallel(sc, functools.partial(_call_export, self.export_fn), tf_args, 1)
        return self._copyValues(TFModel(self.args))


def _call_export(export_fn: Callable[[Any], Any], args: Any, _ctx: Any) -> None:
    export_fn(args)


class TFModel(Model, TFParams, HasInputMapping, HasOutputMapping, HasBatchSize, HasModelDir, HasExportDir,
              HasSignatureDefKey, HasTagSet):
    """Spark ML Model: ``transform(df)`` runs a SavedModel signature over the rows (see the module doc)."""

    def __init__(self, tf_args: Any = None):
        super().__init__()
        self.args = Namespace(tf_args)
        self._setDefault(input_mapping={}, output_mapping={}, batch_size=100, model_dir=None, export_dir=None,
                         signature_def_key="serving_default", tag_set="serve")

    def _transform(self, dataset: Any) -> Any:
        from tfos.saved_model_signature import read_signature, spark_schema

        args = self.merge_args_params()
        if not args.export_dir:
            hint = f" (model_dir {args.model_dir} holds checkpoints, which tfos does not load)" if args.model_dir else ""
            raise ValueError(f"TFModel: transform runs a SavedModel; setExportDir(path) to where it is{hint}")
        if args.batch_size < 1:
            raise ValueError(f"TFModel: batch_size must be >= 1, got {args.batch_size}")
        in_cols = _sorted_columns(self.getInputMapping(), list(dataset.columns), "TFModel", "input_mapping")
        outputs = self.getOutputMapping()
        if not outputs:
            raise ValueError("TFModel: output_mapping is empty; set it to {output tensor: column}")
        export_dir = _absolute(args.export_dir, dataset)
        signature = read_signature(export_dir, args.tag_set, args.signature_def_key)
        mapping = self.getInputMapping()
        unknown = sorted(t for t in mapping.values() if t not in signature.inputs)
        if unknown:
            raise ValueError(f"TFModel: input_mapping names input tensor(s) {unknown} that signature "
                             f"{args.signature_def_key!r} of {args.export_dir} does not have (its inputs: "
                             f"{sorted(signature.inputs)})")
        missing = sorted(set(signature.inputs) - set(mapping.values()))
        if missing:
            raise ValueError(f"TFModel: signature {args.signature_def_key!r} also needs input(s) {missing}; map a "
                             f"column to each in input_mapping")
        unknown = sorted(t for t in outputs if t not in signature.outputs)
        if unknown:
            raise ValueError(f"TFModel: output_mapping names output tensor(s) {unknown} that signature "
                             f"{args.signature_def_key!r} of {args.export_dir} does not have (its outputs: "
                             f"{sorted(signature.outputs)})")
        out_tensors = sorted(outputs)
        schema = spark_schema([(outputs[t], signature.outputs[t]) for t in out_tensors])
        plan = _RunPlan(export_dir=export_dir, tag_set=args.tag_set, signature_def_key=args.signature_def_key,
                        batch_size=args.batch_size, inputs=[(c, mapping[c]) for c in in_cols],
                        outputs=[(t, outputs[t]) for t in out_tensors], arrow_schema=_arrow_schema(schema, dataset))
        logger.info("TFModel: %s signature %r: columns %s -> inputs %s; outputs %s -> columns %s", args.export_dir,
                    args.signature_def_key, in_cols, [mapping[c] for c in in_cols], out_tensors,
                    [outputs[t] for t in out_tensors])
        return dataset.select(in_cols).mapInArrow(functools.partial(_run_batches, plan), schema)


def _absolute(path: str, dataset: Any) -> str:
    """``path`` resolved against the default file system, as the nodes resolve paths."""
    import os

    from tfos.io.paths import absolute_path, default_fs

    return absolute_path(path, default_fs(dataset.sparkSession.sparkContext), os.getcwd())


def _arrow_schema(schema: Any, dataset: Any) -> bytes:
    from pyspark.sql.pandas.types import to_arrow_schema

    tz = dataset.sparkSession.conf.get("spark.sql.session.timeZone", None)
    return to_arrow_schema(schema, timezone=tz).serialize().to_pybytes()


class _RunPlan:
    """What a transform task needs (shipped in its closure)."""

    def __init__(self, *, export_dir: str, tag_set: str, signature_def_key: str, batch_size: int,
                 inputs: list[tuple[str, str]], outputs: list[tuple[str, str]], arrow_schema: bytes):
        self.export_dir, self.tag_set, self.signature_def_key = export_dir, tag_set, signature_def_key
        self.batch_size, self.inputs, self.outputs, self.arrow_schema = batch_size, inputs, outputs, arrow_schema


def _run_batches(plan: _RunPlan, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` function: input columns -> signature -> output columns, ``batch_size`` rows a call."""
    from pyspark import TaskContext

    from tfos.saved_model_signature import loaded_signature, to_arrow_column, to_input

    schema = pa.ipc.read_schema(pa.py_buffer(plan.arrow_schema))
    fn, specs, _model = loaded_signature(plan.export_dir, plan.tag_set, plan.signature_def_key)
    context = TaskContext.get()
    partition = context.partitionId() if context is not None else -1
    offset = 0
    for batch in batches:
        for start in range(0, batch.num_rows, plan.batch_size):
            piece = batch.slice(start, plan.batch_size)
            where = f"partition {partition}, rows {offset}-{offset + piece.num_rows - 1}"
            inputs = {tensor: to_input(piece.column(i), specs[tensor], column, tensor, where)
                      for i, (column, tensor) in enumerate(plan.inputs)}
            result = fn(**inputs)
            arrays = [to_arrow_column(result[tensor], schema.field(column).type, tensor, piece.num_rows, where)
                      for tensor, column in plan.outputs]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
            offset += piece.num_rows
