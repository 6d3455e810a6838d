"""Spark ML pipeline (``tfos.pipeline``): TFEstimator.fit on a tfos cluster and TFModel.transform,
on the standalone test cluster with real MNIST rows."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from tests import cluster_mains
from tfos import InputMode
from tfos.pipeline import TFEstimator, TFModel

ROWS = 2400


@pytest.fixture(scope="module")
def spark(sc):
    from pyspark.sql import SparkSession

    return SparkSession.builder.getOrCreate()


@pytest.fixture(scope="module")
def mnist_df(spark):
    """Real MNIST rows: ``image`` (784 ints), ``label``, and a column that is not mapped."""
    images, labels = cluster_mains.load_mnist("train", limit=ROWS)
    rows = [(images[i].reshape(-1).tolist(), int(labels[i]), f"row {i}") for i in range(ROWS)]
    return spark.createDataFrame(rows, "image array<int>, label int, note string").repartition(4).cache()


@pytest.fixture(scope="module")
def softmax_export(tmp_path_factory):
    """A SavedModel with ``serving_default``: ``x`` [batch, 784] float32 -> ``pred``, ``prob``."""
    import tensorflow as tf

    images, labels = cluster_mains.load_mnist("train", limit=3000)
    x = images.reshape(-1, 784) / 255.0
    w = np.linalg.lstsq(x, np.eye(10)[labels], rcond=None)[0].astype("float32") * 10
    path = str(tmp_path_factory.mktemp("softmax") / "export")
    module = cluster_mains.softmax_module(tf, w, np.zeros(10, "float32"))
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def _results(out: str) -> list[dict]:
    found = []
    for path in sorted(glob.glob(os.path.join(out, "*-*.json"))):
        if not os.path.basename(path).startswith("export-"):
            with open(path) as f:
                found.append(json.load(f))
    return found


def test_fit_feeds_the_mapped_columns_and_the_model_transforms_every_row(spark, mnist_df, tmp_path):
    export_dir = str(tmp_path / "export")
    estimator = (TFEstimator(cluster_mains.pipeline_train, {"out": str(tmp_path), "note": "from tf_args"},
                             export_fn=cluster_mains.pipeline_export)
                 .setInputMapping({"image": "x", "label": "y"}).setClusterSize(3).setEpochs(3).setBatchSize(50)
                 .setExportDir(export_dir))
    model = estimator.fit(mnist_df)

    nodes = _results(str(tmp_path))
    assert len(nodes) == 3
    for node in nodes:  # tf_args and every param reach train_fn; only the mapped columns are fed
        assert node["keys"] == ["x", "y"]
        assert (node["epochs"], node["batch_size"], node["cluster_size"], node["note"]) == (3, 50, 3, "from tf_args")
    assert sum(n["rows"] for n in nodes) == 3 * ROWS  # 4 partitions of 600 rows: no remainder
    assert len(glob.glob(os.path.join(str(tmp_path), "export-*.json"))) == 1  # export_fn ran once

    assert isinstance(model, TFModel)
    assert (model.getExportDir(), model.getBatchSize(), model.getInputMapping()) == \
        (export_dir, 50, {"image": "x", "label": "y"})
    model.setInputMapping({"image": "x"}).setOutputMapping({"pred": "prediction", "prob": "probability"})
    predictions = model.transform(mnist_df)
    assert predictions.columns == ["prediction", "probability"]
    assert [f.dataType.simpleString() for f in predictions.schema.fields] == ["bigint", "array<float>"]
    out = predictions.collect()
    labels = [r.label for r in mnist_df.select("label").collect()]  # the same partitions, in the same order
    assert len(out) == len(labels) == ROWS
    accuracy = np.mean([r.prediction == y for r, y in zip(out, labels, strict=True)])
    assert accuracy > 0.8, accuracy  # softmax regression on a third of the rows; chance is 0.1
    assert all(len(r.probability) == 10 and abs(sum(r.probability) - 1) < 1e-4 for r in out[:50])


def test_transform_reshapes_casts_and_batches(spark, softmax_export):
    model = (TFModel({}).setExportDir(softmax_export).setBatchSize(7)
             .setInputMapping({"image": "x"}).setOutputMapping({"pred": "digit"}))
    images, labels = cluster_mains.load_mnist("test", limit=300)
    df = spark.createDataFrame([(images[i].reshape(28, 28).tolist(), int(labels[i])) for i in range(300)],
                               "image array<array<int>>, label int")
    out = model.transform(df).collect()  # [28, 28] ints reshaped to [784] and cast to float32, 7 rows a call
    assert len(out) == 300
    assert np.mean([r.digit == y for r, y in zip(out, labels, strict=True)]) > 0.6  # least squares; chance 0.1


def test_transform_errors_name_what_to_change(spark, mnist_df, softmax_export, tmp_path):
    base = TFModel({}).setInputMapping({"image": "x"}).setOutputMapping({"pred": "p"})
    with pytest.raises(ValueError, match="setExportDir"):
        base.copy().transform(mnist_df)
    with pytest.raises(ValueError, match=r"column\(s\) \['pixels'\].*its columns: \['image', 'label', 'note'\]"):
        base.copy().setExportDir(softmax_export).setInputMapping({"pixels": "x"}).transform(mnist_df)
    with pytest.raises(ValueError, match=r"input tensor\(s\) \['images'\].*its inputs: \['x'\]"):
        base.copy().setExportDir(softmax_export).setInputMapping({"image": "images"}).transform(mnist_df)
    with pytest.raises(ValueError, match=r"output tensor\(s\) \['logits'\].*its outputs: \['pred', 'prob'\]"):
        base.copy().setExportDir(softmax_export).setOutputMapping({"logits": "p"}).transform(mnist_df)
    with pytest.raises(ValueError, match=r"no signature 'predict'.*\['serving_default'\]"):
        base.copy().setExportDir(softmax_export).setSignatureDefKey("predict").transform(mnist_df)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        base.copy().setExportDir(str(tmp_path / "missing")).transform(mnist_df)
    with_null = spark.createDataFrame([([0] * 784,), (None,)], "image array<int>").coalesce(1)
    with pytest.raises(Exception, match=r"column 'image' has a null at partition 0, rows 0-1 \(row 1 of this batch\)"):
        base.copy().setExportDir(softmax_export).transform(with_null).collect()
    short = mnist_df.selectExpr("slice(image, 1, 100) as image")
    with pytest.raises(Exception, match=r"column 'image' at partition \d+, rows 0-\d+ has rows of shape \[100\]"):
        base.copy().setExportDir(softmax_export).transform(short).collect()


def test_fit_checks_its_params_before_starting_a_cluster(mnist_df):
    with pytest.raises(ValueError, match="input_mapping is empty"):
        TFEstimator(cluster_mains.pipeline_train, {}).fit(mnist_df)
    with pytest.raises(ValueError, match=r"column\(s\) \['pixels'\]"):
        TFEstimator(cluster_mains.pipeline_train, {}).setInputMapping({"pixels": "x"}).fit(mnist_df)
    with pytest.raises(ValueError, match="setTFRecordDir"):
        TFEstimator(cluster_mains.pipeline_count_records, {}).setInputMode(InputMode.TENSORFLOW).fit(mnist_df)
    with pytest.raises(ValueError, match="export_fn needs export_dir"):
        TFEstimator(cluster_mains.pipeline_train, {}, export_fn=cluster_mains.pipeline_export) \
            .setInputMapping({"image": "x"}).fit(mnist_df)
    with pytest.raises(TypeError, match="train_fn must be a function"):
        TFEstimator("main", {})


def test_fit_in_tensorflow_mode_writes_the_columns_as_tfrecords_for_the_nodes(mnist_df, tmp_path):
    tfr = str(tmp_path / "tfr")
    (TFEstimator(cluster_mains.pipeline_count_records, {"out": str(tmp_path)})
     .setInputMode(InputMode.TENSORFLOW).setTFRecordDir(tfr).setInputMapping({"label": "y"}).setClusterSize(3)
     .fit(mnist_df))
    nodes = _results(str(tmp_path))
    assert sorted(n["records"] for n in nodes) == [0, 0, ROWS]  # the first worker counted every record
    assert {n["tfrecord_dir"] for n in nodes} == {tfr}


def test_transform_loads_a_savedmodel_from_hdfs(spark, softmax_export, hdfs_url):
    import uuid

    from tfos.io.filesystem import FileSystem

    remote = f"{hdfs_url}/tmp/tfos-pipeline-{uuid.uuid4().hex[:8]}/export"
    with FileSystem() as fs:
        fs.copytree(softmax_export, remote)
    images, labels = cluster_mains.load_mnist("test", limit=200)
    df = spark.createDataFrame([(images[i].reshape(-1).tolist(),) for i in range(200)], "image array<int>")
    model = TFModel({}).setExportDir(remote).setInputMapping({"image": "x"}).setOutputMapping({"pred": "digit"})
    out = [r.digit for r in model.transform(df).collect()]
    assert len(out) == 200 and np.mean(np.array(out) == labels) > 0.6
    with FileSystem() as fs:
        fs.delete(remote.rsplit("/", 1)[0], recursive=True)


def test_transform_limits_tensorflow_to_the_gpus_spark_gave_the_task():
    from tfos.saved_model_signature import task_gpu_env

    assert task_gpu_env({"gpu": ["2", "3"]}, tf_imported=False) == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert task_gpu_env({"gpu": ["2"]}, tf_imported=True) == {}  # too late: TF already chose its devices
    assert task_gpu_env({}, tf_imported=False) == {} and task_gpu_env(None, tf_imported=False) == {}
