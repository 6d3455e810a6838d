"""MNIST CNN over a tfos cluster in InputMode.TENSORFLOW: each worker reads TFRecords itself.

Keras ``model.fit`` under MultiWorkerMirroredStrategy (tf-keras, ``TF_USE_LEGACY_KERAS=1``,
which tfos sets on every node), checkpoints in ``--model_dir`` (a rerun resumes from the
latest), the chief exports a SavedModel to ``--export_dir``, then the driver evaluates the
export on the 10,000 test images and prints ``test accuracy: 0.XXXX`` as its last line.

    spark-submit examples/mnist/mnist_tf.py --images_labels mnist/train --test_images_labels mnist/test

Every path may be local or ``hdfs://``. ``--hdfs_io`` picks how TensorFlow reaches HDFS:
``tensorflow_io`` (TensorFlow reads and writes ``hdfs://`` itself; needs tensorflow-io and
libhdfs), ``tfos`` (tfos's hdfs-native layer streams the TFRecords, uploads checkpoints and the
export atomically, downloads the export for evaluation) or ``auto`` (tensorflow-io when usable).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

FEATURES = {"image": ("int64", [784]), "label": ("int64", [1])}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="MNIST on tfos, InputMode.TENSORFLOW")
    p.add_argument("--cluster_size", type=int, default=2, help="number of TF nodes (executors)")
    p.add_argument("--images_labels", "--images", dest="images_labels", default="mnist/train",
                   help="TFRecord directory of training examples (default FS)")
    p.add_argument("--test_images_labels", default="mnist/test", help="TFRecord directory of test examples")
    p.add_argument("--format", choices=["tfr"], default="tfr", help="input format (TFRecords)")
    p.add_argument("--mode", choices=["train"], default="train")
    p.add_argument("--model_dir", "--model", dest="model_dir", default="mnist_model",
                   help="checkpoint directory (a rerun resumes from its latest checkpoint)")
    p.add_argument("--export_dir", default="mnist_export", help="SavedModel export directory")
    p.add_argument("--batch_size", type=int, default=64, help="per-worker batch size")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=0,
                   help="total training steps (0: epochs x one pass over the data)")
    p.add_argument("--train_examples", type=int, default=22699, help="examples in --images_labels")
    p.add_argument("--tensorboard", action="store_true")
    p.add_argument("--hdfs_io", choices=["auto", "tensorflow_io", "tfos"], default="auto",
                   help="how TensorFlow reaches hdfs://: tensorflow-io, tfos's own I/O layer, or auto")
    return p.parse_args(argv)


def parse_example(serialized):
    import tensorflow as tf

    spec = {name: tf.io.FixedLenFeature(shape, getattr(tf, dtype)) for name, (dtype, shape) in FEATURES.items()}
    ex = tf.io.parse_example(serialized, spec)
    image = tf.reshape(tf.cast(ex["image"], tf.float32) / 255.0, [-1, 28, 28, 1])
    return image, ex["label"][:, 0]


def build_model():
    import tensorflow as tf

    layers = tf.keras.layers
    model = tf.keras.Sequential([
        layers.Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dropout(0.25),
        layers.Dense(128, activation="relu"),
        layers.Dense(10),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def main_fun(args, ctx):
    """Runs on every node: MultiWorkerMirroredStrategy training from TFRecords."""
    import tensorflow as tf

    from tfos.io.tf_dataset import TensorFlowIO
    from tfos.training_checkpoint import TrainingCheckpoint

    log = logging.getLogger("mnist")
    train_dir = ctx.absolute_path(args.images_labels)
    tio = TensorFlowIO(args.hdfs_io, probe=train_dir)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    global_batch = args.batch_size * strategy.num_replicas_in_sync
    files = training_files(tio, train_dir)
    log.info("reading %d TFRecord files from %s through %s", len(files), train_dir, tio.describe())
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = (tio.tfrecord_dataset(files, num_parallel_reads=2).shuffle(10000, seed=ctx.worker_num)
          .repeat().batch(global_batch).map(parse_example).prefetch(4).with_options(options))
    steps_per_epoch = max(1, args.train_examples // global_batch)
    epochs = args.epochs if not args.steps else max(1, -(-args.steps // steps_per_epoch))
    with strategy.scope():
        model = build_model()
    ckpt = TrainingCheckpoint(model, ctx.absolute_path(args.model_dir), is_chief=ctx.worker_num == 0,
                              worker_index=ctx.worker_num, io=tio)
    initial_epoch = ckpt.restore()
    log.info("starting at epoch %d (step %d) of %d epochs x %d steps", initial_epoch,
             initial_epoch * steps_per_epoch, epochs, steps_per_epoch)
    callbacks = [ckpt.callback()]
    if ctx.job_name in ("chief", "worker") and args.tensorboard and ctx.log_dir:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=ctx.log_dir))
    model.fit(ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
              callbacks=callbacks, verbose=2 if ctx.worker_num == 0 else 0)
    ckpt.export_saved_model(ctx.absolute_path(args.export_dir))


def training_files(tio, data_dir: str) -> list[str]:
    """The ``part-*`` TFRecord files of ``data_dir``; FileNotFoundError naming the path when there are none."""
    files = tio.glob(data_dir.rstrip("/") + "/part-*")
    if files:
        return files
    if not tio.exists(data_dir):
        raise FileNotFoundError(errno.ENOENT, "no such TFRecord directory (run mnist_data_setup.py first)", data_dir)
    raise FileNotFoundError(errno.ENOENT, "no part-* TFRecord files (run mnist_data_setup.py first) in", data_dir)


def evaluate_export(export_dir: str, test_dir: str, hdfs_io: str = "auto") -> float:
    """Accuracy of the exported SavedModel over every record in ``test_dir`` (local or hdfs://)."""
    import tensorflow as tf

    from tfos.io.tf_dataset import TensorFlowIO

    tio = TensorFlowIO(hdfs_io, probe=test_dir)
    files = training_files(tio, test_dir)
    with tio.local_copy(export_dir) as local_export:
        logging.info("evaluating %s (loaded from %s) on %s through %s", export_dir, local_export, test_dir,
                     tio.describe())
        model = tf.keras.models.load_model(local_export, compile=False)
    correct = total = 0
    for images, labels in tio.tfrecord_dataset(files).batch(1000).map(parse_example):
        preds = tf.argmax(model(images, training=False), axis=1)
        correct += int(tf.reduce_sum(tf.cast(preds == labels, tf.int32)))
        total += int(labels.shape[0])
    if total == 0:
        raise ValueError(f"no test records found in {test_dir}")
    return correct / total


def check_inputs(args: argparse.Namespace, default_fs: str | None) -> None:
    """Fail before starting the cluster when an input directory is missing (the message names it).

    ``default_fs`` None checks only the paths that carry a scheme (before Spark starts).
    """
    from tfos.io.filesystem import FileSystem, split_url
    from tfos.io.paths import absolute_path, has_scheme

    with FileSystem() as fs:  # TensorFlow is not imported here: local files or hdfs-native
        for flag, value in (("--images_labels", args.images_labels), ("--test_images_labels", args.test_images_labels)):
            if default_fs is None and not has_scheme(value):
                continue
            path = absolute_path(value, default_fs, os.getcwd())
            if split_url(path)[0] in ("", "file", "hdfs", "viewfs") and not fs.isdir(path):
                raise SystemExit(f"mnist_tf.py: error: {flag} {path}: no such directory "
                                 "(run mnist_data_setup.py first)")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark import SparkConf, SparkContext

    import tfos
    from tfos.io.paths import absolute_path, default_fs

    check_inputs(args, None)
    conf = SparkConf().setAppName("mnist_tf")
    conf.setIfMissing("spark.master", f"local[{args.cluster_size}]")
    sc = SparkContext(conf=conf)
    fs = default_fs(sc)
    try:
        check_inputs(args, fs)
        begin = time.time()
        cluster = tfos.run(sc, main_fun, args, args.cluster_size, input_mode=tfos.InputMode.TENSORFLOW,
                           tensorboard=args.tensorboard, log_dir=None)
        cluster.shutdown()
        logging.info("training took %.1fs", time.time() - begin)
        accuracy = evaluate_export(absolute_path(args.export_dir, fs, os.getcwd()),
                                   absolute_path(args.test_images_labels, fs, os.getcwd()), args.hdfs_io)
    finally:
        sc.stop()
    print(f"test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
