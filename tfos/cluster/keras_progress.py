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

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._replica_sum = _batch_logs_summed_over(self.model)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        n = getattr(self, "_replica_sum", 1)
        metrics = {k: v / n if n > 1 and isinstance(v, int | float) else v for k, v in (logs or {}).items()}
        loss = metrics.pop("loss", None)
        examples = self.step * self.batch_size if self.batch_size else None
        self.ctx.report(step=self.step, loss=loss, examples=examples, epoch=self.epoch, **metrics)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = dict(logs or {})
        loss = metrics.pop("loss", None)
        examples = self.step * self.batch_size if self.batch_size else None
        self.ctx.report(step=self.step, loss=loss, examples=examples, epoch=epoch + 1, **metrics)


def _batch_logs_summed_over(model: Any) -> int:
    """How many replicas tf-keras sums a batch's logs over (1: none).

    Under a multi-replica strategy tf-keras's default ``distribute_reduction_method="auto"``
    reduces the per-batch logs with SUM (``"first"`` only on TPUs), so every replica's copy of the
    already synchronised loss and metrics is added up: 2 workers show twice the loss and an
    accuracy of 1.9. Epoch-end logs are recomputed from the metrics and are right.
    """
    strategy = getattr(model, "distribute_strategy", None)
    replicas = int(getattr(strategy, "num_replicas_in_sync", 1) or 1)
    method = getattr(model, "distribute_reduction_method", "auto")
    tpu = "TPU" in type(strategy).__name__
    return replicas if replicas > 1 and (method == "sum" or (method == "auto" and not tpu)) else 1
