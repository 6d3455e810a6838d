"""TensorFlowOnSpark ``compat``: helpers that hide TensorFlow API changes from user TF code."""

from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any

logger = logging.getLogger(__name__)


def _is_keras3(model: Any) -> bool:
    """A Keras 3 model (``keras`` >= 3), which saves SavedModels with ``export``; tf-keras models live in ``tf_keras``."""
    if type(model).__module__.split(".")[0] != "keras":
        return False
    import keras

    return int(keras.__version__.split(".")[0]) >= 3


def export_saved_model(model: Any, export_dir: str, is_chief: bool = False) -> None:
    """Save a Keras ``model`` as a SavedModel in ``export_dir`` on the chief.

    Every node must call it (saving a model trained under a multi-worker strategy is
    collective); a non-chief node writes to a private temporary directory it then removes.
    tf.keras (tf-keras) models are saved with ``save_format='tf'``; Keras 3 models with
    ``model.export`` (a serving SavedModel).
    """
    target = export_dir if is_chief else tempfile.mkdtemp(prefix="tfos-worker-model-")
    try:
        if _is_keras3(model):
            model.export(target)
        else:
            model.save(target, save_format="tf")
    finally:
        if not is_chief:
            shutil.rmtree(target, ignore_errors=True)
    if is_chief:
        logger.info("exported SavedModel to %s", export_dir)


def disable_auto_shard(options: Any) -> None:
    """Turn tf.data auto-sharding off in ``options`` (a ``tf.data.Options``): the feed is already sharded."""
    import tensorflow as tf

    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF


def is_gpu_available() -> bool:
    """True when TensorFlow in this process sees a GPU."""
    import tensorflow as tf

    return len(tf.config.list_logical_devices("GPU")) > 0
