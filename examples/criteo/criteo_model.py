"""A Criteo click-through-rate model in tf.compat.v1 graph mode (data: ``criteo_data.py``).

Model (``--model_type linear``): logistic regression over hashed tokens, one per field:
``I{k}_{bucket}`` for the integers (bucket ``floor(ln(x)^2)`` for x > 2, else x itself; ``m`` when
missing), ``C{k}_{value}`` for the categoricals (an empty value is its own token) and
``C{a}xC{b}_{va}_{vb}`` for crossed categorical pairs. Each token hashes into one of
``num_buckets`` weights (``tf.strings.to_hash_bucket_fast``). ``dnn`` adds a deep part
(wide & deep): an 8-dimensional embedding per token, two ReLU layers, added to the logit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from criteo_data import CAT_NAMES, INT_NAMES, NUM_CAT, NUM_INT, Batch

DEFAULT_CROSSES = "C1xC2,C3xC4,C5xC6,C7xC9,C14xC17,C20xC23"


def parse_crosses(spec: str) -> list[tuple[int, int]]:
    """``"C1xC2,C3xC4"`` -> [(0, 1), (2, 3)] (0-based categorical columns)."""
    pairs = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        try:
            a, b = (CAT_NAMES.index(name.strip()) for name in item.split("x"))
        except ValueError:
            raise ValueError(f"bad cross {item!r}: use pairs of categorical columns such as C1xC2") from None
        pairs.append((a, b))
    return pairs



@dataclass
class Graph:
    """Placeholders and ops of one model graph (tf.compat.v1)."""

    ints: Any
    cats: Any
    label: Any
    probs: Any
    loss: Any
    train_op: Any
    global_step: Any

    def feed(self, batch: Batch) -> dict:
        """feed_dict for ``batch``."""
        return {self.ints: batch.ints, self.cats: batch.cats, self.label: batch.label}


def _tokens(ints: Any, cats: Any, crosses: list[tuple[int, int]]) -> Any:
    import tensorflow as tf

    missing = tf.math.is_nan(ints)
    safe = tf.where(missing, tf.zeros_like(ints), ints)
    bucket = tf.where(safe > 2, tf.floor(tf.square(tf.math.log(tf.maximum(safe, 1.0)))), safe)
    int_str = tf.where(missing, tf.fill(tf.shape(ints), "m"), tf.strings.as_string(tf.cast(bucket, tf.int64)))
    int_tok = tf.constant([f"{n}_" for n in INT_NAMES])[tf.newaxis, :] + int_str
    cat_tok = tf.constant([f"{n}_" for n in CAT_NAMES])[tf.newaxis, :] + cats
    parts = [int_tok, cat_tok]
    if crosses:
        a = tf.gather(cats, [p[0] for p in crosses], axis=1)
        b = tf.gather(cats, [p[1] for p in crosses], axis=1)
        names = tf.constant([f"{CAT_NAMES[i]}x{CAT_NAMES[j]}_" for i, j in crosses])[tf.newaxis, :]
        parts.append(names + a + "_" + b)
    return tf.concat(parts, axis=1)


def build_graph(model_type: str = "linear", num_buckets: int = 1 << 20, crosses: list[tuple[int, int]] = (),
                learning_rate: float = 0.05, l2: float = 1e-3, train: bool = True) -> Graph:
    """The model in the current graph (call under a ``replica_device_setter`` for ps training)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    ints = v1.placeholder(tf.float32, [None, NUM_INT], name="ints")
    cats = v1.placeholder(tf.string, [None, NUM_CAT], name="cats")
    label = v1.placeholder(tf.float32, [None], name="label")
    ids = tf.strings.to_hash_bucket_fast(_tokens(ints, cats, list(crosses)), num_buckets)
    weights = v1.get_variable("linear/weights", [num_buckets], initializer=v1.zeros_initializer())
    bias = v1.get_variable("linear/bias", [], initializer=v1.constant_initializer(math.log(0.25 / 0.75)))
    used = tf.gather(weights, ids)  # [batch, fields]
    logits = bias + tf.reduce_sum(used, axis=1)
    reg = l2 * tf.reduce_mean(tf.reduce_sum(tf.square(used), axis=1))
    if model_type == "dnn":
        dim = 8
        table = v1.get_variable("deep/embeddings", [num_buckets, dim],
                                initializer=v1.truncated_normal_initializer(stddev=0.01))
        emb = tf.gather(table, ids)
        deep = tf.reshape(emb, [-1, ids.shape[1] * dim])
        for i, units in enumerate((64, 32, 1)):
            w = v1.get_variable(f"deep/layer{i}/kernel", [deep.shape[1], units],
                                initializer=v1.glorot_uniform_initializer())
            b = v1.get_variable(f"deep/layer{i}/bias", [units], initializer=v1.zeros_initializer())
            deep = tf.matmul(deep, w) + b
            if units > 1:
                deep = tf.nn.relu(deep)
        logits += deep[:, 0]
        reg += l2 * tf.reduce_mean(tf.reduce_sum(tf.square(emb), axis=[1, 2]))
    elif model_type != "linear":
        raise ValueError(f"model_type must be linear or dnn, got {model_type!r}")
    probs = tf.sigmoid(logits, name="probs")
    loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=label, logits=logits), name="loss")
    global_step = v1.train.get_or_create_global_step()
    train_op = None
    if train:
        train_op = v1.train.AdagradOptimizer(learning_rate).minimize(loss + reg, global_step=global_step)
    return Graph(ints, cats, label, probs, loss, train_op, global_step)
