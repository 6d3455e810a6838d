"""Criteo display-ads data: the TSV loader (plain Python/NumPy and Spark DataFrame) and loss helpers.

One ad impression per line, 40 tab-separated fields: the label (1 = click), 13 integer
features I1-I13 and 26 hashed categorical features C1-C26. An empty field is a missing value,
and so are missing trailing fields (some files strip them): ``split_line`` pads them, and
``read_dataframe`` (Spark's CSV reader, PERMISSIVE mode) turns them into nulls.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfos.spark_app import executor_count, spark_conf, submitted_master  # noqa: F401 - re-exported for the scripts

NUM_INT = 13
NUM_CAT = 26
NUM_FIELDS = 1 + NUM_INT + NUM_CAT
INT_NAMES = tuple(f"I{k}" for k in range(1, NUM_INT + 1))
CAT_NAMES = tuple(f"C{k}" for k in range(1, NUM_CAT + 1))


@dataclass
class Batch:
    """Parsed rows as arrays: ``label`` float32 [n], ``ints`` float32 [n, 13] (NaN = missing),
    ``cats`` object [n, 26] of str ('' = missing)."""

    label: np.ndarray
    ints: np.ndarray
    cats: np.ndarray

    def __len__(self) -> int:
        return len(self.label)


def split_line(line: str) -> list[str]:
    """The 40 fields of one TSV line; missing trailing fields become empty strings."""
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) > NUM_FIELDS:
        raise ValueError(f"a Criteo row has at most {NUM_FIELDS} tab-separated fields, got {len(fields)}: "
                         f"{line[:80]!r}")
    return fields + [""] * (NUM_FIELDS - len(fields))


def parse_lines(lines: Iterable[str]) -> Batch:
    """Parse TSV lines (blank lines skipped) into a ``Batch``."""
    rows = [split_line(line) for line in lines if line.strip()]
    n = len(rows)
    label = np.zeros(n, np.float32)
    ints = np.full((n, NUM_INT), np.nan, np.float32)
    cats = np.empty((n, NUM_CAT), object)
    for i, f in enumerate(rows):
        label[i] = float(f[0] or 0)
        for k in range(NUM_INT):
            if f[1 + k]:
                ints[i, k] = float(f[1 + k])
        cats[i] = f[1 + NUM_INT:]
    return Batch(label, ints, cats)


def read_lines(paths: Sequence[str]) -> Iterator[str]:
    """Lines of text files on any file system tfos.io serves (local, file://, hdfs://)."""
    from tfos.io.filesystem import FileSystem

    fs = FileSystem()
    for path in paths:
        with fs.open(path, "r", encoding="utf-8") as f:
            yield from f


def data_files(path: str) -> list[str]:
    """A file, a directory (its non-hidden files) or a glob -> sorted file paths."""
    from tfos.io.filesystem import FileSystem, join

    fs = FileSystem()
    if any(ch in path for ch in "*?["):
        files = fs.glob(path)
    elif fs.isdir(path):
        files = [join(path, n) for n in fs.listdir(path) if not n.startswith(("_", "."))]
    else:
        files = [path]
    if not files:
        raise FileNotFoundError(f"no data files at {path}")
    return sorted(files)




def cross_entropy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy (natural log), probabilities clipped to [1e-7, 1 - 1e-7]."""
    p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def base_rate_loss(train_ctr: float, labels: np.ndarray) -> float:
    """Cross-entropy on ``labels`` of always predicting the training click-through rate."""
    return cross_entropy(labels, np.full(len(labels), train_ctr))




def read_dataframe(spark: Any, paths: str | Sequence[str]) -> Any:
    """DataFrame (label int, I1-I13 bigint, C1-C26 string; missing = null) of Criteo TSV files."""
    from pyspark.sql import types as T

    fields = [T.StructField("label", T.IntegerType())]
    fields += [T.StructField(n, T.LongType()) for n in INT_NAMES]
    fields += [T.StructField(n, T.StringType()) for n in CAT_NAMES]
    return spark.read.csv(list(paths) if not isinstance(paths, str) else paths, sep="\t", header=False,
                          schema=T.StructType(fields), mode="PERMISSIVE")
