"""Convert the MNIST IDX files into TFRecords or CSV on the default file system, with Spark.

    spark-submit examples/mnist/mnist_data_setup.py --output mnist --format tfr

writes ``OUTPUT/train`` and ``OUTPUT/test`` (one file per partition). Paths without a
scheme resolve against Spark's ``fs.defaultFS`` (HDFS on a Hadoop cluster, the local
file system in local mode). TFRecords hold ``tf.train.Example`` records with an
``image`` int64 list of 784 pixels and a ``label`` int64, as TensorFlowOnSpark's did.
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")


def read_idx(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read an IDX image file and its label file (gzip or plain); checks that they match."""
    opener = gzip.open if images_path.endswith(".gz") else open
    with opener(images_path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            raise ValueError(f"{images_path}: not an IDX image file (magic {magic}, expected 2051)")
        images = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8)
        if images.size != n * rows * cols:
            raise ValueError(f"{images_path}: header says {n} images but the file holds {images.size // 784}")
    with (gzip.open if labels_path.endswith(".gz") else open)(labels_path, "rb") as f:
        magic, m = struct.unpack(">II", f.read(8))
        if magic != 2049:
            raise ValueError(f"{labels_path}: not an IDX label file (magic {magic}, expected 2049)")
        labels = np.frombuffer(f.read(m), dtype=np.uint8)
    if m != n:
        raise ValueError(f"{images_path} has {n} images but {labels_path} has {m} labels")
    return images.reshape(n, rows * cols), labels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="mnist", help="output directory (default FS), gets train/ and test/")
    p.add_argument("--format", choices=["tfr", "csv"], default="tfr")
    p.add_argument("--data_dir", default=DATA, help="directory holding the four MNIST IDX files")
    p.add_argument("--num_partitions", type=int, default=10)
    return p.parse_args(argv)


def write_split(sc, images: np.ndarray, labels: np.ndarray, out_dir: str, fmt: str, partitions: int) -> int:
    rows = sc.parallelize([(img.tolist(), int(lab)) for img, lab in zip(images, labels, strict=True)], partitions)
    if fmt == "csv":
        rows.map(lambda r: f"{r[1]}|{','.join(map(str, r[0]))}").saveAsTextFile(out_dir)
    else:
        from tfos.io.dataframe_tfrecord import write_rdd_examples

        write_rdd_examples(rows.map(lambda r: {"image": r[0], "label": [r[1]]}), out_dir)
    return len(labels)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark import SparkConf, SparkContext

    from tfos.io.paths import absolute_path, default_fs

    conf = SparkConf().setAppName("mnist_data_setup")
    conf.setIfMissing("spark.master", "local[2]")
    sc = SparkContext(conf=conf)
    output = absolute_path(args.output, default_fs(sc), os.getcwd())
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = read_idx(os.path.join(args.data_dir, f"{prefix}-images-idx3-ubyte.gz"),
                                  os.path.join(args.data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
        n = write_split(sc, images, labels, f"{output}/{split}", args.format, args.num_partitions)
        print(f"wrote {n} {split} records as {args.format} to {output}/{split}")
    sc.stop()


if __name__ == "__main__":
    main()
