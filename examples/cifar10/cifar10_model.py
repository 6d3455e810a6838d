"""The classic TensorFlow CIFAR-10 model and its input pipelines, shared by train, eval and inference.

Model (the TensorFlow tutorial ``cifar10.py``): conv 5x5x64 - max-pool 3x3/2 - local response
norm - conv 5x5x64 - local response norm - max-pool 3x3/2 - fully connected 384 - 192 - 10,
1,068,298 parameters on 24x24x3 crops. Training input is distorted (random 24x24 crop,
left-right flip, random brightness and contrast); evaluation input is the central 24x24 crop.
Both are standardized per image.

TFRecords (written by ``cifar10_data_setup.py``) hold ``tf.train.Example`` records with
``image``: the 32x32x3 pixels as 3072 bytes in height-width-channel order (a bytes feature)
and ``label``: the class 0-9 (int64).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from tfos.spark_app import executor_count, spark_conf, submitted_master  # noqa: F401 - re-exported for the scripts

IMAGE_SIZE = 24  # crops the model sees
RAW_SIZE = 32
CHANNELS = 3
NUM_CLASSES = 10
RECORD_BYTES = 1 + RAW_SIZE * RAW_SIZE * CHANNELS
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
WEIGHT_DECAY = 0.004  # on the two fully connected hidden layers, as in the tutorial


def _read_bytes(path: str) -> bytes:
    if "://" in path:  # hdfs://, file://: through tfos's I/O layer
        from tfos.io.filesystem import FileSystem

        return FileSystem().read_bytes(path)
    with open(path, "rb") as f:
        return f.read()


def read_cifar_binary(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 [n, 32, 32, 3], HWC) and labels (uint8 [n]) from CIFAR-10 binary batch files
    (local paths or URIs such as ``hdfs://...``)."""
    images, labels = [], []
    for path in paths:
        raw = np.frombuffer(_read_bytes(path), dtype=np.uint8)
        if raw.size % RECORD_BYTES:
            raise ValueError(f"{path}: {raw.size} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 "
                             "records (1 label byte + 3072 pixel bytes)")
        records = raw.reshape(-1, RECORD_BYTES)
        if records[:, 0].max(initial=0) >= NUM_CLASSES:
            raise ValueError(f"{path}: label byte >= {NUM_CLASSES}; is this the CIFAR-100 format?")
        labels.append(records[:, 0].copy())
        images.append(records[:, 1:].reshape(-1, CHANNELS, RAW_SIZE, RAW_SIZE).transpose(0, 2, 3, 1))
    return np.concatenate(images), np.concatenate(labels)


def tf_bool(value: str) -> bool:
    """A TensorFlow-flags style boolean value: ``--run_once``, ``--run_once=True``, ``--run_once false``."""
    text = str(value).strip().lower()
    if text in ("1", "true", "t", "yes", "y"):
        return True
    if text in ("0", "false", "f", "no", "n"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def add_bool_flag(parser: Any, name: str, help: str) -> None:
    """``--name`` / ``--name=true|false`` / ``--noname``, as TensorFlow's ``DEFINE_boolean`` flags accept."""
    parser.add_argument(f"--{name}", type=tf_bool, nargs="?", const=True, default=False, help=help)
    parser.add_argument(f"--no{name}", dest=name, action="store_false", help=argparse.SUPPRESS)




def ship_to_executors(sc: Any) -> None:
    """Make this module importable on the executors (``--py-files`` does the same)."""
    sc.addPyFile(os.path.abspath(__file__))


def class_names(data_dir: str) -> list[str]:
    """The ten class names from ``batches.meta.txt`` (label order)."""
    text = _read_bytes(data_dir.rstrip("/") + "/batches.meta.txt").decode()
    return [line.strip() for line in text.splitlines() if line.strip()]


# input pipelines ---------------------------------------------------------------------------
def parse_examples(serialized: Any) -> tuple[Any, Any]:
    """A batch of serialized Examples -> (uint8 images [b, 32, 32, 3], int64 labels [b])."""
    import tensorflow as tf

    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    ex = tf.io.parse_example(serialized, spec)
    images = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [-1, RAW_SIZE, RAW_SIZE, CHANNELS])
    return images, ex["label"]


def distort(image: Any) -> Any:
    """Training augmentation of one 32x32x3 uint8 image -> standardized float 24x24x3."""
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    image = tf.image.random_crop(image, [IMAGE_SIZE, IMAGE_SIZE, CHANNELS])
    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_brightness(image, max_delta=63)
    image = tf.image.random_contrast(image, lower=0.2, upper=1.8)
    return tf.image.per_image_standardization(image)


