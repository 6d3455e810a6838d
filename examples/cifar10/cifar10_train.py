"""Train the classic CIFAR-10 CNN on a tfos cluster (InputMode.TENSORFLOW: workers read TFRecords).

Across the cluster's workers: MultiWorkerMirroredStrategy (synchronous all-reduce). Inside one
node: all of the node's GPUs (``--num_gpus`` per node, assigned by tfos and visible as
``ctx.gpus``), or the CPU; a one-node cluster uses MirroredStrategy over them. Keras
``model.fit`` on tf-keras (``TF_USE_LEGACY_KERAS=1``, set by tfos on every node). The chief
writes a checkpoint to ``--train_dir`` every ``--save_steps`` steps (``ckpt-N``); a rerun with
the same ``--train_dir`` resumes. ``cifar10_eval.py`` evaluates the checkpoints.

    spark-submit examples/cifar10/cifar10_train.py --data_dir cifar10_data --train_dir cifar10_train \\
        --max_steps 1000 --cluster_size 2 --num_gpus 1

TensorFlowOnSpark's ``cifar10_train.py`` / ``cifar10_multi_gpu_train.py`` command line works as written
(``--data_dir --train_dir --max_steps --num_gpus --batch_size``, ``--log_device_placement[=true]``;
``--use_fp16`` and ``--rdma`` are accepted and ignored): ``--max_steps`` is the exact global step to stop
at (a rerun with the same ``--train_dir`` resumes and counts the steps already done; TensorFlowOnSpark
deleted ``--train_dir`` first), and ``--cluster_size`` defaults to the executors Spark was given.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from typing import Any

import cifar10_model

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """tfos's flags, with TensorFlowOnSpark's (TensorFlow-flags style booleans accepted)."""
    p = argparse.ArgumentParser(description="CIFAR-10 training on tfos")
    p.add_argument("--data_dir", default="cifar10_data", help="TFRecords from cifar10_data_setup.py (has train/)")
    p.add_argument("--train_dir", default="cifar10_train", help="checkpoint directory (default FS)")
    p.add_argument("--max_steps", type=int, default=1000, help="global training steps in total")
    p.add_argument("--save_steps", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--batch_size", type=int, default=128, help="batch size per replica (GPU or CPU)")
    p.add_argument("--num_gpus", type=int, default=1, help="GPUs per node (CPU where the host has none)")
    p.add_argument("--learning_rate", type=float, default=0.1, help="initial SGD learning rate")
    p.add_argument("--cluster_size", type=int, default=None,
                   help="TF nodes (default: the executors Spark was given; 2 in local mode)")
    p.add_argument("--tensorboard", action="store_true", help="run TensorBoard on the chief (log_dir: train_dir)")
    p.add_argument("--hdfs_io", choices=["auto", "tensorflow_io", "tfos"], default="auto",
                   help="how TensorFlow reaches hdfs://: tensorflow-io (libhdfs), tfos's own I/O layer, or auto")
    p.add_argument("--max_restarts", type=int, default=0,
                   help="restart the TF cluster after this many node failures, resuming from the latest checkpoint")
    cifar10_model.add_bool_flag(p, "log_device_placement", "log where each operation runs")
    cifar10_model.add_bool_flag(p, "use_fp16", "TensorFlowOnSpark flag, ignored (trains in float32)")
    cifar10_model.add_bool_flag(p, "rdma", "TensorFlowOnSpark flag, ignored (no RDMA transport)")
    return p.parse_args(argv)


def make_strategy(ctx: Any) -> Any:
    """MultiWorkerMirroredStrategy over the workers; MirroredStrategy over one node's GPUs (or CPU)."""
    import tensorflow as tf

    if ctx.num_workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()  # mirrors over the node's visible GPUs too
    devices = [f"/gpu:{i}" for i in range(len(tf.config.list_physical_devices("GPU")))] or ["/cpu:0"]
    return tf.distribute.MirroredStrategy(devices)


