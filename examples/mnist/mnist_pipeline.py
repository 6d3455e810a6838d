"""MNIST as a Spark ML pipeline (TensorFlowOnSpark's ``mnist_pipeline`` with tfos): ``TFEstimator.fit``
trains the MNIST CNN on a tfos cluster fed from a DataFrame (InputMode.SPARK, Keras ``model.fit``
under MultiWorkerMirroredStrategy) and exports a SavedModel; ``TFModel.transform`` runs it over the
10,000 test images in every Spark task. The last line is ``test accuracy: 0.XXXX``, computed from
the transformed DataFrame.

    spark-submit examples/mnist/mnist_pipeline.py --images_labels mnist/train --test_images_labels mnist/test

TensorFlowOnSpark 2.x's command lines work as written: ``--mode train`` (the default) fits and exports,
then transforms the test set (``--test_images_labels``, else the ``test`` directory next to the
training data when it exists, else the step is skipped with a log line); ``--mode inference
--images_labels X --export_dir E --output P`` transforms X with the export and writes one JSON line per
image (``label``, ``prediction``) to P. ``--format`` defaults to what the files hold (TFRecords or CSV).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mnist_spark import check_data, load  # noqa: E402
from mnist_tf import build_model, executor_count, find_test_set, spark_conf  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """tfos's flags; TensorFlowOnSpark's ``--mode``, ``--output``, ``--tensorboard`` and one-letter forms too."""
    p = argparse.ArgumentParser(description="MNIST as a Spark ML pipeline on tfos")
    p.add_argument("-n", "--cluster_size", type=int, default=None,
                   help="number of TF nodes (default: the executors Spark was given; 2 in local mode)")
    p.add_argument("-i", "--images_labels", "--images", dest="images_labels", default="mnist/train",
                   help="data made by mnist_data_setup.py (default FS): training data, or the images to infer")
    p.add_argument("--test_images_labels", default=None, help="test data, run through TFModel.transform "
                   "(default: 'test' next to the training data, if any)")
    p.add_argument("-f", "--format", choices=["auto", "tfr", "csv"], default="auto",
                   help="auto: TFRecords or CSV, from the first data file")
    p.add_argument("-X", "--mode", choices=["train", "inference"], default="train")
    p.add_argument("-m", "--model_dir", "--model", dest="model_dir", default="mnist_pipeline_model",
                   help="checkpoint directory")
    p.add_argument("--export_dir", default="mnist_pipeline_export", help="SavedModel export directory")
    p.add_argument("-o", "--output", default="predictions", help="inference: predictions directory (JSON lines)")
    p.add_argument("-b", "--batch_size", type=int, default=64, help="per-worker batch size")
    p.add_argument("-e", "--epochs", type=int, default=3)
    p.add_argument("-tb", "--tensorboard", action="store_true", help="run TensorBoard on the chief")
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


def transform(model, df):
    """``df`` with a ``prediction`` column (argmax of the model's logits), through ``TFModel.transform``."""
    from pyspark.sql import functions as F

    predictions = model.transform(df)  # one row of 10 logits per image, in order
    pairs = df.select("label").rdd.zip(predictions.rdd)  # same partitions, same rows each
    rows = pairs.map(lambda p: (int(p[0].label), max(range(10), key=p[1].logits.__getitem__)))
    return df.sparkSession.createDataFrame(rows, "label bigint, prediction int").withColumn(
        "correct", F.col("label") == F.col("prediction"))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from tfos.io.paths import absolute_path, default_fs
    from tfos.pipeline import TFEstimator, TFModel

    spark = SparkSession.builder.config(conf=spark_conf("mnist_pipeline", args.cluster_size or 2)).getOrCreate()
    sc = spark.sparkContext
    here = os.path.dirname(os.path.abspath(__file__))
    for module in ("mnist_tf.py", "mnist_spark.py"):
        sc.addPyFile(os.path.join(here, module))
    fs = default_fs(sc)
    data_dir = absolute_path(args.images_labels, fs, os.getcwd())
    check_data(data_dir, "--images_labels", "mnist_pipeline.py")
    args.cluster_size = args.cluster_size or executor_count(sc, 2)
    logging.info("Spark master %s: %d TF nodes", sc.master, args.cluster_size)
    if args.mode == "train":
        test_dir = find_test_set(args.test_images_labels, args.images_labels, fs)
        if test_dir is not None:
            check_data(test_dir, "--test_images_labels", "mnist_pipeline.py")
        begin = time.time()
        estimator = (TFEstimator(main_fun, args)
                     .setInputMapping({"image": "image", "label": "label"})
                     .setClusterSize(args.cluster_size).setEpochs(args.epochs).setBatchSize(args.batch_size)
                     .setTensorboard(args.tensorboard).setModelDir(args.model_dir).setExportDir(args.export_dir))
        model = estimator.fit(scaled(load(spark, data_dir, args.format)))
        logging.info("fit took %.1fs", time.time() - begin)
        if test_dir is None:
            spark.stop()
            print("evaluation skipped: no test set (give --test_images_labels)")
            return
        images = scaled(load(spark, test_dir, args.format)).cache()
    else:
        model = TFModel(args).setExportDir(args.export_dir).setBatchSize(args.batch_size)
        images = scaled(load(spark, data_dir, args.format)).cache()
    begin = time.time()
    model.setInputMapping({"image": args.input_tensor}).setOutputMapping({args.output_tensor: "logits"})
    predictions = transform(model, images).cache()
    correct, total = predictions.select(F.sum(F.col("correct").cast("int")), F.count("*")).first()
    logging.info("transform of %d %s images took %.1fs", total, "test" if args.mode == "train" else "input",
                 time.time() - begin)
    if args.mode == "inference":
        output = absolute_path(args.output, fs, os.getcwd())
        predictions.select("label", "prediction").write.mode("overwrite").json(output)
        logging.info("wrote %d predictions to %s", total, output)
    spark.stop()
    print(f"{'test' if args.mode == 'train' else 'inference'} accuracy: {correct / total:.4f}")


if __name__ == "__main__":
    main()
