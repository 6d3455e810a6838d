"""Batch inference with a CIFAR-10 checkpoint across N executors; reports images/s.

    spark-submit examples/cifar10/cifar10_inference.py --data_dir cifar10_data --checkpoint_dir cifar10_train \\
        --output cifar10_predictions --cluster_size 2

Every node (InputMode.TENSORFLOW) restores the newest checkpoint of ``--checkpoint_dir``, reads
its share of ``--data_dir/test`` (whole files when there are at least as many files as nodes,
else every N-th record) ``--repeat`` times, and writes one line per image, ``label<TAB>predicted
<TAB>probability``, to ``OUTPUT/part-NNNNN`` (N = the node's worker number). The driver prints
``images/s: X (N executors)``: all images over the slowest node's inference time (model
building and restore excluded; the first batch is a warm-up and not timed), then the
precision @ 1 of the predictions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

import cifar10_model

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
STATS = "_stats"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="CIFAR-10 batch inference on tfos")
    p.add_argument("--data_dir", default="cifar10_data", help="TFRecords from cifar10_data_setup.py (has test/)")
    p.add_argument("--checkpoint_dir", default="cifar10_train", help="checkpoints from cifar10_train.py")
    p.add_argument("--output", default="cifar10_predictions", help="predictions directory (default FS)")
    p.add_argument("--cluster_size", type=int, default=None,
                   help="TF nodes (default: the executors Spark was given; 2 in local mode)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--repeat", type=int, default=1, help="pass over the data this many times (benchmarks)")
    p.add_argument("--num_gpus", type=int, default=1, help="GPUs per node (CPU where the host has none)")
    return p.parse_args(argv)


def node_dataset(files: list[str], ctx: Any, batch_size: int, repeat: int) -> Any:
    """This node's share of the test records, as (images, labels) batches."""
    import tensorflow as tf

    if len(files) >= ctx.num_workers:
        ds = tf.data.TFRecordDataset(files[ctx.worker_num::ctx.num_workers])
    else:
        ds = tf.data.TFRecordDataset(files).shard(ctx.num_workers, ctx.worker_num)
    ds = ds.repeat(repeat).batch(batch_size).map(cifar10_model.parse_examples)
    return ds.map(lambda images, labels: (cifar10_model.center(images), labels)).prefetch(tf.data.AUTOTUNE)


def main_fun(args: argparse.Namespace, ctx: Any) -> None:
    """Runs on every node: predict this node's share and write predictions plus timing."""
    import tensorflow as tf

    from tfos.io.filesystem import FileSystem, join

    log = logging.getLogger("cifar10_inference")
    model = cifar10_model.build_model()
    latest = tf.train.latest_checkpoint(ctx.absolute_path(args.checkpoint_dir))
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {ctx.absolute_path(args.checkpoint_dir)}; run cifar10_train.py")
    step = cifar10_model.restore(model, latest)
    predict = tf.function(lambda images: tf.nn.softmax(model(images, training=False)))
    files = cifar10_model.tfrecord_files(ctx.absolute_path(args.data_dir) + "/test")
    lines: list[str] = []
    images = correct = 0
    began = time.perf_counter()
    warm: tuple[float, int] | None = None  # (time, images) after the first batch, which traces the model
    for batch, labels in node_dataset(files, ctx, args.batch_size, args.repeat):
        probs = predict(batch).numpy()
        predicted = probs.argmax(axis=1)
        labels = labels.numpy()
        correct += int((predicted == labels).sum())
        lines.extend(f"{lab}\t{pred}\t{p[pred]:.6f}" for lab, pred, p in zip(labels, predicted, probs, strict=True))
        images += len(labels)
        if warm is None:
            warm = (time.perf_counter(), images)
    ended = time.perf_counter()
    if warm is not None and images > warm[1]:
        seconds, timed = ended - warm[0], images - warm[1]
    else:  # a single batch: time it all
        seconds, timed = ended - began, images
    fs = FileSystem()
    out = ctx.absolute_path(args.output)
    fs.makedirs(join(out, STATS))
    fs.write_bytes(join(out, f"part-{ctx.worker_num:05d}"), ("\n".join(lines) + "\n" if lines else "").encode())
    stats = {"worker": ctx.worker_num, "images": images, "timed_images": timed, "seconds": seconds,
             "correct": correct, "gpus": list(ctx.gpus), "checkpoint": latest, "step": step}
    fs.write_bytes(join(out, STATS, f"worker-{ctx.worker_num:05d}.json"), json.dumps(stats).encode())
    log.info("%d images (%d timed) in %.2fs: %.1f images/s on %s", images, timed, seconds,
             timed / seconds if seconds else 0.0, ",".join(ctx.gpus) or "CPU")


def summarize(output: str, nodes: int) -> dict[str, Any]:
    """Aggregate the nodes' timing files: images/s over the slowest node, precision @ 1."""
    from tfos.io.filesystem import FileSystem, join

    fs = FileSystem()
    stats = [json.loads(fs.read_bytes(join(output, STATS, name))) for name in sorted(fs.listdir(join(output, STATS)))]
    if len(stats) != nodes:
        raise RuntimeError(f"expected timing from {nodes} nodes in {output}/{STATS}, found {len(stats)}")
    images = sum(s["images"] for s in stats)
    timed = sum(s["timed_images"] for s in stats)
    slowest = max(s["seconds"] for s in stats)
    return {"executors": nodes, "images": images, "timed_images": timed, "seconds": slowest,
            "images_per_sec": timed / slowest if slowest > 0 else 0.0,
            "precision_at_1": sum(s["correct"] for s in stats) / images if images else 0.0,
            "per_node": stats}


def run_inference(sc: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Start a cluster of ``args.cluster_size`` nodes, predict, shut down; returns ``summarize``'s dict."""
    import tfos
    from tfos.io.filesystem import FileSystem
    from tfos.io.paths import absolute_path, default_fs

    output = absolute_path(args.output, default_fs(sc), os.getcwd())
    FileSystem().delete(output, recursive=True, missing_ok=True)
    begin = time.time()
    cluster = tfos.run(sc, main_fun, args, args.cluster_size, input_mode=tfos.InputMode.TENSORFLOW)
    cluster.shutdown()
    result = summarize(output, args.cluster_size)
    result["wall_seconds"] = time.time() - begin
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark import SparkContext

    sc = SparkContext(conf=cifar10_model.spark_conf("cifar10_inference", args.cluster_size or 2))
    cifar10_model.ship_to_executors(sc)
    args.cluster_size = args.cluster_size or cifar10_model.executor_count(sc, 2)
    logging.info("Spark master %s: %d TF nodes", sc.master, args.cluster_size)
    result = run_inference(sc, args)
    sc.stop()
    print(f"predicted {result['images']} images in {result['wall_seconds']:.1f}s end to end; "
          f"precision @ 1: {result['precision_at_1']:.4f}")
    print(f"images/s: {result['images_per_sec']:.1f} ({args.cluster_size} executors)")


if __name__ == "__main__":
    main()