def main_fun(args: argparse.Namespace, ctx: Any) -> None:
    """Runs on every node: data-parallel training from the TFRecords in ``args.data_dir/train``."""
    import tensorflow as tf

    from tfos.io.tf_dataset import TensorFlowIO
    from tfos.training_checkpoint import TrainingCheckpoint

    log = logging.getLogger("cifar10_train")
    if args.log_device_placement:
        tf.debugging.set_log_device_placement(True)
    strategy = make_strategy(ctx)
    replicas = strategy.num_replicas_in_sync
    log.info("node %s:%d: GPUs %s, %d replica(s) in sync", ctx.job_name, ctx.task_index, ctx.gpus or "none",
             replicas)
    data_dir = ctx.absolute_path(args.data_dir)
    tio = TensorFlowIO(args.hdfs_io, probe=data_dir)
    files = cifar10_model.tfrecord_files(data_dir + "/train", tio)
    log.info("reading %d TFRecord files from %s through %s", len(files), data_dir, tio.describe())
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = cifar10_model.train_dataset(files, args.batch_size * replicas, seed=ctx.worker_num, tio=tio)
    ds = ds.with_options(options)
    with strategy.scope():
        model = cifar10_model.build_model(args.learning_rate)
    train_dir = ctx.absolute_path(args.train_dir)
    ckpt = TrainingCheckpoint(model, train_dir, is_chief=ctx.worker_num == 0, worker_index=ctx.worker_num, io=tio)
    done = ckpt.restore()  # completed "epochs" of (at most) save_steps steps each
    start = int(model.optimizer.iterations.numpy())
    remaining = max(0, args.max_steps - start)
    epochs = done + -(-remaining // args.save_steps)  # the last one stops at max_steps exactly
    log.info("starting at step %d of %d", start, args.max_steps)
    callbacks = [ckpt.callback(), step_logger(model, args.batch_size * replicas),
                 stop_at_step(model, args.max_steps)]
    if args.tensorboard:  # every worker takes part; only the chief's summaries are kept
        tb_dir = (ctx.log_dir or train_dir) if ctx.worker_num == 0 else tempfile.mkdtemp(prefix="tfos-tb-")
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=tb_dir, update_freq=10))
    model.fit(ds, epochs=epochs, initial_epoch=done, steps_per_epoch=args.save_steps, callbacks=callbacks,
              verbose=0)
    if ctx.worker_num == 0:
        log.info("trained to step %d; checkpoints in %s", int(model.optimizer.iterations.numpy()), train_dir)


def step_logger(model: Any, global_batch: int) -> Any:
    """Keras callback logging loss, accuracy and examples/s at every checkpoint (the tutorial's line)."""
    import tensorflow as tf

    log = logging.getLogger("cifar10_train")
    began: dict[str, float] = {}

    def begin(epoch: int, logs: dict | None = None) -> None:
        began["t"], began["step"] = time.time(), int(model.optimizer.iterations.numpy())

    def end(epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        step = int(model.optimizer.iterations.numpy())
        steps = max(step - int(began.get("step", 0)), 1)
        secs = max(time.time() - began.get("t", time.time()), 1e-9)
        log.info("step %d: loss = %.3f, accuracy = %.3f (%.1f examples/sec; %.3f sec/batch)", step,
                 logs.get("loss", float("nan")), logs.get("accuracy", float("nan")), steps * global_batch / secs,
                 secs / steps)

    return tf.keras.callbacks.LambdaCallback(on_epoch_begin=begin, on_epoch_end=end)


def stop_at_step(model: Any, last_step: int) -> Any:
    """Keras callback ending ``fit`` once the optimizer has taken ``last_step`` steps (all workers agree)."""
    import tensorflow as tf

    def on_train_batch_end(batch: int, logs: dict | None = None) -> None:
        if int(model.optimizer.iterations.numpy()) >= last_step:
            model.stop_training = True

    return tf.keras.callbacks.LambdaCallback(on_train_batch_end=on_train_batch_end)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark import SparkContext

    import tfos
    from tfos.io.paths import absolute_path, default_fs

    if args.use_fp16 or args.rdma:
        logging.info("--use_fp16 and --rdma are ignored: tfos trains this model in float32, without RDMA")
    sc = SparkContext(conf=cifar10_model.spark_conf("cifar10_train", args.cluster_size or 2))
    cifar10_model.ship_to_executors(sc)
    args.cluster_size = args.cluster_size or cifar10_model.executor_count(sc, 2)
    logging.info("Spark master %s: %d TF nodes", sc.master, args.cluster_size)
    begin = time.time()
    log_dir = absolute_path(args.train_dir, default_fs(sc), os.getcwd()) if args.tensorboard else None
    cluster = tfos.run(sc, main_fun, args, args.cluster_size, input_mode=tfos.InputMode.TENSORFLOW,
                       tensorboard=args.tensorboard, log_dir=log_dir, max_restarts=args.max_restarts)
    cluster.shutdown()
    sc.stop()
    print(f"trained {args.max_steps} steps on {args.cluster_size} node(s) in {time.time() - begin:.1f}s; "
          f"checkpoints in {args.train_dir}")


if __name__ == "__main__":
    main()
