"""Multi-worker Keras checkpointing that resumes: the chief writes, every worker restores.

Under MultiWorkerMirroredStrategy every worker must take part in saving; only the chief's
files land in ``directory``, the others write to a private temporary directory that is
removed. A rerun with the same ``directory`` continues from the last completed epoch.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any

logger = logging.getLogger(__name__)


class TrainingCheckpoint:
    """Model + optimizer + completed-epoch counter in a ``tf.train.CheckpointManager``."""

    def __init__(self, model: Any, directory: str, is_chief: bool, worker_index: int = 0, max_to_keep: int = 3):
        import tensorflow as tf

        self._tf = tf
        self.model = model
        self.directory = directory
        self.is_chief = is_chief
        self._scratch = None if is_chief else tempfile.mkdtemp(prefix=f"tfos-ckpt-worker{worker_index}-")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="completed_epochs")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory if is_chief else self._scratch,
                                                  max_to_keep=max_to_keep)

    def restore(self) -> int:
        """Restore the chief's latest checkpoint, if any; returns the number of completed epochs."""
        latest = self._tf.train.latest_checkpoint(self.directory) if self._tf.io.gfile.exists(self.directory) \
            else None
        if latest is None:
            logger.info("no checkpoint in %s: starting from scratch", self.directory)
            return 0
        self.checkpoint.restore(latest)
        logger.info("restored %s: resuming after epoch %d", latest, int(self.epoch.numpy()))
        return int(self.epoch.numpy())

    def callback(self) -> Any:
        """A Keras callback saving after every epoch."""

        def on_epoch_end(epoch: int, logs: dict | None = None) -> None:
            self.epoch.assign(epoch + 1)
            path = self.manager.save(checkpoint_number=epoch + 1)
            if self.is_chief:
                logger.info("saved checkpoint %s (epoch %d, loss %s)", path, epoch + 1, (logs or {}).get("loss"))

        return self._tf.keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)

    def export_saved_model(self, export_dir: str) -> None:
        """Every worker saves (as MultiWorkerMirroredStrategy requires); only the chief's copy is kept."""
        target = export_dir if self.is_chief else tempfile.mkdtemp(prefix="tfos-export-")
        self.model.save(target, save_format="tf", include_optimizer=False)
        if self.is_chief:
            logger.info("exported SavedModel to %s", export_dir)
        else:
            shutil.rmtree(target, ignore_errors=True)
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
