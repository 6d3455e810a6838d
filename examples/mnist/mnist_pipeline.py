"""MNIST as a Spark ML pipeline (TensorFlowOnSpark's ``mnist_pipeline`` with tfos): ``TFEstimator.fit``
trains the MNIST CNN on a tfos cluster fed from a DataFrame (InputMode.SPARK, Keras ``model.fit``
under MultiWorkerMirroredStrategy) and exports a SavedModel; ``TFModel.transform`` runs it over the
10,000 test images in every Spark task. The last line is ``test accuracy: 0.XXXX``, computed from
the transformed DataFrame.

    spark-submit examples/mnist/mnist_pipeline.py --images_labels mnist/train --test_images_labels mnist/test
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mnist_spark import load  # noqa: E402
from mnist_tf import build_model  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="MNIST as a Spark ML pipeline on tfos")
    p.add_argument("--cluster_size", type=int, default=2, help="number of TF nodes (executors)")
    p.add_argument("--images_labels", "--images", dest="images_labels", default="mnist/train",
                   help="training data made by mnist_data_setup.py (default FS)")
    p.add_argument("--test_images_labels", default="mnist/test", help="test data, run through TFModel.transform")
    p.add_argument("--format", choices=["tfr", "csv"], default="tfr")
    p.add_argument("--model_dir", default="mnist_pipeline_model", help="checkpoint directory")
    p.add_argument("--export_dir", default="mnist_pipeline_export", help="SavedModel export directory")
    p.add_argument("--batch_size", type=int, default=64, help="per-worker batch size")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--input_tensor", default="conv2d_input", help="the SavedModel's input (Keras names it)")
    p.add_argument("--output_tensor", default="dense_1", help="the SavedModel's output (the last layer)")
    return p.parse_args(argv)


def main_fun(args, ctx):
    """TFEstimator's train_fn, on every node: ``args`` holds the flags and the estimator's params."""
    import tensorflow as tf

    from tfos.training_checkpoint import TrainingCheckpoint

    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    def prepare(batch):  # the mapped columns, already scaled to 0..1 by Spark
        return tf.reshape(tf.cast(batch["image"], tf.float32), [-1, 28, 28, 1]), batch["label"]

    train = ctx.get_data_feed(train_mode=True).dataset(args.batch_size).map(prepare)
    with strategy.scope():
        model = build_model()
    ckpt = TrainingCheckpoint(model, ctx.absolute_path(args.model_dir), is_chief=ctx.worker_num == 0,
                              worker_index=ctx.worker_num)
    model.fit(train, epochs=args.epochs, callbacks=[ckpt.callback()], verbose=2 if ctx.worker_num == 0 else 0)
    ckpt.export_saved_model(ctx.absolute_path(args.export_dir))


def scaled(df):
    """Pixels 0..255 -> 0..1 in Spark, so training and inference see the same input."""
    from pyspark.sql import functions as F

    return df.select(F.transform("image", lambda v: v / 255.0).alias("image"), "label")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    from tfos.io.paths import absolute_path, default_fs
    from tfos.pipeline import TFEstimator

    conf = SparkConf().setAppName("mnist_pipeline").setIfMissing("spark.master", f"local[{args.cluster_size}]")
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    sc = spark.sparkContext
    here = os.path.dirname(os.path.abspath(__file__))
    for module in ("mnist_tf.py", "mnist_spark.py"):
        sc.addPyFile(os.path.join(here, module))
    fs = default_fs(sc)
    train = scaled(load(spark, absolute_path(args.images_labels, fs, os.getcwd()), args.format))
    test = scaled(load(spark, absolute_path(args.test_images_labels, fs, os.getcwd()), args.format)).cache()

    begin = time.time()
    estimator = (TFEstimator(main_fun, args)
                 .setInputMapping({"image": "image", "label": "label"})
                 .setClusterSize(args.cluster_size).setEpochs(args.epochs).setBatchSize(args.batch_size)
                 .setModelDir(args.model_dir).setExportDir(args.export_dir))
    model = estimator.fit(train)
    logging.info("fit took %.1fs", time.time() - begin)

    begin = time.time()
    model.setInputMapping({"image": args.input_tensor}).setOutputMapping({args.output_tensor: "logits"})
    predictions = model.transform(test)  # one row of 10 logits per test image, in order
    pairs = test.select("label").rdd.zip(predictions.rdd)  # same partitions, same rows each
    correct, total = pairs.map(lambda p: (int(p[0].label == max(range(10), key=p[1].logits.__getitem__)), 1)) \
        .reduce(lambda a, b: (a[0] + b[0], a[1] + b[1]))
    logging.info("transform of %d test images took %.1fs", total, time.time() - begin)
    spark.stop()
    print(f"test accuracy: {correct / total:.4f}")


if __name__ == "__main__":
    main()
