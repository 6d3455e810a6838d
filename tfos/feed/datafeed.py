"""TF-process side of the feed: ``DataFeed`` (TensorFlowOnSpark ``TFNode.DataFeed``) and tf.data.

Created inside ``main_fun(args, ctx)`` with ``ctx.get_data_feed(...)`` or
``TFNode.DataFeed(ctx.mgr, ...)``; the first argument is anything with a ``feed_dir``
attribute (the NodeContext, or ``ctx.mgr`` which is the context itself). Creating it opens the
node's listening socket for ``qname_in``; Spark feed tasks on the same executor connect to it.

Reading (one consumer thread at a time):

* ``next_batch(n)`` -> a list of up to ``n`` rows, as the feeder saw them (tuples stay tuples,
  Rows Rows, numpy arrays numpy arrays); with ``input_mapping`` a dict ``{tensor: ndarray}``
  built column-wise, as in TensorFlowOnSpark 2.x (columns in ``sorted(input_mapping)`` order
  for positional rows, by name for Rows/dicts/DataFrames). In training it continues across
  epochs; an empty result means the feed ended (``should_stop()``).
* ``batches(n)`` -> a generator of whole batches as numpy arrays for ONE epoch (it returns at
  the end of the epoch; the next call reads the next epoch).
* ``dataset(n)`` / ``as_dataset(n)`` -> a ``tf.data.Dataset`` over ``batches(n)``: each
  iteration is one epoch, so ``model.fit(feed.dataset(bs), epochs=E)`` matches
  ``cluster.train(rdd, num_epochs=E)`` with no ``steps_per_epoch``; batches are Arrow columns ->
  numpy -> tensors with no per-row Python work; auto-sharding is off (the data is already
  sharded per worker).

``train_mode`` says whether results are expected, as in TensorFlowOnSpark: what a feed task
sends decides how it is read. ``cluster.train`` data is read the same way whatever
``train_mode`` is (``DataFeed(ctx.mgr, False)`` trains, as TensorFlowOnSpark's Keras
examples do); ``cluster.inference`` data needs ``train_mode=False``.

Inference (``cluster.inference`` feeding a ``train_mode=False`` feed): batches never span two
partitions; call
``batch_results(results)`` with one result per row of the batches handed out (a list, an
array, a tensor, or a dict of arrays), in order; they go back to the feed task, which yields
them as the output of ``cluster.inference``.

A training feed task that goes away before the end of its last epoch (its Spark task failed,
was killed or cancelled) makes the read raise ``FeedError``: that epoch can never be completed.

``terminate()`` stops this input: the current feed task and all later ones end promptly
without sending the rest. ``should_stop()`` is True after the end of the feed (end of
``cluster.train`` / ``cluster.shutdown``) or ``terminate()``.

The parts: ``receiver`` (accepting feed tasks, decoding their messages into events, epochs,
the end of the feed and ``terminate()``), ``results`` (the inference results owed to each feed
task), ``shaping`` (record batches -> rows, mapped dicts, numpy batches) and ``tf_dataset``
(the tf.data adapter). ``DataFeed`` puts them together behind TensorFlowOnSpark's API.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from tfos.feed.errors import FeedError
from tfos.feed.receiver import FEED_END, PARTITION_END, FeedReceiver
from tfos.feed.results import PendingResults
from tfos.feed.shaping import BatchShaper
from tfos.feed.tf_dataset import build_dataset

logger = logging.getLogger("tfos.feed")


class DataFeed:
    """The data fed to this TF node for one named input (see the module doc)."""

    def __init__(self, mgr: Any, train_mode: bool = True, qname_in: str = "input", qname_out: str = "output",
                 input_mapping: dict[str, str] | list[str] | None = None, *, timeout: float | None = None):
        feed_dir = mgr if isinstance(mgr, str) else getattr(mgr, "feed_dir", None)
        if not feed_dir or not os.path.isdir(feed_dir):
            raise FeedError(f"DataFeed needs the node context (ctx or ctx.mgr) of an InputMode.SPARK node; "
                            f"got {type(mgr).__name__} with feed_dir={feed_dir!r}")
        job = getattr(mgr, "job_name", None)
        self.node = f"{job}:{getattr(mgr, 'task_index', 0)}" if job else os.environ.get("TFOS_NODE", "tf")
        self.train_mode = bool(train_mode)
        self.qname_in = qname_in
        self.qname_out = qname_out  # results travel back on the input's connection; kept for compatibility
        self._shaper = BatchShaper(self.node, input_mapping)
        self.timeout = timeout
        self._results = PendingResults(self.node)
        self._receiver = FeedReceiver(feed_dir, qname_in, self.node, self.train_mode, timeout, self._results)
        self.feed_dir = self._receiver.feed_dir
        feeds = getattr(mgr, "_feeds", None)  # the node context's: its heartbeats carry stats() to the driver
        if isinstance(feeds, dict):
            feeds[qname_in] = self
        logger.info("%s: data feed %r open (%s mode)", self.node, qname_in, "train" if train_mode else "inference")

    @property
    def input_columns(self) -> list[str]:
        """The fed columns ``input_mapping`` names (sorted by column for a dict), else empty."""
        return self._shaper.input_columns

    @property
    def input_tensors(self) -> list[str] | None:
        """The tensor names of ``input_mapping``, in the order of ``input_columns``; None without one."""
        return self._shaper.input_tensors

    def stats(self) -> dict[str, int]:
        """What the driver shows of this feed (``cluster.status()``): rows read, rows queued, epochs."""
        return {"rows_read": self._receiver.rows_read, "queued_rows": self._receiver.queued_rows(),
                "epochs_read": self._receiver.epochs_read}

    @property
    def rows_read(self) -> int:
        """Rows handed out so far."""
        return self._receiver.rows_read

    @property
    def epochs_read(self) -> int:
        """End-of-epoch marks received so far."""
        return self._receiver.epochs_read

    # ------------------------------------------------------------------------------------
    # public API (TensorFlowOnSpark compatible)
    # ------------------------------------------------------------------------------------
    def should_stop(self) -> bool:
        """True once the feed ended (no more data will come) or ``terminate()`` was called."""
        return self._receiver.done

    def next_batch(self, batch_size: int) -> Any:
        """Up to ``batch_size`` rows (a list), or with ``input_mapping`` a dict of numpy arrays.

        Blocks until enough rows arrived or the feed ended; in inference mode a batch ends at
        the end of a partition. Returns an empty batch only when the feed ended.
        """
        pieces = self._read_rows(batch_size)
        if self.input_tensors is not None:
            return self._shaper.mapped(pieces)
        return self._shaper.rows(pieces)

    def next_rows(self, batch_size: int) -> list:
        """Up to ``batch_size`` rows as the feeder saw them, ``input_mapping`` or not (else as ``next_batch``)."""
        return self._shaper.rows(self._read_rows(batch_size))

    def _read_rows(self, batch_size: int) -> list[pa.RecordBatch]:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        pieces: list[pa.RecordBatch] = []
        count = 0
        while count < batch_size:
            ev = self._receiver.take(batch_size - count)
            if isinstance(ev, pa.RecordBatch):
                pieces.append(ev)
                count += ev.num_rows
            elif ev is FEED_END:
                break
            elif ev is PARTITION_END and count:
                break
        return pieces

    def batch_results(self, results: Any) -> None:
        """Send inference results back: one per row handed out by ``next_batch``/``batches``, in order."""
        if self.train_mode:
            logger.debug("batch_results() ignored: no inference feed is waiting for results")
            return
        self._results.send(results, self._receiver.msg_timeout())

    def terminate(self) -> None:
        """Stop this input: the current and all later feed tasks end without sending the rest."""
        self._receiver.terminate()

    def close(self) -> None:
        """Release the socket; unread data is refused (like ``terminate()``)."""
        if not self._receiver.terminated:
            self.terminate()

    def __enter__(self) -> DataFeed:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._receiver.close_listener()
        except Exception:  # noqa: BLE001 - interpreter shutdown, or __init__ failed before the receiver
            pass

    # ------------------------------------------------------------------------------------
    # whole batches
    # ------------------------------------------------------------------------------------
    def batches(self, batch_size: int, *, drop_remainder: bool = False):
        """Generator of numpy batches for one epoch (inference: until the feed ends).

        Each batch is an ndarray (single-column rows), a tuple of ndarrays (tuple/list rows),
        or a dict (named columns, or ``input_mapping``). The last batch of an epoch may be
        short unless ``drop_remainder``.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        return self._batches(lambda: batch_size, drop_remainder)

    def _batches(self, size: Callable[[], int], drop_remainder: bool):
        """``batches`` with the size of each batch asked of ``size()`` just before it is gathered."""
        while True:
            pieces: list[pa.RecordBatch] = []
            count = 0
            end = None
            batch_size = size()
            while count < batch_size:
                ev = self._receiver.take(batch_size - count)
                if isinstance(ev, pa.RecordBatch):
                    pieces.append(ev)
                    count += ev.num_rows
                elif ev is PARTITION_END:
                    if count:
                        break
                else:  # EPOCH_END / FEED_END
                    end = ev
                    break
            if count and (count == batch_size or not drop_remainder):
                yield self._shaper.structure(pieces)
            elif count:
                if self._results.owed:  # dropped inference rows still owe results
                    self.batch_results([None] * count)
            if end is not None:
                return

    def dataset(self, batch_size: int, *, drop_remainder: bool = False, output_signature: Any = None,
                prefetch: int | None = 2) -> Any:
        """A ``tf.data.Dataset`` of whole batches (see ``batches``); each iteration is one epoch.

        ``output_signature`` defaults to one inferred from the first chunk of data (this call
        then waits for the feed to start).
        """
        return build_dataset(self._batches, self._sample, train_mode=self.train_mode, batch_size=batch_size,
                             drop_remainder=drop_remainder, output_signature=output_signature, prefetch=prefetch)

    as_dataset = dataset

    def _sample(self) -> Any:
        """A one-row batch of the data, for ``dataset()``'s signature (waits for the feed to start)."""
        first = self._receiver.first_batch()
        if first is None:
            raise FeedError(f"{self.node}: the feed {self.qname_in!r} ended before any data arrived; pass "
                            f"dataset(..., output_signature=...) to build a dataset anyway")
        return self._shaper.structure([first.slice(0, 1)])
