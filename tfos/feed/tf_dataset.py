"""The tf.data adapter of ``DataFeed.dataset()``: whole numpy batches -> a ``tf.data.Dataset``.

Training hands TF blocks of whole batches (about ``BLOCK_BYTES`` each) that ``rebatch()`` cuts
in C++, so the per-batch Python cost is paid once per block; the output signature is inferred
from a one-row sample unless given; auto-sharding is off (the data is already sharded per worker).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from tfos.feed.errors import FeedError

BLOCK_BYTES = 4 << 20  # dataset(): about this much data per Python -> TF hand-over
MAX_BLOCK_BATCHES = 64


def build_dataset(batches: Callable[[Callable[[], int], bool], Iterator[Any]], sample: Callable[[], Any], *,
                  train_mode: bool, batch_size: int, drop_remainder: bool = False, output_signature: Any = None,
                  prefetch: int | None = 2) -> Any:
    """A ``tf.data.Dataset`` over ``batches(size, drop_remainder)`` (one epoch per iteration).

    ``batches`` asks ``size()`` for the rows of each batch just before gathering it; ``sample()``
    is a one-row batch of the data (called only without ``output_signature``; it may wait for
    the feed to start).
    """
    import tensorflow as tf

    if output_signature is None:
        output_signature = infer_signature(tf, sample())
    flat_specs = tf.nest.flatten(output_signature)
    np_types = [spec.dtype.as_numpy_dtype if spec.dtype != tf.string else None for spec in flat_specs]

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    # Training: Python hands TF blocks of whole batches (about BLOCK_BYTES each) and rebatch()
    # cuts them in C++, so the per-batch Python cost is paid once per block. The batch
    # boundaries are the same (blocks are multiples of batch_size until the epoch's end).
    block = {"batches": 1 if train_mode else 0}

    def size() -> int:
        return batch_size * max(1, block["batches"])

    def generate():
        for batch in batches(size, drop_remainder and not block["batches"]):
            flat = tf.nest.flatten(batch)
            if len(flat) != len(np_types):
                raise FeedError(f"a batch has {len(flat)} components, the dataset's signature "
                                f"{len(np_types)}")
            flat = [a if t is None or a.dtype == t else a.astype(t) for a, t in zip(flat, np_types, strict=False)]
            if block["batches"] == 1 and len(flat[0]):
                row_bytes = max(1, sum(_nbytes(a) for a in flat) // len(flat[0]))
                block["batches"] = max(1, min(MAX_BLOCK_BATCHES, BLOCK_BYTES // (row_bytes * batch_size)))
            yield tf.nest.pack_sequence_as(output_signature, flat)

    ds = tf.data.Dataset.from_generator(generate, output_signature=output_signature)
    if block["batches"]:
        ds = ds.rebatch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    ds = ds.with_options(options)
    if prefetch:
        ds = ds.prefetch(prefetch)
    return ds


def infer_signature(tf: Any, sample: Any) -> Any:
    """The ``tf.TensorSpec`` structure of batches shaped like ``sample`` (any number of rows)."""
    def spec(a: np.ndarray) -> Any:
        dtype = tf.string if a.dtype == object or a.dtype.kind in "USO" else tf.as_dtype(a.dtype)
        return tf.TensorSpec(shape=(None,) + a.shape[1:], dtype=dtype)

    return tf.nest.map_structure(spec, sample)


def _nbytes(a: np.ndarray) -> int:
    if a.dtype == object:  # strings/bytes: count the payloads of a few
        sample = a.reshape(-1)[:16]
        return int(sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in sample) * a.size / max(1, sample.size))
    return int(a.nbytes)
