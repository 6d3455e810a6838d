"""Multi-worker Keras checkpointing that resumes, on a local directory or on ``hdfs://``.

Under MultiWorkerMirroredStrategy every worker must take part in saving; only the chief's
files land in ``directory``, the others write to a private temporary directory that is
removed. A rerun with the same ``directory`` continues from the last completed epoch.

Where TensorFlow can write ``directory`` itself (local paths; ``hdfs://`` with tensorflow-io)
the checkpoint manager writes there directly. Otherwise (``hdfs://`` through tfos's I/O layer)
it writes to a local mirror whose new files are uploaded atomically after every save (data
files, then ``.index`` files, then the ``checkpoint`` index), and restores download the latest
checkpoint first; the SavedModel export is saved locally and moved into place whole.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any

from tfos.io.filesystem import split_url
from tfos.io.tf_dataset import TFOS, TensorFlowIO

logger = logging.getLogger(__name__)


class TrainingCheckpoint:
    """Model + optimizer + completed-epoch counter in a ``tf.train.CheckpointManager``.

    ``io``: the :class:`~tfos.io.tf_dataset.TensorFlowIO` deciding how ``hdfs://`` is reached
    (default: ``TensorFlowIO("auto")`` for an ``hdfs://``/``viewfs://`` directory; for other
    directories the choice does not matter and nothing is probed).
    """

    def __init__(self, model: Any, directory: str, is_chief: bool, worker_index: int = 0, max_to_keep: int = 3,
                 *, io: TensorFlowIO | None = None):
        import tensorflow as tf

        self._tf = tf
        self.model = model
        self.directory = directory
        self.is_chief = is_chief
        if io is None:
            io = TensorFlowIO("auto" if split_url(directory)[0] in ("hdfs", "viewfs") else TFOS)
        self.io = io
        self.mirror = self.io.checkpoint_mirror(directory)
        self._scratch = None if is_chief else tempfile.mkdtemp(prefix=f"tfos-ckpt-worker{worker_index}-")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="completed_epochs")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.mirror.path if is_chief else self._scratch,
                                                  max_to_keep=max_to_keep)

    @property
    def direct(self) -> bool:
        """True when TensorFlow writes ``directory`` itself (no local mirror)."""
        return self.mirror.direct

    def restore(self) -> int:
        """Restore the chief's latest checkpoint, if any; returns the number of completed epochs."""
        latest = self.mirror.download()
        if latest is None:
            logger.info("no checkpoint in %s: starting from scratch", self.directory)
            return 0
        self.checkpoint.restore(latest)
        how = "" if self.direct else f" (downloaded from {self.directory})"
        logger.info("restored %s%s: resuming after epoch %d", latest, how, int(self.epoch.numpy()))
        return int(self.epoch.numpy())

    def save(self, completed_epochs: int, loss: Any = None) -> str:
        """Save after ``completed_epochs`` epochs (every worker calls it); the chief's copy goes to ``directory``."""
        self.epoch.assign(completed_epochs)
        path = self.manager.save(checkpoint_number=completed_epochs)
        if self.is_chief:
            uploaded = self.mirror.upload()
            where = f", uploaded {len(uploaded)} files to {self.directory}" if uploaded else ""
            logger.info("saved checkpoint %s (epoch %d, loss %s%s)", path, completed_epochs, loss, where)
        return path

    def callback(self) -> Any:
        """A Keras callback saving after every epoch."""

        def on_epoch_end(epoch: int, logs: dict | None = None) -> None:
            self.save(epoch + 1, (logs or {}).get("loss"))

        return self._tf.keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)

    def export_saved_model(self, export_dir: str) -> None:
        """Every worker saves (as MultiWorkerMirroredStrategy requires); only the chief's copy is kept.

        When TensorFlow cannot write ``export_dir`` the chief saves locally and moves the export
        into place whole (an existing export is replaced, never left half-written).
        """
        direct = self.is_chief and self.io.tf_can_open(export_dir)
        target = export_dir if direct else tempfile.mkdtemp(prefix="tfos-export-")
        try:
            self.model.save(target, save_format="tf", include_optimizer=False)
            if self.is_chief:
                if not direct:
                    self.io.upload_export(target, export_dir)
                logger.info("exported SavedModel to %s", export_dir)
        finally:
            if not direct:
                shutil.rmtree(target, ignore_errors=True)
            self.close()

    def close(self) -> None:
        """Remove local scratch and mirror directories."""
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        self.mirror.close()
