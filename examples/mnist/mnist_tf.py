"""MNIST CNN over a tfos cluster in InputMode.TENSORFLOW: each worker reads TFRecords itself.

Keras ``model.fit`` under MultiWorkerMirroredStrategy (tf-keras, ``TF_USE_LEGACY_KERAS=1``,
which tfos sets on every node), checkpoints in ``--model_dir`` (a rerun resumes from the
latest), the chief exports a SavedModel to ``--export_dir``, then the driver evaluates the
export on the 10,000 test images and prints ``test accuracy: 0.XXXX`` as its last line.

    spark-submit examples/mnist/mnist_tf.py --images_labels mnist/train --test_images_labels mnist/test

TensorFlowOnSpark's command line works as written, e.g. ``--images hdfs://.../mnist/tfr/train --format tfr
--mode train --model mnist_model --steps 1000``: ``--steps N`` trains exactly N global steps (a rerun with
the same ``--model`` counts the steps already in its checkpoint), and without ``--test_images_labels``
the test set is the ``test`` directory next to the training data (``.../train`` -> ``.../test``) when
it exists; otherwise evaluation is skipped with a log line. ``--cluster_size`` defaults to the
executors Spark was given (``--num-executors``, or ``--total-executor-cores`` / ``--executor-cores``).

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

from tfos.spark_app import executor_count, spark_conf, submitted_master  # noqa: F401 - re-exported for the scripts

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

FEATURES = {"image": ("int64", [784]), "label": ("int64", [1])}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags of tfos's MNIST examples; TensorFlowOnSpark's names (``--images``, ``--model``, ``-s`` ...) are aliases."""
    p = argparse.ArgumentParser(description="MNIST on tfos, InputMode.TENSORFLOW")
    p.add_argument("-n", "--cluster_size", type=int, default=None,
                   help="number of TF nodes (default: the executors Spark was given; 2 in local mode)")
    p.add_argument("-i", "--images_labels", "--images", dest="images_labels", default="mnist/train",
                   help="TFRecord directory of training examples (default FS)")
    p.add_argument("--test_images_labels", default=None,
                   help="TFRecord directory of test examples (default: 'test' next to the training data, "
                        "when it exists; else evaluation is skipped)")
    p.add_argument("-f", "--format", choices=["tfr"], default="tfr", help="input format (TFRecords)")
    p.add_argument("-X", "--mode", choices=["train"], default="train")
    p.add_argument("-m", "--model_dir", "--model", dest="model_dir", default="mnist_model",
                   help="checkpoint directory (a rerun resumes from its latest checkpoint)")
    p.add_argument("--export_dir", default="mnist_export", help="SavedModel export directory")
    p.add_argument("-b", "--batch_size", type=int, default=64, help="per-worker batch size")
    p.add_argument("-e", "--epochs", type=int, default=3, help="epochs to train (when --steps is 0)")
    p.add_argument("-s", "--steps", type=int, default=0,
                   help="global training steps in total, counting those already in --model_dir's checkpoint "
                        "(0: --epochs x --steps_per_epoch)")
    p.add_argument("--steps_per_epoch", type=int, default=0,
                   help="steps per epoch (0: one pass over --train_examples)")
    p.add_argument("--train_examples", type=int, default=22699, help="examples in --images_labels")
    p.add_argument("--shuffle_size", "--buffer_size", dest="shuffle_size", type=int, default=10000,
                   help="shuffle buffer (records)")
    p.add_argument("-r", "--readers", type=int, default=2, help="TFRecord files read in parallel per worker")
    p.add_argument("-o", "--output", default="predictions",
                   help="TensorFlowOnSpark's inference output flag; unused when training (see mnist_inference.py)")
    p.add_argument("-c", "--rdma", default=False, help="TensorFlowOnSpark flag, ignored (no RDMA transport)")
    p.add_argument("-tb", "--tensorboard", action="store_true")
    p.add_argument("--plot", nargs="?", const="", default=None, metavar="PNG",
                   help="at the end write every node's loss/accuracy against step as a PNG (default: "
                        "<model_dir>/progress.png)")
    p.add_argument("--max_restarts", type=int, default=0,
                   help="restart the TF cluster after this many node failures, resuming from the latest checkpoint")
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
    ds = (tio.tfrecord_dataset(files, num_parallel_reads=max(1, args.readers))
          .shuffle(args.shuffle_size, seed=ctx.worker_num)
          .repeat().batch(global_batch).map(parse_example).prefetch(4).with_options(options))
    steps_per_epoch = args.steps_per_epoch or max(1, args.train_examples // global_batch)
    with strategy.scope():
        model = build_model()
    ckpt = TrainingCheckpoint(model, ctx.absolute_path(args.model_dir), is_chief=ctx.worker_num == 0,
                              worker_index=ctx.worker_num, io=tio)
    initial_epoch = ckpt.restore()
    import tfos

    callbacks = [ckpt.callback(), tfos.ProgressCallback(ctx, batch_size=global_batch)]  # to the driver's console
    if ctx.job_name in ("chief", "worker") and args.tensorboard and ctx.log_dir:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=ctx.log_dir))
    start_step = int(model.optimizer.iterations.numpy())
    if args.steps:
        # --steps is the global step target: a partial last epoch stops at it exactly.
        remaining = max(0, args.steps - start_step)
        epochs = initial_epoch + -(-remaining // steps_per_epoch)
        log.info("starting at step %d of %d steps: %d to train (%d steps per epoch)", start_step, args.steps,
                 remaining, steps_per_epoch)
        callbacks.append(stop_at_step(model, args.steps))
    else:
        epochs = args.epochs
        log.info("starting at epoch %d (step %d) of %d epochs x %d steps", initial_epoch, start_step, epochs,
                 steps_per_epoch)
    model.fit(ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
              callbacks=callbacks, verbose=2 if ctx.worker_num == 0 else 0)
    step = int(model.optimizer.iterations.numpy())
    log.info("trained %d steps in this run: global step %d", step - start_step, step)
    ckpt.export_saved_model(ctx.absolute_path(args.export_dir))


def stop_at_step(model, last_step: int):
    """Keras callback ending ``fit`` once the optimizer has taken ``last_step`` steps (all workers agree)."""
    import tensorflow as tf

    def on_train_batch_end(batch: int, logs: dict | None = None) -> None:
        if int(model.optimizer.iterations.numpy()) >= last_step:
            model.stop_training = True

    return tf.keras.callbacks.LambdaCallback(on_train_batch_end=on_train_batch_end)


def training_files(tio, data_dir: str) -> list[str]:
    """The ``part-*`` TFRecord files of ``data_dir``; FileNotFoundError naming the path when there are none."""
    files = tio.glob(data_dir.rstrip("/") + "/part-*")
    if files:
        return files
    if not tio.exists(data_dir):
        raise FileNotFoundError(errno.ENOENT, "no such TFRecord directory (run mnist_data_setup.py first)", data_dir)
    raise FileNotFoundError(errno.ENOENT, "no part-* TFRecord files (run mnist_data_setup.py first) in", data_dir)


def evaluate_export(export_dir: str, test_dir: str, hdfs_io: str = "auto", fmt: str = "tfr") -> float:
    """Accuracy of the exported SavedModel over every record in ``test_dir`` (local or hdfs://; TFRecords, or
    ``label,pixels`` CSV lines with ``fmt='csv'``)."""
    import tensorflow as tf

    from tfos.io.tf_dataset import TensorFlowIO

    tio = TensorFlowIO(hdfs_io, probe=test_dir)
    if fmt == "csv":
        batches = csv_batches(test_dir)
    else:
        batches = tio.tfrecord_dataset(training_files(tio, test_dir)).batch(1000).map(parse_example)
    with tio.local_copy(export_dir) as local_export:
        logging.info("evaluating %s (loaded from %s) on %s through %s", export_dir, local_export, test_dir,
                     tio.describe())
        model = tf.keras.models.load_model(local_export, compile=False)
    correct = total = 0
    for images, labels in batches:
        preds = tf.argmax(model(images, training=False), axis=1)
        correct += int(tf.reduce_sum(tf.cast(preds == labels, tf.int64)))
        total += int(labels.shape[0])
    if total == 0:
        raise ValueError(f"no test records found in {test_dir}")
    return correct / total


def csv_batches(data_dir: str):
    """(images [n, 28, 28, 1] float32 in 0..1, labels [n] int64) per ``part-*`` CSV file of ``data_dir``."""
    import io

    import numpy as np

    from tfos.io.filesystem import FileSystem

    with FileSystem() as fs:
        for name in fs.glob(data_dir.rstrip("/") + "/part-*"):
            rows = np.loadtxt(io.BytesIO(fs.read_bytes(name)), delimiter=",", dtype=np.int64, ndmin=2)
            if len(rows):
                yield (rows[:, 1:] / 255.0).astype(np.float32).reshape(-1, 28, 28, 1), rows[:, 0]


def check_inputs(args: argparse.Namespace, default_fs: str | None) -> None:
    """Fail before starting the cluster when an input directory is missing (the message names it).

    ``default_fs`` None checks only the paths that carry a scheme (before Spark starts).
    """
    from tfos.io.filesystem import FileSystem, split_url
    from tfos.io.paths import absolute_path, has_scheme

    with FileSystem() as fs:  # TensorFlow is not imported here: local files or hdfs-native
        for flag, value in (("--images_labels", args.images_labels), ("--test_images_labels", args.test_images_labels)):
            if value is None or default_fs is None and not has_scheme(value):
                continue
            path = absolute_path(value, default_fs, os.getcwd())
            if split_url(path)[0] in ("", "file", "hdfs", "viewfs") and not fs.isdir(path):
                raise SystemExit(f"mnist_tf.py: error: {flag} {path}: no such directory "
                                 "(run mnist_data_setup.py first)")


def next_to(train_dir: str, name: str = "test") -> str | None:
    """``.../train`` -> ``.../test`` (the last path component's ``train`` replaced); None when it has none."""
    head, _, last = train_dir.rstrip("/").rpartition("/")
    if "train" not in last:
        return None
    i = last.rindex("train")
    return f"{head}/{last[:i]}{name}{last[i + len('train'):]}"


def find_test_set(given: str | None, train_dir: str, default_fs: str, flag: str = "--test_images_labels") -> str | None:
    """The evaluation directory: ``given``, else the existing ``test`` directory next to ``train_dir``, else None.

    Checked on the driver through tfos.io (local paths and hdfs://) before any cluster starts; None is
    logged as "evaluation skipped".
    """
    from tfos.io.filesystem import FileSystem
    from tfos.io.paths import absolute_path

    if given:
        return absolute_path(given, default_fs, os.getcwd())
    train = absolute_path(train_dir, default_fs, os.getcwd())
    sibling = next_to(train)
    with FileSystem() as fs:
        found = sibling is not None and fs.isdir(sibling)
    if found:
        logging.info("no %s given: evaluating on %s (next to the training data)", flag, sibling)
        return sibling
    why = f"{sibling} does not exist" if sibling else f"{train} is not named like a 'train' directory"
    logging.info("no %s given and no test set next to the training data (%s): evaluation skipped", flag, why)
    return None




def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark import SparkContext

    import tfos
    from tfos.io.paths import absolute_path, default_fs

    if args.rdma:
        logging.info("--rdma is ignored: tfos has no RDMA transport")
    check_inputs(args, None)
    sc = SparkContext(conf=spark_conf("mnist_tf", args.cluster_size or 2))
    fs = default_fs(sc)
    accuracy = None
    try:
        check_inputs(args, fs)
        test_dir = find_test_set(args.test_images_labels, args.images_labels, fs)
        args.cluster_size = args.cluster_size or executor_count(sc, 2)
        logging.info("Spark master %s: %d TF nodes", sc.master, args.cluster_size)
        begin = time.time()
        model_dir = absolute_path(args.model_dir, fs, os.getcwd())
        plot = None if args.plot is None else (args.plot or model_dir.rstrip("/") + "/progress.png")
        cluster = tfos.run(sc, main_fun, args, args.cluster_size, input_mode=tfos.InputMode.TENSORFLOW,
                           tensorboard=args.tensorboard, log_dir=model_dir if args.tensorboard else None,
                           max_restarts=args.max_restarts, plot=plot)
        cluster.shutdown()
        logging.info("training took %.1fs", time.time() - begin)
        if test_dir is not None:
            accuracy = evaluate_export(absolute_path(args.export_dir, fs, os.getcwd()), test_dir, args.hdfs_io)
    finally:
        sc.stop()
    if accuracy is None:
        print("evaluation skipped: no test set (give --test_images_labels)")
    else:
        print(f"test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
