"""TensorFlowOnSpark's Spark ML chain: TFEstimator setters -> fit -> TFModel setters -> transform."""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from tests import compat_mains
from tfos.pipeline import TFEstimator, TFModel

ROWS = 1200


def test_estimator_and_model_setter_chain(sc, tmp_path):
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    images, labels = compat_mains.load_mnist("train", limit=ROWS)
    df = spark.createDataFrame([(images[i].reshape(-1).tolist(), int(labels[i])) for i in range(ROWS)],
                               "image array<int>, label int").repartition(3).cache()
    export_dir, model_dir = str(tmp_path / "export"), str(tmp_path / "model")

    estimator = TFEstimator(compat_mains.estimator_train, {"out": str(tmp_path)}) \
        .setInputMapping({"image": "x", "label": "y"}) \
        .setModelDir(model_dir) \
        .setExportDir(export_dir) \
        .setClusterSize(3) \
        .setEpochs(2) \
        .setBatchSize(40) \
        .setGraceSecs(5)
    assert TFEstimator(compat_mains.estimator_train, {}).getGraceSecs() == 30  # TensorFlowOnSpark's default
    model = estimator.fit(df)

    nodes = []
    for path in glob.glob(os.path.join(str(tmp_path), "*-*.json")):
        with open(path) as f:
            nodes.append(json.load(f))
    assert len(nodes) == 3 and sum(n["rows"] for n in nodes) == 2 * ROWS
    assert all(n["shapes"] == ["dict/list/list"] for n in nodes)  # {tensor: list of lists}, as TensorFlowOnSpark
    assert all((n["grace_secs"], n["model_dir"]) == (5, model_dir) for n in nodes)

    assert isinstance(model, TFModel)
    model = model.setInputMapping({"image": "x"}).setOutputMapping({"pred": "prediction"}) \
        .setSignatureDefKey("serving_default")
    out = model.transform(df).collect()
    truth = [r.label for r in df.select("label").collect()]
    assert len(out) == ROWS
    assert np.mean([r.prediction == y for r, y in zip(out, truth, strict=True)]) > 0.7
