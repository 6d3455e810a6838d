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
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from tfos.feed import arrow_codec as codec
from tfos.feed import channel as ch
from tfos.feed.errors import FeedError, FeedTimeout, PeerGone

logger = logging.getLogger("tfos.feed")

EPOCH_END = "end of epoch"
PARTITION_END = "end of partition"
FEED_END = "end of feed"
HELLO_TIMEOUT = 30.0
WAIT_LOG_SECS = 120.0
BLOCK_BYTES = 4 << 20  # dataset(): about this much data per Python -> TF hand-over
MAX_BLOCK_BATCHES = 64
TERMINATE_DRAIN_SECS = 2.0


class _Outstanding:
    """Rows handed out from one inference connection that still await their results."""

    __slots__ = ("conn", "partition", "rows", "finished")

    def __init__(self, conn: ch.Connection, partition: int):
        self.conn, self.partition, self.rows, self.finished = conn, partition, 0, False


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
        if isinstance(input_mapping, dict):
            items = sorted(input_mapping.items())
            self.input_columns = [c for c, _ in items]
            self.input_tensors: list[str] | None = [t for _, t in items]
        elif input_mapping:
            self.input_columns = list(input_mapping)
            self.input_tensors = list(input_mapping)
        else:
            self.input_columns, self.input_tensors = [], None
        self.timeout = timeout
        self.feed_dir = ch.FeedDir(feed_dir)
        self._listener: ch.Listener | None = ch.Listener(feed_dir, qname_in)
        self._conn: ch.Connection | None = None
        self._hello: dict = {}
        self._events: deque[Any] = deque()  # RecordBatch | EPOCH_END | PARTITION_END | FEED_END, in order
        self._outstanding: deque[_Outstanding] = deque()
        self._current: _Outstanding | None = None
        self._inference_seen = False  # an inference feed task connected (results are owed)
        self._done = False
        self._terminated = False
        self.rows_read = 0
        self.epochs_read = 0
        self._conn_epochs = 0  # epochs ended on the current connection
        logger.info("%s: data feed %r open (%s mode)", self.node, qname_in, "train" if train_mode else "inference")

    # ------------------------------------------------------------------------------------
    # public API (TensorFlowOnSpark compatible)
    # ------------------------------------------------------------------------------------
    def should_stop(self) -> bool:
        """True once the feed ended (no more data will come) or ``terminate()`` was called."""
        return self._done

    def next_batch(self, batch_size: int) -> Any:
        """Up to ``batch_size`` rows (a list), or with ``input_mapping`` a dict of numpy arrays.

        Blocks until enough rows arrived or the feed ended; in inference mode a batch ends at
        the end of a partition. Returns an empty batch only when the feed ended.
        """
        pieces = self._read_rows(batch_size)
        if self.input_tensors is not None:
            return self._mapped(pieces)
        return self._as_rows(pieces)

    def next_rows(self, batch_size: int) -> list:
        """Up to ``batch_size`` rows as the feeder saw them, ``input_mapping`` or not (else as ``next_batch``)."""
        return self._as_rows(self._read_rows(batch_size))

    def _read_rows(self, batch_size: int) -> list[pa.RecordBatch]:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        pieces: list[pa.RecordBatch] = []
        count = 0
        while count < batch_size:
            ev = self._take(batch_size - count)
            if isinstance(ev, pa.RecordBatch):
                pieces.append(ev)
                count += ev.num_rows
            elif ev is FEED_END:
                break
            elif ev is PARTITION_END and count:
                break
        return pieces

    @staticmethod
    def _as_rows(pieces: list[pa.RecordBatch]) -> list:
        rows: list = []
        for piece in pieces:
            rows.extend(codec.rows_from_batch(piece))
        return rows

    def batch_results(self, results: Any) -> None:
        """Send inference results back: one per row handed out by ``next_batch``/``batches``, in order."""
        if self.train_mode or (not self._inference_seen and not self._outstanding):
            logger.debug("batch_results() ignored: no inference feed is waiting for results")
            return
        results = codec.normalize_results(results)
        n = codec.results_length(results)
        start = 0
        self._retire_answered()
        while start < n:
            head = self._outstanding[0] if self._outstanding else None
            if head is None or head.rows == 0:
                raise FeedError(f"batch_results() got {n - start} more results than rows handed out by "
                                f"next_batch() on {self.node}")
            k = min(head.rows, n - start)
            payload = pickle_results(codec.results_slice(results, start, start + k))
            try:
                head.conn.send(ch.RESULTS, payload, timeout=self._msg_timeout(),
                               what=f"the feed task of partition {head.partition} to take its results")
            except (PeerGone, FeedTimeout) as exc:
                logger.warning("%s: could not return results of partition %d: %s", self.node, head.partition, exc)
            head.rows -= k
            start += k
            self._retire_answered()

    def _retire_answered(self) -> None:
        """Close the connections of finished partitions whose results all went back."""
        while self._outstanding and self._outstanding[0].rows == 0 and self._outstanding[0] is not self._current:
            head = self._outstanding.popleft()
            if head.finished:
                head.conn.close()

    def terminate(self) -> None:
        """Stop this input: the current and all later feed tasks end without sending the rest."""
        if self._terminated:
            return
        self._terminated = True
        self._done = True
        self.feed_dir.mark_terminated(self.qname_in)
        conns = {id(o.conn): o.conn for o in self._outstanding}
        if self._conn is not None:
            conns[id(self._conn)] = self._conn
        for conn in conns.values():
            self._say_stop(conn, "terminate()")
        self._reject_backlog("terminated")
        self._events.clear()
        self._outstanding.clear()
        self._conn = self._current = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        logger.info("%s: data feed %r terminated after %d rows", self.node, self.qname_in, self.rows_read)

    def close(self) -> None:
        """Release the socket; unread data is refused (like ``terminate()``)."""
        if not self._terminated:
            self.terminate()

    def __enter__(self) -> DataFeed:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._listener is not None:
                self._listener.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
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
                ev = self._take(batch_size - count)
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
                yield self._structure(pieces)
            elif count:
                if self._current is not None or self._outstanding:  # dropped inference rows still owe results
                    self.batch_results([None] * count)
            if end is not None:
                return

    def dataset(self, batch_size: int, *, drop_remainder: bool = False, output_signature: Any = None,
                prefetch: int | None = 2) -> Any:
        """A ``tf.data.Dataset`` of whole batches (see ``batches``); each iteration is one epoch.

        ``output_signature`` defaults to one inferred from the first chunk of data (this call
        then waits for the feed to start).
        """
        import tensorflow as tf

        if output_signature is None:
            output_signature = self._infer_signature(tf)
        flat_specs = tf.nest.flatten(output_signature)
        np_types = [spec.dtype.as_numpy_dtype if spec.dtype != tf.string else None for spec in flat_specs]

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        # Training: Python hands TF blocks of whole batches (about BLOCK_BYTES each) and rebatch()
        # cuts them in C++, so the per-batch Python cost is paid once per block. The batch
        # boundaries are the same (blocks are multiples of batch_size until the epoch's end).
        block = {"batches": 1 if self.train_mode else 0}

        def size() -> int:
            return batch_size * max(1, block["batches"])

        def generate():
            for batch in self._batches(size, drop_remainder=drop_remainder and not block["batches"]):
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

    as_dataset = dataset

    # ------------------------------------------------------------------------------------
    # internals: events
    # ------------------------------------------------------------------------------------
    def _msg_timeout(self) -> float:
        return float(self._hello.get("feed_timeout") or 600.0)

    def _take(self, limit: int) -> Any:
        """The next event; a record batch is cut to at most ``limit`` rows (the rest stays queued)."""
        ev = self._next_event()
        if isinstance(ev, pa.RecordBatch) and ev.num_rows > limit:
            self._events.appendleft(ev.slice(limit))
            ev = ev.slice(0, limit)
        if isinstance(ev, pa.RecordBatch):
            self.rows_read += ev.num_rows
            if self._current is not None:  # inference: these rows now await their results
                self._current.rows += ev.num_rows
        return ev

    def _next_event(self) -> Any:
        while True:
            if self._events:
                ev = self._events.popleft()
                if ev is PARTITION_END:  # everything of this connection has been handed out
                    self._end_connection()
                return ev
            if self._done:
                return FEED_END
            if self._conn is None:
                self._accept()
                continue
            self._read_message()

    def _read_message(self) -> None:
        conn = self._conn
        assert conn is not None
        part = self._hello.get("partition")
        try:
            msg = conn.recv(timeout=self._msg_timeout(),
                            what=f"the next message of the feed task for partition {part}")
        except PeerGone:
            epochs = int(self._hello.get("epochs") or 0)
            if self._hello.get("mode") == "train" and self._conn_epochs < epochs:
                # the epoch can never be completed: reading on would break exact epochs silently
                self._conn = None
                conn.close()
                raise FeedError(f"{self.node}: the feed task of shard {part} of {self.qname_in!r} went away in "
                                f"epoch {self._conn_epochs + 1}/{epochs} (its Spark task failed, was killed or "
                                f"cancelled: see the driver's error); {self.rows_read} rows read so far") from None
            logger.warning("%s: the feed task of partition %s closed its connection before the end of its data "
                           "(task failed, killed or cancelled); %d rows read so far", self.node, part, self.rows_read)
            self._events.append(PARTITION_END)
            return
        if msg.type == ch.DATA:
            try:
                batches = codec.from_ipc(msg.payload)
            except pa.ArrowException as exc:
                self._fail(conn, f"undecodable data from the feed task of partition {part}: {exc}")
            self._events.extend(b for b in batches if b.num_rows)
        elif msg.type == ch.END_EPOCH:
            self.epochs_read += 1
            self._conn_epochs += 1
            self._events.append(EPOCH_END)
        elif msg.type == ch.END_FEED:
            # queued after the data before it; with the queue empty _next_event then keeps
            # returning FEED_END
            self._events.append(FEED_END)
            self._conn = None
            conn.close()
            self._end_feed()
        elif msg.type == ch.END_PARTITION:
            self._events.append(PARTITION_END)
        elif msg.type in (ch.TERMINATE, ch.ERROR):
            info = msg.control()
            logger.warning("%s: the feed task of partition %s stopped: %s", self.node, part,
                           info.get("error") or info.get("reason"))
            self._events.append(PARTITION_END)
        else:
            self._fail(conn, f"unexpected {msg.name} message from the feed task of partition {part}")

    def _end_connection(self) -> None:
        conn = self._conn
        self._conn = None
        if conn is None:
            return
        if self._current is None:  # a training connection: nothing owed
            conn.close()
            return
        current = self._current
        self._current = None
        if current is not None and current.rows:
            current.finished = True  # closed once its results went back
        else:
            if current is not None and current in self._outstanding:
                self._outstanding.remove(current)
            conn.close()

    def _accept(self) -> None:
        """Wait for the next feed task (or the end of the feed) and greet it."""
        started = last_log = time.monotonic()
        while True:
            if self.feed_dir.ended(self.qname_in) or self._listener is None:
                self._end_feed()
                return
            sock = self._listener.accept(timeout=0.2)
            now = time.monotonic()
            if sock is None:
                if self.timeout is not None and now - started > self.timeout:
                    raise FeedTimeout(f"{self.node}: timed out after {self.timeout:g}s waiting for a Spark feed task "
                                      f"on data feed {self.qname_in!r} (is the driver calling cluster.train/"
                                      f"inference?)")
                if now - last_log > WAIT_LOG_SECS:
                    last_log = now
                    logger.info("%s: waiting for data on feed %r (%.0fs so far, %d rows read)", self.node,
                                self.qname_in, now - started, self.rows_read)
                continue
            try:
                conn = ch.Connection(sock, "the feed task")
                hello = conn.recv(timeout=HELLO_TIMEOUT, what="the HELLO of a new feed task").control()
            except Exception as exc:  # noqa: BLE001 - a bad peer must not stop the feed
                logger.warning("%s: dropped a feed connection: %s", self.node, exc)
                sock.close()
                continue
            conn.peer = f"the feed task of partition {hello.get('partition')}"
            reason = self._refusal(hello)
            if reason:
                self._reply(conn, ch.REJECT, {"reason": reason, "terminated": self._terminated})
                conn.close()
                if not self._terminated:
                    logger.error("%s: refused a feed task: %s", self.node, reason)
                continue
            if not self._reply(conn, ch.WELCOME, {"pid": os.getpid(), "node": self.node}):
                conn.close()
                continue
            self._conn, self._hello, self._conn_epochs = conn, hello, 0
            if hello.get("mode") == "inference":
                self._inference_seen = True
                self._current = _Outstanding(conn, int(hello.get("partition", -1)))
                self._outstanding.append(self._current)
            logger.debug("%s: feeding partition %s of %r", self.node, hello.get("partition"), self.qname_in)
            return

    def _end_feed(self) -> None:
        """No more data will come: later feed tasks find the 'ended' marker and do not connect."""
        if self._done:
            return
        self._done = True
        try:
            self.feed_dir.mark_ended(self.qname_in)
        except OSError:
            pass
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        logger.info("%s: data feed %r ended after %d rows", self.node, self.qname_in, self.rows_read)

    def _refusal(self, hello: dict) -> str | None:
        if hello.get("version") != ch.PROTOCOL_VERSION:
            return f"protocol version {hello.get('version')} (this DataFeed speaks {ch.PROTOCOL_VERSION})"
        if hello.get("qname") != self.qname_in:
            return f"feed for input {hello.get('qname')!r} reached the DataFeed of {self.qname_in!r}"
        if self._terminated:
            return "terminated"
        mode = hello.get("mode")
        if mode == "inference" and self.train_mode:
            return (f"cluster.inference() is feeding {self.node}, but its DataFeed({self.qname_in!r}) was created "
                    f"with train_mode=True: use train_mode=False to send results back")
        return None

    def _reply(self, conn: ch.Connection, mtype: int, obj: dict) -> bool:
        try:
            conn.send_control(mtype, obj, timeout=HELLO_TIMEOUT, what="the feed task to read our reply")
            return True
        except Exception as exc:  # noqa: BLE001
            logger.warning("%s: a feed task went away during its greeting: %s", self.node, exc)
            return False

    def _say_stop(self, conn: ch.Connection, reason: str) -> None:
        try:
            conn.send_control(ch.TERMINATE, {"reason": reason}, timeout=5.0, what="the feed task to read TERMINATE")
            conn.shutdown_write()
            conn.drain_until_eof(TERMINATE_DRAIN_SECS)
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        conn.close()

    def _reject_backlog(self, reason: str) -> None:
        if self._listener is None:
            return
        while True:
            sock = self._listener.accept(timeout=0)
            if sock is None:
                return
            try:
                conn = ch.Connection(sock, "a feed task")
                conn.recv(timeout=1.0, what="HELLO")
                conn.send_control(ch.REJECT, {"reason": reason, "terminated": True}, timeout=1.0, what="REJECT")
            except Exception:  # noqa: BLE001
                pass
            sock.close()

    def _fail(self, conn: ch.Connection, message: str) -> None:
        try:
            conn.send_control(ch.ERROR, {"error": f"{self.node}: {message}\n{traceback.format_exc()}"},
                              timeout=5.0, what="the feed task to read ERROR")
        except Exception:  # noqa: BLE001
            pass
        raise FeedError(f"{self.node}: {message}")

    # ------------------------------------------------------------------------------------
    # internals: columns
    # ------------------------------------------------------------------------------------
    def _column(self, pieces: list[pa.RecordBatch], key: str | int) -> np.ndarray:
        arrays = []
        for piece in pieces:
            schema = piece.schema
            if isinstance(key, int):
                idx = key
            else:
                idx = schema.get_field_index(key)
                if idx < 0:
                    raise FeedError(f"{self.node}: column {key!r} is not in the fed data (columns: {schema.names})")
            arrays.append(codec.column_to_numpy(piece.column(idx), schema.field(idx)))
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    def _mapped(self, pieces: list[pa.RecordBatch]) -> dict[str, np.ndarray]:
        assert self.input_tensors is not None
        if not pieces:
            return {t: np.empty((0,)) for t in self.input_tensors}
        positional = codec.row_kind(pieces[0].schema) in ("tuple", "list")
        out = {}
        for i, (col, tensor) in enumerate(zip(self.input_columns, self.input_tensors, strict=False)):
            out[tensor] = self._column(pieces, i if positional else col)
        return out

    def _structure(self, pieces: list[pa.RecordBatch]) -> Any:
        if self.input_tensors is not None:
            return self._mapped(pieces)
        schema = pieces[0].schema
        kind = codec.row_kind(schema)
        if kind in ("ndarray", "scalar", "object"):
            return self._column(pieces, 0)
        if kind in ("tuple", "list"):
            return tuple(self._column(pieces, i) for i in range(len(schema)))
        return {name: self._column(pieces, i) for i, name in enumerate(schema.names)}

    def _infer_signature(self, tf: Any) -> Any:
        seen: list[Any] = []
        try:
            while True:
                ev = self._next_event()
                seen.append(ev)
                if isinstance(ev, pa.RecordBatch) or ev is FEED_END:
                    break
        finally:
            self._events.extendleft(reversed(seen))
        if not isinstance(seen[-1], pa.RecordBatch):
            raise FeedError(f"{self.node}: the feed {self.qname_in!r} ended before any data arrived; pass "
                            f"dataset(..., output_signature=...) to build a dataset anyway")
        sample = self._structure([seen[-1].slice(0, 1)])

        def spec(a: np.ndarray) -> Any:
            dtype = tf.string if a.dtype == object or a.dtype.kind in "USO" else tf.as_dtype(a.dtype)
            return tf.TensorSpec(shape=(None,) + a.shape[1:], dtype=dtype)

        return tf.nest.map_structure(spec, sample)


def _nbytes(a: np.ndarray) -> int:
    if a.dtype == object:  # strings/bytes: count the payloads of a few
        sample = a.reshape(-1)[:16]
        return int(sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in sample) * a.size / max(1, sample.size))
    return int(a.nbytes)


def pickle_results(results: Any) -> bytes:
    import pickle

    return pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL)
