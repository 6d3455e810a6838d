"""``tfos.ProgressCallback``: a Keras callback that reports ``fit`` progress to the driver.

``model.fit(..., callbacks=[tfos.ProgressCallback(ctx, batch_size=64)])``: every batch hands
the step (counted across epochs), loss and metrics to ``ctx.report`` (which sends at most once
a second); with ``batch_size`` the driver also shows examples/s. Importing this module imports
TensorFlow, so ``tfos`` imports it only when the name is used.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfos.cluster.context import NodeContext


class ProgressCallback(tf.keras.callbacks.Callback):
    """Reports step, loss, metrics and epoch of ``fit`` through ``ctx.report``."""

    def __init__(self, ctx: NodeContext, batch_size: int | None = None):
        super().__init__()
        self.ctx = ctx
        self.batch_size = batch_size
        self.step = 0
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        metrics = dict(logs or {})
        loss = metrics.pop("loss", None)
        examples = self.step * self.batch_size if self.batch_size else None
        self.ctx.report(step=self.step, loss=loss, examples=examples, epoch=self.epoch, **metrics)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = dict(logs or {})
        loss = metrics.pop("loss", None)
        examples = self.step * self.batch_size if self.batch_size else None
        self.ctx.report(step=self.step, loss=loss, examples=examples, epoch=epoch + 1, **metrics)
