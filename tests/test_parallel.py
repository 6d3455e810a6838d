"""TFParallel.run: independent TF instances per executor, e.g. batch inference from a SavedModel."""

from __future__ import annotations

import numpy as np
import pytest

from tests import cluster_mains
from tfos import TFParallel


@pytest.fixture(scope="module")
def linear_model(tmp_path_factory):
    """A tiny SavedModel (least squares on one-hot labels of real MNIST) with a ``serve`` signature."""
    import tensorflow as tf

    images, labels = cluster_mains.load_mnist("train", limit=3000)
    x = images.reshape(-1, 784) / 255.0
    w = np.linalg.lstsq(x, np.eye(10)[labels], rcond=None)[0].astype("float32")
    module = tf.Module()
    module.w = tf.Variable(w)
    module.serve = tf.function(lambda batch: tf.matmul(batch, module.w),
                               input_signature=[tf.TensorSpec([None, 784], tf.float32)])
    path = str(tmp_path_factory.mktemp("linear") / "model")
    tf.saved_model.save(module, path)
    return path


def test_parallel_instances_shard_and_score_every_row_once(sc, linear_model):
    out = TFParallel.run(sc, cluster_mains.parallel_inference, {"model": linear_model, "rows": 1000}, 3)
    assert sorted(r["worker_num"] for r in out) == [0, 1, 2]
    rows = sorted(i for r in out for i in r["rows"])
    assert rows == list(range(1000))
    _, labels = cluster_mains.load_mnist("test", limit=1000)
    correct = sum(int(p == labels[i]) for r in out for i, p in zip(r["rows"], r["pred"], strict=True))
    assert correct / 1000 > 0.6  # a least-squares linear model; chance is 0.1


def test_parallel_instance_failure_raises(sc):
    with pytest.raises(Exception, match="No such file|not found|does not exist|SavedModel"):
        TFParallel.run(sc, cluster_mains.parallel_inference, {"model": "/nonexistent/model", "rows": 10}, 2)
