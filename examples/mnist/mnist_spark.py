"""MNIST CNN over a tfos cluster in InputMode.SPARK: Spark feeds the workers a training and a
validation input; Keras ``model.fit`` under MultiWorkerMirroredStrategy reads them through
``DataFeed.dataset`` (every worker gets the same number of batches per epoch, so no
``steps_per_epoch``). The chief exports a SavedModel; the driver evaluates it on the 10,000
test images and prints ``test accuracy: 0.XXXX`` as its last line.

    spark-submit examples/mnist/mnist_spark.py --images_labels mnist/train --test_images_labels mnist/test
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mnist_tf import build_model, evaluate_export  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="MNIST on tfos, InputMode.SPARK")
    p.add_argument("--cluster_size", type=int, default=2, help="number of TF nodes (executors)")
    p.add_argument("--images_labels", "--images", dest="images_labels", default="mnist/train",
                   help="training data made by mnist_data_setup.py (default FS)")
    p.add_argument("--test_images_labels", default="mnist/test", help="test data (held out; the last "
                   "--validation_rows of it are fed as the validation input)")
    p.add_argument("--format", choices=["tfr", "csv"], default="tfr")
    p.add_argument("--mode", choices=["train"], default="train")
    p.add_argument("--model_dir", "--model", dest="model_dir", default="mnist_spark_model",
                   help="checkpoint directory (one checkpoint per epoch)")
    p.add_argument("--export_dir", default="mnist_export", help="SavedModel export directory")
    p.add_argument("--batch_size", type=int, default=64, help="per-worker batch size")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--validation_rows", type=int, default=2000)
    return p.parse_args(argv)


def load(spark, path: str, fmt: str):
    """A DataFrame (image array<bigint> of 784 pixels, label bigint) from mnist_data_setup.py output."""
    from pyspark.sql import functions as F

    if fmt == "tfr":
        from tfos.io.dataframe_tfrecord import read_tfrecords_df

        return read_tfrecords_df(spark, path, schema="image array<bigint>, label bigint")
    lines = spark.read.text(path)
    values = F.split(F.col("value"), ",").cast("array<bigint>")
    return lines.select(F.slice(values, 2, 784).alias("image"), values[0].alias("label"))


def main_fun(args, ctx):
    """Runs on every node: MultiWorkerMirroredStrategy over the Spark-fed inputs."""
    import tensorflow as tf

    from tfos.training_checkpoint import TrainingCheckpoint

    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    def prepare(batch):
        image = tf.reshape(tf.cast(batch["image"], tf.float32) / 255.0, [-1, 28, 28, 1])
        return image, batch["label"]

    train = ctx.get_data_feed(train_mode=True, qname_in="train").dataset(args.batch_size).map(prepare)
    validation = ctx.get_data_feed(train_mode=True, qname_in="validation").dataset(256).map(prepare)
    with strategy.scope():
        model = build_model()
    ckpt = TrainingCheckpoint(model, ctx.absolute_path(args.model_dir), is_chief=ctx.worker_num == 0,
                              worker_index=ctx.worker_num)
    model.fit(train, validation_data=validation, epochs=args.epochs, callbacks=[ckpt.callback()],
              verbose=2 if ctx.worker_num == 0 else 0)
    ckpt.export_saved_model(ctx.absolute_path(args.export_dir))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    import tfos
    from tfos.io.paths import absolute_path, default_fs

    conf = SparkConf().setAppName("mnist_spark").setIfMissing("spark.master", f"local[{args.cluster_size}]")
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    sc = spark.sparkContext
    sc.addPyFile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_tf.py"))
    fs = default_fs(sc)
    train = load(spark, absolute_path(args.images_labels, fs, os.getcwd()), args.format)
    test = load(spark, absolute_path(args.test_images_labels, fs, os.getcwd()), args.format)
    validation = test.limit(args.validation_rows)
    begin = time.time()
    cluster = tfos.run(sc, main_fun, args, args.cluster_size, input_mode=tfos.InputMode.SPARK)
    cluster.train({"train": train, "validation": validation}, num_epochs=args.epochs)
    cluster.shutdown()
    logging.info("training took %.1fs", time.time() - begin)
    accuracy = evaluate_export(absolute_path(args.export_dir, fs, os.getcwd()),
                               absolute_path(args.test_images_labels, fs, os.getcwd()))
    spark.stop()
    print(f"test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
