"""Evaluate the latest CIFAR-10 checkpoint: precision @ 1 on the test TFRecords, with TensorBoard summaries.

    python examples/cifar10/cifar10_eval.py --data_dir cifar10_data --checkpoint_dir cifar10_train \\
        --eval_dir cifar10_eval --run_once

Restores the newest ``ckpt-N`` in ``--checkpoint_dir`` (written by ``cifar10_train.py``), runs
every record of ``--data_dir/test`` through the model (central 24x24 crops) and prints
``precision @ 1: 0.xxxx``; the value goes to ``--eval_dir`` as the TensorBoard scalar
``precision @ 1`` at the checkpoint's global step. Without ``--run_once`` it evaluates each new
checkpoint as it appears (every ``--eval_interval_secs``), like the TensorFlow tutorial's
``cifar10_eval.py``. A single-process TF program: it needs no Spark. Paths are local or full
URIs (``hdfs://namenode:8020/user/me/cifar10_train``).

TensorFlowOnSpark's command line works as written: ``--data_dir --checkpoint_dir --eval_dir``,
``--eval_data test|train_eval`` (the test records, or the training records), ``--run_once[=true]``,
``--eval_interval_secs``, ``--num_examples``, ``--batch_size`` (``--rdma`` is accepted and ignored). Under
``spark-submit`` (e.g. ``--master yarn --deploy-mode cluster``) it starts a SparkContext, as a Spark
application must, evaluates in the driver and resolves relative paths against ``fs.defaultFS``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

import cifar10_model

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """tfos's flags, with TensorFlowOnSpark's (TensorFlow-flags style booleans accepted)."""
    p = argparse.ArgumentParser(description="CIFAR-10 evaluation")
    p.add_argument("--data_dir", default="cifar10_data", help="TFRecords from cifar10_data_setup.py (has test/)")
    p.add_argument("--checkpoint_dir", default="cifar10_train", help="checkpoints from cifar10_train.py")
    p.add_argument("--eval_dir", default="cifar10_eval", help="TensorBoard summaries of the evaluation")
    p.add_argument("--eval_data", choices=["test", "train_eval"], default="test",
                   help="evaluate on the test records (data_dir/test) or the training records (data_dir/train)")
    cifar10_model.add_bool_flag(p, "run_once", "evaluate the latest checkpoint once and exit")
    p.add_argument("--eval_interval_secs", type=float, default=300, help="how often to look for new checkpoints")
    p.add_argument("--num_examples", type=int, default=0, help="evaluate at most this many (0: all)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--hdfs_io", choices=["auto", "tensorflow_io", "tfos"], default="auto",
                   help="how hdfs:// is read and written: tensorflow-io (libhdfs), tfos's own I/O layer, or auto")
    cifar10_model.add_bool_flag(p, "rdma", "TensorFlowOnSpark flag, ignored (no RDMA transport)")
    return p.parse_args(argv)


def evaluate(model: Any, files: list[str], batch_size: int, num_examples: int = 0,
             tio: Any = None) -> tuple[float, int]:
    """(precision @ 1, examples evaluated) of ``model`` over the test records."""
    import tensorflow as tf

    correct = total = 0
    for images, labels in cifar10_model.eval_dataset(files, batch_size, tio):
        if num_examples and total >= num_examples:
            break
        logits = model(images, training=False)
        hits = tf.math.in_top_k(labels, logits, k=1)
        if num_examples:
            hits = hits[: num_examples - total]
        correct += int(tf.reduce_sum(tf.cast(hits, tf.int32)))
        total += int(hits.shape[0])
    if total == 0:
        raise ValueError(f"no test records in {files}")
    return correct / total, total


def eval_once(args: argparse.Namespace, model: Any, checkpoint: str, writer: Any, tio: Any = None) -> float:
    """Restore ``checkpoint``, evaluate, print and record the precision."""
    import tensorflow as tf

    step = cifar10_model.restore(model, checkpoint)
    split = "test" if args.eval_data == "test" else "train"
    files = cifar10_model.tfrecord_files(f"{args.data_dir.rstrip('/')}/{split}", tio)
    precision, n = evaluate(model, files, args.batch_size, args.num_examples, tio)
    with writer.as_default():
        tf.summary.scalar("precision @ 1", precision, step=step)
        writer.flush()
    logging.info("%s (step %d): %d examples", checkpoint, step, n)
    print(f"precision @ 1: {precision:.4f}", flush=True)
    return precision


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sc = None
    if cifar10_model.submitted_master():  # a Spark application (YARN cluster mode waits for its SparkContext)
        from pyspark import SparkContext

        from tfos.io.paths import absolute_path, default_fs

        sc = SparkContext.getOrCreate(cifar10_model.spark_conf("cifar10_eval", 1))
        fs = default_fs(sc)
        for name in ("data_dir", "checkpoint_dir", "eval_dir"):
            setattr(args, name, absolute_path(getattr(args, name), fs, os.getcwd()))
        logging.info("Spark master %s: evaluating in the driver", sc.master)
    try:
        evaluate_checkpoints(args)
    finally:
        if sc is not None:
            sc.stop()


def evaluate_checkpoints(args: argparse.Namespace) -> None:
    """Evaluate the newest checkpoint (and, without ``--run_once``, each new one as it appears).

    Where TensorFlow cannot open ``hdfs://`` itself (no libhdfs), tfos's I/O layer reads the
    records, copies the newest checkpoint to a local mirror and uploads the summaries after each
    evaluation."""
    import shutil
    import tempfile

    import tensorflow as tf

    from tfos.io.filesystem import FileSystem
    from tfos.io.tf_dataset import TensorFlowIO

    tio = TensorFlowIO(args.hdfs_io, probe=args.data_dir)
    logging.info("reading %s and %s through %s", args.data_dir, args.checkpoint_dir, tio.describe())
    mirror = tio.checkpoint_mirror(args.checkpoint_dir)
    direct_summaries = tio.tf_can_open(args.eval_dir)
    summary_dir = args.eval_dir if direct_summaries else tempfile.mkdtemp(prefix="tfos-cifar10-eval-")
    model = cifar10_model.build_model()
    tf.io.gfile.makedirs(summary_dir)
    writer = tf.summary.create_file_writer(summary_dir)
    last = None
    try:
        while True:
            latest = mirror.download()
            if latest is None and args.run_once:
                raise SystemExit(f"no checkpoint in {args.checkpoint_dir}; run cifar10_train.py first")
            if latest is not None and latest != last:
                eval_once(args, model, latest, writer, tio)
                last = latest
                if not direct_summaries:
                    with FileSystem() as fs:
                        fs.copytree(summary_dir, args.eval_dir)
            if args.run_once:
                return
            time.sleep(args.eval_interval_secs)
    finally:
        writer.close()
        mirror.close()
        if not direct_summaries:
            shutil.rmtree(summary_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
