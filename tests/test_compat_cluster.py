"""TensorFlowOnSpark 2.x call patterns on the standalone cluster, through ``from tfos import TFCluster, TFNode...``."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests import compat_mains
from tfos import TFCluster, TFParallel

NODES = 3


def _results(out: str) -> dict[str, dict]:
    found = {}
    for path in glob.glob(os.path.join(out, "*-*.json")):
        with open(path) as f:
            data = json.load(f)
        found[f"{data['job_name']}:{data['task_index']}"] = data
    return found


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    """600 real MNIST test images as tf.train.Example TFRecords in 6 files (``image``: 784 ints, ``label``)."""
    import tensorflow as tf

    images, labels = compat_mains.load_mnist("test", limit=600)
    path = tmp_path_factory.mktemp("tfr") / "mnist"
    path.mkdir()
    for part in range(6):
        with tf.io.TFRecordWriter(str(path / f"part-{part:05d}")) as writer:
            for i in range(part * 100, (part + 1) * 100):
                feature = {"image": tf.train.Feature(int64_list=tf.train.Int64List(value=images[i].reshape(-1))),
                           "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[i])]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return str(path)


def test_keras_fit_from_datafeed_generator_exports_with_compat(sc, tmp_path):
    images, labels = compat_mains.load_mnist("train", limit=960)
    rdd = sc.parallelize([(images[i].reshape(-1).tolist(), int(labels[i])) for i in range(960)], 6)
    export_dir = str(tmp_path / "export")
    args = {"out": str(tmp_path), "export_dir": export_dir, "batch_size": 32, "epochs": 2, "steps_per_epoch": 4}

    cluster = TFCluster.run(sc, compat_mains.keras_datafeed_fit, args, NODES, num_ps=0, tensorboard=False,
                            input_mode=TFCluster.InputMode.SPARK, master_node="chief")
    assert cluster.tensorboard_url() is None and cluster.num_executors == NODES
    assert cluster.defaultFS.startswith("file:") and cluster.working_dir == os.getcwd()
    assert cluster.cluster_meta["cluster_template"] == {"chief": [0], "worker": [1, 2]}
    cluster.train(rdd, 2)
    cluster.shutdown()

    nodes = _results(str(tmp_path))
    assert sorted(nodes) == ["chief:0", "worker:0", "worker:1"]
    for name, node in nodes.items():
        assert node["rows"] >= 4 * 32, (name, node)  # at least what one epoch of fit consumed
        assert node["worker_num"] == node["executor_id"] and node["num_workers"] == NODES
        assert node["mgr_state"] == "terminating" and node["done_feeding"] and node["queue_in"] == "_InputQueue"
    import tensorflow as tf

    model = tf.saved_model.load(export_dir)
    test_x, _ = compat_mains.load_mnist("test", limit=50)
    out = model.signatures["serving_default"](tf.constant(test_x.reshape(-1, 784) / 255.0, tf.float32))
    logits = next(iter(out.values())).numpy()
    assert logits.shape == (50, 10) and np.isfinite(logits).all()
    assert not glob.glob(os.path.join(os.getcwd(), "worker_model*"))  # non-chief saves leave nothing behind


def test_tensorflow_mode_reads_tfrecords_through_absolute_path(sc, tmp_path, tfrecords):
    cluster = TFCluster.run(sc, compat_mains.tfrecord_reader, {"out": str(tmp_path), "tfrecords": tfrecords}, NODES,
                            0, False, TFCluster.InputMode.TENSORFLOW, master_node="chief")
    cluster.shutdown(timeout=300)
    nodes = _results(str(tmp_path))
    assert sorted(nodes) == ["chief:0", "worker:0", "worker:1"]
    _, labels = compat_mains.load_mnist("test", limit=600)
    assert sorted(label for n in nodes.values() for label in n["labels"]) == sorted(labels.tolist())
    assert all(n["path"] == "file://" + tfrecords and n["files"] == 6 for n in nodes.values())
    assert nodes["chief:0"]["tf_config"]["task"] == {"type": "chief", "index": 0}


def test_tfparallel_inference_sharded_by_worker_num_writes_per_worker(sc, tmp_path, tfrecords):
    import tensorflow as tf

    images, labels = compat_mains.load_mnist("train", limit=3000)
    x = images.reshape(-1, 784) / 255.0
    module = tf.Module()
    module.w = tf.Variable(np.linalg.lstsq(x, np.eye(10)[labels], rcond=None)[0].astype("float32"))
    module.serve = tf.function(lambda batch: tf.matmul(batch, module.w),
                               input_signature=[tf.TensorSpec([None, 784], tf.float32)])
    model = str(tmp_path / "model")
    tf.saved_model.save(module, model)
    out = tmp_path / "predictions"
    out.mkdir()

    instances = TFParallel.run(sc, compat_mains.parallel_predict, {"model": model, "tfrecords": tfrecords,
                                                                  "out": str(out)}, NODES)
    assert sorted(i["worker_num"] for i in instances) == [0, 1, 2]
    assert all(i["num_workers"] == NODES and i["files"] == 2 and i["cuda"] is not None for i in instances)
    parts = sorted(os.listdir(out))
    assert parts == ["part-00000", "part-00001", "part-00002"]
    pairs = [line.split() for p in parts for line in (out / p).read_text().splitlines()]
    assert len(pairs) == 600
    assert np.mean([a == b for a, b in pairs]) > 0.6  # least squares on pixels; chance is 0.1


def test_streaming_shutdown_returns_on_an_external_stop_request(sc, tmp_path):
    from pyspark.streaming import StreamingContext

    images, labels = compat_mains.load_mnist("train", limit=300)
    rows = [(images[i].reshape(-1).tolist(), int(labels[i])) for i in range(300)]
    cluster = TFCluster.run(sc, compat_mains.stream_consumer, {"out": str(tmp_path)}, NODES, 0,
                            input_mode=TFCluster.InputMode.SPARK, master_node="chief")
    ssc = StreamingContext(sc, 1)
    # ten batches, then empty ones: the stream never ends by itself, only the stop request ends it
    stream = ssc.queueStream([sc.parallelize(rows[i:i + 30], NODES) for i in range(0, 300, 30)], oneAtATime=True)
    cluster.train(stream)
    ssc.start()
    addr = cluster.cluster_meta["server_addr"]

    def stop_from_another_process():
        deadline = time.monotonic() + 120
        while len(glob.glob(str(tmp_path / "started-*"))) < NODES and time.monotonic() < deadline:
            time.sleep(0.5)
        code = ("import sys; from tfos import reservation; "
                "reservation.Client((sys.argv[1], int(sys.argv[2]), sys.argv[3])).request_stop()")
        subprocess.run([sys.executable, "-c", code, addr[0], str(addr[1]), addr[2]], check=True, timeout=120)

    stopper = threading.Thread(target=stop_from_another_process, daemon=True)
    stopper.start()
    cluster.shutdown(ssc, timeout=300)
    stopper.join(5)
    assert cluster.shutdown_reason == "stop requested through the reservation server"
    from pyspark.streaming import StreamingContext as SC

    assert SC.getActive() is None
    nodes = _results(str(tmp_path))
    assert sorted(nodes) == ["chief:0", "worker:0", "worker:1"] and all(n["rows"] > 0 for n in nodes.values())
    assert cluster.state == "stopped"
