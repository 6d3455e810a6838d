"""Convert the MNIST IDX files into TFRecords or CSV on the default file system, with Spark.

    spark-submit examples/mnist/mnist_data_setup.py --output mnist --format tfr

writes ``OUTPUT/train`` and ``OUTPUT/test`` (one file per partition). Paths without a
scheme resolve against Spark's ``fs.defaultFS`` (HDFS on a Hadoop cluster, the local
file system in local mode). TFRecords hold ``tf.train.Example`` records with an
``image`` int64 list of 784 pixels and a ``label`` int64, as TensorFlowOnSpark's did;
CSV lines are ``label,pixel0,...,pixel783``.
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
    p.add_argument("--num_partitions", type=int, default=4)
    return p.parse_args(argv)


def write_split(sc, images: np.ndarray, labels: np.ndarray, out_dir: str, fmt: str, partitions: int) -> int:
    """Write one split, one file per partition; the pixels travel to the executors as raw chunks."""
    from tfos.io.filesystem import FileSystem

    fs = FileSystem()
    if fs.exists(out_dir):
        fs.delete(out_dir, recursive=True)
    chunks = [(images[i::partitions].tobytes(), labels[i::partitions].tobytes()) for i in range(partitions)]

    def examples(chunk):
        pixels = np.frombuffer(chunk[0], dtype=np.uint8).reshape(-1, 784)
        return zip(pixels, np.frombuffer(chunk[1], dtype=np.uint8), strict=True)

    def write_partition(index, part):
        from tfos.io.example_codec import encode_example, int64_feature
        from tfos.io.tfrecord import TFRecordWriter

        count = 0
        if fmt == "csv":
            with FileSystem().atomic_writer(f"{out_dir}/part-{index:05d}.csv") as f:
                for chunk in part:
                    for image, label in examples(chunk):
                        f.write((",".join(map(str, [int(label), *image.tolist()])) + "\n").encode())
                        count += 1
        else:
            with TFRecordWriter(f"{out_dir}/part-r-{index:05d}") as writer:
                for chunk in part:
                    for image, label in examples(chunk):
                        writer.write(encode_example({"image": int64_feature(image.astype(np.int64)),
                                                     "label": int64_feature([int(label)])}))
                        count += 1
        yield count

    written = sum(sc.parallelize(chunks, partitions).mapPartitionsWithIndex(write_partition).collect())
    fs.write_bytes(f"{out_dir}/_SUCCESS", b"")
    return written


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark import SparkConf, SparkContext

    from tfos.io.paths import absolute_path, default_fs

    sc = SparkContext(conf=SparkConf().setAppName("mnist_data_setup").setIfMissing("spark.master", "local[2]"))
    output = absolute_path(args.output, default_fs(sc), os.getcwd())
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = read_idx(os.path.join(args.data_dir, f"{prefix}-images-idx3-ubyte.gz"),
                                  os.path.join(args.data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
        n = write_split(sc, images, labels, f"{output}/{split}", args.format, args.num_partitions)
        print(f"wrote {n} {split} records as {args.format} to {output}/{split}")
    sc.stop()


if __name__ == "__main__":
    main()
