"""Convert the MNIST IDX files into TFRecords or CSV on the default file system, with Spark.

    spark-submit examples/mnist/mnist_data_setup.py --output mnist --format tfr

writes ``OUTPUT/train`` and ``OUTPUT/test`` (one file per partition). Without ``--format`` both
formats are written, as TensorFlowOnSpark 2.x's ``mnist_data_setup.py --output data/mnist`` does:
``OUTPUT/csv/{train,test}`` and ``OUTPUT/tfr/{train,test}``. Paths without a
scheme resolve against Spark's ``fs.defaultFS`` (HDFS on a Hadoop cluster, the local
file system in local mode). TFRecords hold ``tf.train.Example`` records with an
``image`` int64 list of 784 pixels and a ``label`` int64, as TensorFlowOnSpark's did;
CSV lines are ``label,pixel0,...,pixel783``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import struct
import sys
from collections.abc import Iterator
from typing import IO

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")


@contextlib.contextmanager
def _open(path: str) -> Iterator[IO[bytes]]:
    """A local or ``hdfs://`` file (through tfos.io), gunzipped when its name ends in ``.gz``."""
    from tfos.io.filesystem import FileSystem

    with FileSystem() as fs, fs.open(path, "rb") as raw:
        yield gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw


def read_idx(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read an IDX image file and its label file (gzip or plain); checks that they match."""
    with _open(images_path) as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            raise ValueError(f"{images_path}: not an IDX image file (magic {magic}, expected 2051)")
        images = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8)
        if images.size != n * rows * cols:
            raise ValueError(f"{images_path}: header says {n} images but the file holds {images.size // 784}")
    with _open(labels_path) as f:
        magic, m = struct.unpack(">II", f.read(8))
        if magic != 2049:
            raise ValueError(f"{labels_path}: not an IDX label file (magic {magic}, expected 2049)")
        labels = np.frombuffer(f.read(m), dtype=np.uint8)
    if m != n:
        raise ValueError(f"{images_path} has {n} images but {labels_path} has {m} labels")
    return images.reshape(n, rows * cols), labels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """tfos's flags; TensorFlowOnSpark's ``-o``, ``-f`` (``tf`` = ``tfr``), ``-n`` / ``--num-partitions`` too."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", default="mnist", help="output directory (default FS), gets train/ and test/")
    p.add_argument("-f", "--format", choices=["tfr", "csv", "tf"], default=None,
                   help="tfr (tf: the same) or csv; default: both, in OUTPUT/tfr and OUTPUT/csv")
    p.add_argument("--data_dir", default=DATA, help="directory holding the four MNIST IDX files (local or hdfs://)")
    p.add_argument("-n", "--num_partitions", "--num-partitions", dest="num_partitions", type=int, default=4)
    args = p.parse_args(argv)
    args.format = "tfr" if args.format == "tf" else args.format
    return args


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

    conf = SparkConf().setAppName("mnist_data_setup")
    if "PYSPARK_GATEWAY_PORT" not in os.environ and "--master" not in os.environ.get("PYSPARK_SUBMIT_ARGS", ""):
        conf.setMaster("local[2]")  # plain `python`: local mode; under spark-submit its --master holds
    sc = SparkContext(conf=conf)
    output = absolute_path(args.output, default_fs(sc), os.getcwd())
    layout = [(args.format, output)] if args.format else [(fmt, f"{output}/{fmt}") for fmt in ("csv", "tfr")]
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = read_idx(f"{args.data_dir.rstrip('/')}/{prefix}-images-idx3-ubyte.gz",
                                  f"{args.data_dir.rstrip('/')}/{prefix}-labels-idx1-ubyte.gz")
        for fmt, base in layout:
            n = write_split(sc, images, labels, f"{base}/{split}", fmt, args.num_partitions)
            print(f"wrote {n} {split} records as {fmt} to {base}/{split}")
    sc.stop()


if __name__ == "__main__":
    main()
