"""Convert the CIFAR-10 binary batches into TFRecords on the default file system, with Spark.

    spark-submit examples/cifar10/cifar10_data_setup.py --output cifar10_data

reads ``data_batch_1..5.bin`` and ``test_batch.bin`` from ``--data_dir`` (the shipped sample
by default, or the full data set's ``cifar-10-batches-bin``) and writes ``OUTPUT/train`` and
``OUTPUT/test``, one ``part-NNNNN`` file per partition. Paths without a scheme resolve
against Spark's ``fs.defaultFS`` (HDFS on a Hadoop cluster, the local file system in local
mode). Records are ``tf.train.Example``: ``image`` = the 3072 pixel bytes (32x32x3, HWC) and
``label`` = the class 0-9; see ``cifar10_model.py``. Written by tfos.io (no TensorFlow needed
on the executors).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import cifar10_model

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="cifar10_data", help="output directory (default FS); gets train/ and test/")
    p.add_argument("--data_dir", default=DATA, help="local directory with the CIFAR-10 binary batches")
    p.add_argument("--num_partitions", type=int, default=4, help="TFRecord files per split")
    return p.parse_args(argv)


def write_split(spark: Any, paths: list[str], out_dir: str, partitions: int) -> int:
    """Read CIFAR-10 binary batches and write them to ``out_dir`` as TFRecords; returns the record count."""
    from pyspark.sql import types as T

    from tfos.io.dataframe_tfrecord import write_tfrecords_df

    images, labels = cifar10_model.read_cifar_binary(paths)
    schema = T.StructType([T.StructField("image", T.BinaryType(), False), T.StructField("label", T.LongType(), False)])
    rows = [(img.tobytes(), int(lab)) for img, lab in zip(images, labels, strict=True)]
    df = spark.createDataFrame(spark.sparkContext.parallelize(rows, partitions), schema)
    write_tfrecords_df(df, out_dir, mode="overwrite")
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from tfos.io.paths import absolute_path, default_fs

    spark = SparkSession.builder.config(conf=cifar10_model.spark_conf("cifar10_data_setup", 2)).getOrCreate()
    output = absolute_path(args.output, default_fs(spark.sparkContext), os.getcwd())
    for split, names in (("train", cifar10_model.TRAIN_FILES), ("test", cifar10_model.TEST_FILES)):
        paths = [os.path.join(args.data_dir, name) for name in names]
        n = write_split(spark, paths, f"{output}/{split}", args.num_partitions)
        print(f"wrote {n} {split} records to {output}/{split}")
    spark.stop()


if __name__ == "__main__":
    main()
