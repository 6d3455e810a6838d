"""End to end: tfos.run(InputMode.SPARK) + cluster.train feeding Keras model.fit under
MultiWorkerMirroredStrategy through ``DataFeed.dataset()``, on uneven partitions, with no
``steps_per_epoch``: every worker must get the same batches, or fit would hang."""

from __future__ import annotations

import json
import os

import pytest

import tfos
from tfos import InputMode


def keras_fit_on_feed(args, ctx):
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed(train_mode=True)
    ds = feed.dataset(args["batch_size"])
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(8, activation="relu", input_shape=(16,)),
                                     tf.keras.layers.Dense(3)])
        model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ds, epochs=args["epochs"], verbose=0)
    path = os.path.join(args["out"], f"{ctx.job_name}-{ctx.task_index}.json")
    with open(path, "w") as f:
        json.dump({"loss": history.history["loss"], "rows": feed.rows_read, "epochs": feed.epochs_read}, f)


@pytest.mark.slow
def test_keras_fit_under_mwms_on_uneven_partitions_never_hangs(sc, tmp_path):
    import numpy as np

    sizes = [400, 7, 650, 1, 89]  # 1147 rows over 3 workers: 382 each per epoch, 1 left out
    starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    data = sc.parallelize(range(len(sizes)), len(sizes)).flatMap(
        lambda p: [(np.full(16, g % 7, dtype=np.float32), g % 3) for g in range(starts[p], starts[p] + sizes[p])])
    args = {"out": str(tmp_path), "batch_size": 32, "epochs": 3}
    with tfos.run(sc, keras_fit_on_feed, args, 3, input_mode=InputMode.SPARK) as cluster:
        cluster.train(data, num_epochs=3, feed_timeout=300)
    outputs = [json.load(open(tmp_path / f"worker-{i}.json")) for i in range(3)]
    assert [o["rows"] for o in outputs] == [382 * 3] * 3
    assert all(o["epochs"] == 3 and len(o["loss"]) == 3 for o in outputs)
    assert outputs[0]["loss"] == outputs[1]["loss"] == outputs[2]["loss"]  # one synchronized model
