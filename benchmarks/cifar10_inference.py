"""CIFAR-10 batch inference throughput (images/s) on 1 and 2 executors.

A real Spark standalone cluster (2 single-core workers on 127.0.0.1), the shipped CIFAR-10
test sample written as TFRecords, and ``examples/cifar10/cifar10_inference.py`` run with 1 and
then 2 TF nodes, each pass over the data ``--repeat`` times. images/s = all timed images over
the slowest node's inference time (graph tracing, model building and restore excluded). Without
``--checkpoint_dir`` the model is freshly initialized (throughput does not depend on the weights).

    .venv/bin/python benchmarks/cifar10_inference.py [--repeat 20] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR = os.path.join(ROOT, "examples", "cifar10")
sys.path[:0] = [ROOT, CIFAR]
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import cifar10_data_setup  # noqa: E402
import cifar10_inference  # noqa: E402
import cifar10_model  # noqa: E402

from tests.spark_standalone import StandaloneCluster, spark_conf  # noqa: E402


def fresh_checkpoint(directory: str) -> str:
    """A checkpoint of a newly initialized model, in the layout cifar10_train.py writes."""
    import tensorflow as tf

    model = cifar10_model.build_model()
    return tf.train.CheckpointManager(tf.train.Checkpoint(model=model), directory, max_to_keep=1).save(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20, help="passes over the 164 test images per run")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--checkpoint_dir", default=None, help="a cifar10_train.py checkpoint directory")
    parser.add_argument("--executors", default="1,2", help="cluster sizes to measure")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(n) for n in args.executors.split(",")]
    work = tempfile.mkdtemp(prefix="tfos-cifar10-bench-")
    checkpoint_dir = args.checkpoint_dir or os.path.join(work, "ckpt")
    if args.checkpoint_dir is None:
        fresh_checkpoint(checkpoint_dir)
    from pyspark.sql import SparkSession

    standalone = StandaloneCluster(workers=max(sizes)).start()
    results = []
    try:
        builder = SparkSession.builder.appName("tfos-cifar10-inference-bench")
        for key, value in spark_conf(standalone.master_url, max(sizes)).items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        sc = spark.sparkContext
        sc.setLogLevel("ERROR")
        for module in ("cifar10_model.py", "cifar10_inference.py"):
            sc.addPyFile(os.path.join(CIFAR, module))
        data = os.path.join(work, "data")
        cifar10_data_setup.write_split(spark, [os.path.join(CIFAR, "data", "test_batch.bin")], f"{data}/test",
                                       max(sizes))
        for n in sizes:
            run_args = argparse.Namespace(data_dir=data, checkpoint_dir=checkpoint_dir, batch_size=args.batch_size,
                                          output=os.path.join(work, f"predictions-{n}"), cluster_size=n,
                                          repeat=args.repeat, num_gpus=1)
            begin = time.perf_counter()
            result = cifar10_inference.run_inference(sc, run_args)
            result.pop("per_node")
            print(f"{n} executor(s): {result['images_per_sec']:.1f} images/s ({result['timed_images']} timed "
                  f"images in {result['seconds']:.2f}s; {time.perf_counter() - begin:.1f}s with cluster start "
                  f"and stop)", flush=True)
            results.append(result)
        spark.stop()
    finally:
        standalone.stop()
    if len(results) > 1:
        print(f"speed-up {results[-1]['executors']} vs {results[0]['executors']} executor(s): "
              f"{results[-1]['images_per_sec'] / results[0]['images_per_sec']:.2f}x on {os.cpu_count()} CPU cores")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "cifar10_inference", "cpu_count": os.cpu_count(), "repeat": args.repeat,
                       "batch_size": args.batch_size, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
