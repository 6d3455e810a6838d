"""Batch inference with an exported MNIST SavedModel over a tfos cluster in InputMode.SPARK.

Spark feeds the test images (TFRecords or CSV from mnist_data_setup.py) to the nodes; every node
loads the SavedModel written by mnist_spark.py or mnist_tf.py (``--export_dir``), predicts batch
by batch and returns one result per row (predicted digit and true label) through
``DataFeed.batch_results``. The driver collects the output of ``cluster.inference``, checks that
every input row got exactly one output, optionally saves the predictions as CSV (``--output``)
and prints ``inference accuracy: 0.XXXX`` as its last line.

    spark-submit examples/mnist/mnist_inference.py --cluster_size 2 --images_labels mnist/test \
        --format tfr --export_dir mnist_export

TensorFlowOnSpark 2.x's command line (``--cluster_size --images_labels --export_dir --output``) works as
written: ``--format`` defaults to what the files hold, ``--cluster_size`` to the executors Spark was
given, and ``--export_dir`` may also be a directory of timestamped exports (the newest is used).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tfos import NodeContext

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mnist_spark import load  # noqa: E402
from mnist_tf import executor_count, spark_conf  # noqa: E402

OUTPUT_SCHEMA = "prediction bigint, label bigint"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """tfos's flags; TensorFlowOnSpark's ``--images`` and one-letter forms are aliases."""
    p = argparse.ArgumentParser(description="MNIST batch inference on tfos, InputMode.SPARK")
    p.add_argument("-n", "--cluster_size", type=int, default=None,
                   help="number of TF nodes (default: the executors Spark was given; 2 in local mode)")
    p.add_argument("-i", "--images_labels", "--images", dest="images_labels", default="mnist/test",
                   help="data made by mnist_data_setup.py (default FS)")
    p.add_argument("-f", "--format", choices=["auto", "tfr", "csv"], default="auto",
                   help="auto: TFRecords or CSV, from the first data file")
    p.add_argument("--export_dir", default="mnist_export",
                   help="SavedModel exported by mnist_spark.py or mnist_tf.py (or a directory of timestamped ones)")
    p.add_argument("-b", "--batch_size", type=int, default=256, help="rows per prediction batch on each node")
    p.add_argument("-o", "--output", default="predictions",
                   help="directory to save the predictions to as CSV ('' to skip)")
    return p.parse_args(argv)


def find_export(fs, export: str) -> str | None:
    """``export`` when it holds a SavedModel, else its newest (highest-named) sub-directory that does."""
    if fs.exists(export.rstrip("/") + "/saved_model.pb"):
        return export
    if not fs.isdir(export):
        return None
    versions = sorted((n for n in fs.listdir(export) if fs.exists(f"{export.rstrip('/')}/{n}/saved_model.pb")),
                      key=lambda n: (len(n), n))
    return f"{export.rstrip('/')}/{versions[-1]}" if versions else None


def check_inputs(args: argparse.Namespace, default_fs: str | None) -> str:
    """Exit naming the path when ``--images_labels`` or the SavedModel in ``--export_dir`` is missing;
    returns the SavedModel directory."""
    from tfos.io.filesystem import FileSystem
    from tfos.io.paths import absolute_path

    with FileSystem() as fs:  # local files or hdfs-native; TensorFlow is not imported here
        data = absolute_path(args.images_labels, default_fs, os.getcwd())
        if not fs.isdir(data):
            raise SystemExit(f"mnist_inference.py: error: --images_labels {data}: no such directory "
                             "(run mnist_data_setup.py first)")
        export = absolute_path(args.export_dir, default_fs, os.getcwd())
        found = find_export(fs, export)
        if found is None:
            what = "no saved_model.pb in it" if fs.isdir(export) else "no such directory"
            raise SystemExit(f"mnist_inference.py: error: --export_dir {export}: {what} "
                             "(export a model with mnist_spark.py or mnist_tf.py first)")
        if found != export:
            logging.info("--export_dir %s: using its newest export %s", export, found)
        return found


def main_fun(args: argparse.Namespace, ctx: NodeContext) -> None:
    """Runs on every node: load the SavedModel, predict every fed batch, return one result per row."""
    import numpy as np
    import tensorflow as tf

    from tfos.io.tf_dataset import TensorFlowIO

    log = logging.getLogger("mnist_inference")
    export_dir = ctx.absolute_path(args.export_dir)
    tio = TensorFlowIO(probe=export_dir)
    with tio.local_copy(export_dir) as local_export:
        model = tf.keras.models.load_model(local_export, compile=False)
    log.info("loaded %s (from %s through %s)", export_dir, local_export, tio.describe())

    @tf.function(reduce_retracing=True)
    def predict(images):
        return tf.argmax(model(images, training=False), axis=1)

    feed = ctx.get_data_feed(train_mode=False)
    rows = 0
    while not feed.should_stop():
        for batch in feed.batches(args.batch_size):  # {"image": (n, 784) int64, "label": (n,) int64}
            images = (batch["image"].astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
            feed.batch_results({"prediction": predict(images).numpy(), "label": batch["label"]})
            rows += len(batch["label"])
    log.info("predicted %d rows", rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    import tfos
    from tfos.io.paths import absolute_path, default_fs

    spark = SparkSession.builder.config(conf=spark_conf("mnist_inference", args.cluster_size or 2)).getOrCreate()
    sc = spark.sparkContext
    try:
        fs = default_fs(sc)
        args.export_dir = check_inputs(args, fs)  # before the cluster starts
        args.cluster_size = args.cluster_size or executor_count(sc, 2)
        logging.info("Spark master %s: %d TF nodes", sc.master, args.cluster_size)
        images = load(spark, absolute_path(args.images_labels, fs, os.getcwd()), args.format)
        expected = images.count()
        cluster = tfos.run(sc, main_fun, args, args.cluster_size, input_mode=tfos.InputMode.SPARK)
        try:
            begin = time.time()  # includes the nodes' start-up: feed tasks wait for the model to load
            # A DataFrame in, a DataFrame out: with output_schema the results are built in Arrow, one
            # row per input row, in partition order.
            predictions = cluster.inference(images, output_schema=OUTPUT_SCHEMA)
            outputs = [row.asDict() for row in predictions.collect()]
            elapsed = time.time() - begin
        finally:
            cluster.shutdown()
        if len(outputs) != expected:
            raise RuntimeError(f"cluster.inference returned {len(outputs)} outputs for {expected} input rows")
        if args.output:
            path = absolute_path(args.output, fs, os.getcwd())
            rows = [(int(out["prediction"]), int(out["label"])) for out in outputs]
            spark.createDataFrame(rows, OUTPUT_SCHEMA).write.mode("overwrite").csv(path, header=True)
            logging.info("saved %d predictions to %s", len(outputs), path)
    finally:
        spark.stop()
    correct = sum(int(out["prediction"] == out["label"]) for out in outputs)
    print(f"inferred {len(outputs)} rows in {elapsed:.1f}s ({len(outputs) / max(elapsed, 1e-6):.0f} rows/s)")
    print(f"inference accuracy: {correct / max(len(outputs), 1):.4f}")


if __name__ == "__main__":
    main()