def center(images: Any) -> Any:
    """Evaluation input: central 24x24 crop of a batch, standardized per image."""
    import tensorflow as tf

    images = tf.image.resize_with_crop_or_pad(tf.cast(images, tf.float32), IMAGE_SIZE, IMAGE_SIZE)
    return tf.image.per_image_standardization(images)


def tfrecord_files(directory: str, tio: Any = None) -> list[str]:
    """The ``part-*`` TFRecord files of a directory written by ``cifar10_data_setup.py``, listed
    through ``tio`` (a ``tfos.io.tf_dataset.TensorFlowIO``: ``hdfs://`` without libhdfs) or TensorFlow."""
    import tensorflow as tf

    pattern = directory.rstrip("/") + "/part-*"
    files = sorted(tio.glob(pattern) if tio is not None else tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no part-* TFRecord files in {directory}; run cifar10_data_setup.py first")
    return files


def records(files: list[str], tio: Any = None, parallel: int = 1) -> Any:
    """The serialized records of ``files``: read by ``tio`` when given (tfos's I/O layer), else by TensorFlow."""
    import tensorflow as tf

    if tio is not None:
        return tio.tfrecord_dataset(files, num_parallel_reads=parallel)
    return tf.data.TFRecordDataset(files, num_parallel_reads=parallel)


def train_dataset(files: list[str], batch_size: int, seed: int | None = None, tio: Any = None) -> Any:
    """Endless shuffled, distorted batches (the caller's strategy shards them across workers)."""
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    ds = records(files, tio, parallel=min(4, len(files)))
    ds = ds.repeat().shuffle(2048, seed=seed).batch(256).map(parse_examples, num_parallel_calls=autotune).unbatch()
    ds = ds.map(lambda image, label: (distort(image), label), num_parallel_calls=autotune)
    return ds.batch(batch_size, drop_remainder=True).prefetch(autotune)


def eval_dataset(files: list[str], batch_size: int, tio: Any = None) -> Any:
    """Every record once, in file order: (standardized 24x24 crops, labels)."""
    import tensorflow as tf

    ds = records(files, tio).batch(batch_size).map(parse_examples)
    return ds.map(lambda images, labels: (center(images), labels)).prefetch(tf.data.AUTOTUNE)


# model -------------------------------------------------------------------------------------
def build_model(learning_rate: float = 0.1, decay_steps: int = 136718, decay_rate: float = 0.1) -> Any:
    """The tutorial CNN as a compiled tf.keras model (SGD with staircase exponential decay)."""
    import tensorflow as tf

    layers = tf.keras.layers

    def conv_init(stddev: float) -> Any:
        return tf.keras.initializers.TruncatedNormal(stddev=stddev)

    def lrn(name: str) -> Any:
        return layers.Lambda(lambda x: tf.nn.local_response_normalization(
            x, depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75), name=name)

    l2 = tf.keras.regularizers.l2(WEIGHT_DECAY / 2)  # tf.nn.l2_loss is sum(w^2) / 2
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, CHANNELS)),
        layers.Conv2D(64, 5, padding="same", activation="relu", kernel_initializer=conv_init(5e-2), name="conv1"),
        layers.MaxPooling2D(3, strides=2, padding="same", name="pool1"),
        lrn("norm1"),
        layers.Conv2D(64, 5, padding="same", activation="relu", kernel_initializer=conv_init(5e-2),
                      bias_initializer=tf.keras.initializers.Constant(0.1), name="conv2"),
        lrn("norm2"),
        layers.MaxPooling2D(3, strides=2, padding="same", name="pool2"),
        layers.Flatten(),
        layers.Dense(384, activation="relu", kernel_initializer=conv_init(0.04), kernel_regularizer=l2,
                     bias_initializer=tf.keras.initializers.Constant(0.1), name="local3"),
        layers.Dense(192, activation="relu", kernel_initializer=conv_init(0.04), kernel_regularizer=l2,
                     bias_initializer=tf.keras.initializers.Constant(0.1), name="local4"),
        layers.Dense(NUM_CLASSES, kernel_initializer=conv_init(1 / 192.0), name="softmax_linear"),
    ], name="cifar10")
    schedule = tf.keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps, decay_rate, staircase=True)
    model.compile(optimizer=tf.keras.optimizers.SGD(schedule),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def restore(model: Any, checkpoint: str) -> int:
    """Load the model weights of a training checkpoint; returns its global step (optimizer iterations)."""
    import tensorflow as tf

    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    for name, _ in tf.train.list_variables(checkpoint):
        if name.split("/")[:2] in (["optimizer", "iter"], ["optimizer", "_iterations"]):  # v2 / new optimizer
            return int(tf.train.load_variable(checkpoint, name))
    return 0
