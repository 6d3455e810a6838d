"""The rows, consumer and model shared by every path of ``feed_throughput compare`` (and by
``feed_parts``): MNIST-shaped Python rows built from the real training images, their expected
checksums, the (a) consumer and the (d) numpy model. These functions travel to executors and TF
processes by value (``compare`` registers this module with cloudpickle)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MNIST_DIR = os.path.join(ROOT, "examples", "mnist", "data")


def mnist() -> tuple[np.ndarray, np.ndarray]:
    """The MNIST training images (22699 x 784 uint8) and labels, loaded once per process."""
    import gzip
    import struct
    import types

    mod = sys.modules.get("_tfos_feed_bench_data")
    if mod is None:
        with gzip.open(os.path.join(MNIST_DIR, "train-images-idx3-ubyte.gz"), "rb") as f:
            magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
            if magic != 2051:
                raise ValueError(f"not an IDX image file (magic {magic})")
            images = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8).reshape(n, rows * cols)
        with gzip.open(os.path.join(MNIST_DIR, "train-labels-idx1-ubyte.gz"), "rb") as f:
            magic, m = struct.unpack(">II", f.read(8))
            if magic != 2049 or m != n:
                raise ValueError(f"bad IDX label file (magic {magic}, {m} labels for {n} images)")
            labels = np.frombuffer(f.read(m), dtype=np.uint8)
        mod = types.ModuleType("_tfos_feed_bench_data")
        mod.images, mod.labels, mod.model = images, labels, None
        sys.modules["_tfos_feed_bench_data"] = mod
    return mod.images, mod.labels


def make_rows(indices):
    """Python rows ``(pixels: list of 784 ints, label: int)`` for row indices, as after parsing CSV."""
    images, labels = mnist()
    m = len(labels)
    for i in indices:
        j = i % m
        yield (images[j].tolist(), int(labels[j]))


def expected_sums(n: int) -> dict:
    """Rows, label sum and pixel sum of rows ``0 .. n-1``."""
    images, labels = mnist()
    q, r = divmod(n, len(labels))
    per_image = images.sum(axis=1, dtype=np.int64)
    return {"rows": n, "label_sum": int(q * labels.sum(dtype=np.int64) + labels[:r].sum(dtype=np.int64)),
            "pixel_sum": int(q * per_image.sum() + per_image[:r].sum())}


class Consumer:
    """The consumer of (a), the same in all three paths: float32 batch from the rows, counts, checksums."""

    def __init__(self):
        self.rows = self.label_sum = self.pixel_sum = 0
        self.t_first = self.t_last = None

    def consume(self, batch: list) -> None:
        x = np.asarray([r[0] for r in batch], dtype=np.float32)
        y = np.asarray([r[1] for r in batch], dtype=np.int64)
        self.rows += len(y)
        self.label_sum += int(y.sum())
        self.pixel_sum += int(x.sum(dtype=np.float64))
        self.t_last = time.time()
        if self.t_first is None:
            self.t_first = self.t_last

    def report(self) -> dict:
        return {"rows": self.rows, "label_sum": self.label_sum, "pixel_sum": self.pixel_sum,
                "t_first": self.t_first, "t_last": self.t_last}


def model() -> tuple[np.ndarray, np.ndarray]:
    """A fixed numpy model for (d): nearest class centroid as a linear layer (784 x 10 float32)."""
    images, labels = mnist()
    mod = sys.modules["_tfos_feed_bench_data"]
    if mod.model is None:
        x = images.astype(np.float32) / 255.0
        centroids = np.stack([x[labels == c].mean(axis=0) for c in range(10)])  # (10, 784)
        weights = np.ascontiguousarray(centroids.T, dtype=np.float32)
        bias = (-0.5 * (centroids ** 2).sum(axis=1)).astype(np.float32)
        mod.model = (weights, bias)
    return mod.model


def predict(x: Any, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return np.argmax((x / 255.0) @ weights + bias, axis=1)
