"""MNIST CNN over a tfos cluster in InputMode.SPARK: Spark feeds the workers a training and a
validation input; Keras ``model.fit`` under MultiWorkerMirroredStrategy reads them through
``DataFeed.dataset`` (every worker gets the same number of batches per epoch, so no
``steps_per_epoch``). The chief exports a SavedModel; the driver evaluates it on the 10,000
test images and prints ``test accuracy: 0.XXXX`` as its last line.

    spark-submit examples/mnist/mnist_spark.py --images_labels mnist/train --test_images_labels mnist/test

TensorFlowOnSpark 2.x's command line works as written (``--cluster_size --images_labels --model_dir
--export_dir --epochs --batch_size --tensorboard``): ``--format`` defaults to what the files hold
(TFRecords or ``label,pixels`` CSV), and without ``--test_images_labels`` the test set is the ``test``
directory next to the training data when it exists (else no validation input and no evaluation, logged).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mnist_tf import build_model, evaluate_export, executor_count, find_test_set, spark_conf  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """tfos's flags; TensorFlowOnSpark's ``--images``, ``--model`` and one-letter forms are aliases."""
    p = argparse.ArgumentParser(description="MNIST on tfos, InputMode.SPARK")
    p.add_argument("-n", "--cluster_size", type=int, default=None,
                   help="number of TF nodes (default: the executors Spark was given; 2 in local mode)")
    p.add_argument("-i", "--images_labels", "--images", dest="images_labels", default="mnist/train",
                   help="training data made by mnist_data_setup.py (default FS)")
    p.add_argument("--test_images_labels", default=None, help="test data (held out; the last --validation_rows "
                   "of it are fed as the validation input); default: 'test' next to the training data, if any")
    p.add_argument("-f", "--format", choices=["auto", "tfr", "csv"], default="auto",
                   help="auto: TFRecords or CSV, from the first data file")
    p.add_argument("-X", "--mode", choices=["train"], default="train")
    p.add_argument("-m", "--model_dir", "--model", dest="model_dir", default="mnist_spark_model",
                   help="checkpoint directory (one checkpoint per epoch)")
    p.add_argument("--export_dir", default="mnist_export", help="SavedModel export directory")
    p.add_argument("-b", "--batch_size", type=int, default=64, help="per-worker batch size")
    p.add_argument("-e", "--epochs", type=int, default=4)
    p.add_argument("--validation_rows", type=int, default=2000)
    p.add_argument("-tb", "--tensorboard", action="store_true", help="run TensorBoard on the chief")
    p.add_argument("--max_restarts", type=int, default=0,
                   help="restart the TF cluster after this many node failures, resuming from the latest checkpoint")
    return p.parse_args(argv)


def detect_format(path: str) -> str:
    """``csv`` when the first non-empty ``part-*`` file of ``path`` starts like ``7,0,0,...``; else ``tfr``."""
    from tfos.io.filesystem import FileSystem

    with FileSystem() as fs:
        for name in fs.glob(path.rstrip("/") + "/part-*"):
            with fs.open(name, "rb") as f:
                head = f.read(4)
            if head:
                return "csv" if head[:1].isdigit() and b"," in head else "tfr"
    return "tfr"


def check_data(path: str, flag: str, script: str) -> None:
    """Exit before any cluster starts when ``path`` (fully qualified) is not a directory."""
    from tfos.io.filesystem import FileSystem

    with FileSystem() as fs:
        if not fs.isdir(path):
            raise SystemExit(f"{script}: error: {flag} {path}: no such directory (run mnist_data_setup.py first)")


def load(spark, path: str, fmt: str):
    """A DataFrame (image array<bigint> of 784 pixels, label bigint) from mnist_data_setup.py output."""
    from pyspark.sql import functions as F

    if fmt == "auto":
        fmt = detect_format(path)
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
    validation = None
    if args.validate:
        validation = ctx.get_data_feed(train_mode=True, qname_in="validation").dataset(256).map(prepare)
    with strategy.scope():
        model = build_model()
    ckpt = TrainingCheckpoint(model, ctx.absolute_path(args.model_dir), is_chief=ctx.worker_num == 0,
                              worker_index=ctx.worker_num)
    callbacks = [ckpt.callback()]
    if args.tensorboard and ctx.log_dir:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=ctx.log_dir))
    model.fit(train, validation_data=validation, epochs=args.epochs, callbacks=callbacks,
              verbose=2 if ctx.worker_num == 0 else 0)
    ckpt.export_saved_model(ctx.absolute_path(args.export_dir))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    import tfos
    from tfos.io.paths import absolute_path, default_fs

    spark = SparkSession.builder.config(conf=spark_conf("mnist_spark", args.cluster_size or 2)).getOrCreate()
    sc = spark.sparkContext
    sc.addPyFile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_tf.py"))
    fs = default_fs(sc)
    accuracy = None
    try:
        train_dir = absolute_path(args.images_labels, fs, os.getcwd())
        check_data(train_dir, "--images_labels", "mnist_spark.py")
        test_dir = find_test_set(args.test_images_labels, args.images_labels, fs)
        if test_dir is not None:
            check_data(test_dir, "--test_images_labels", "mnist_spark.py")
        args.validate = test_dir is not None
        args.cluster_size = args.cluster_size or executor_count(sc, 2)
        logging.info("Spark master %s: %d TF nodes", sc.master, args.cluster_size)
        inputs = {"train": load(spark, train_dir, args.format)}
        if test_dir is not None:
            inputs["validation"] = load(spark, test_dir, args.format).limit(args.validation_rows)
        begin = time.time()
        cluster = tfos.run(sc, main_fun, args, args.cluster_size, input_mode=tfos.InputMode.SPARK,
                           tensorboard=args.tensorboard, max_restarts=args.max_restarts)
        cluster.train(inputs, num_epochs=args.epochs)
        cluster.shutdown()
        logging.info("training took %.1fs", time.time() - begin)
        if test_dir is not None:
            fmt = detect_format(test_dir) if args.format == "auto" else args.format
            accuracy = evaluate_export(absolute_path(args.export_dir, fs, os.getcwd()), test_dir, fmt=fmt)
    finally:
        spark.stop()
    if accuracy is None:
        print("evaluation skipped: no test set (give --test_images_labels)")
    else:
        print(f"test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
