"""Inference tasks: feed one partition to the local TF node and yield its results, one per input
row, in input order (:func:`infer_rows` for an RDD, :func:`infer_arrow` /
:func:`infer_arrow_pickled` for a DataFrame)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from tfos.feed import arrow_codec as codec
from tfos.feed import channel as ch
from tfos.feed.chunking import ChunkSizer, encoded_chunks
from tfos.feed.errors import FeedError, FeedTerminated, PeerGone
from tfos.feed.plans import InferencePlan
from tfos.feed.registry import pick_local_node
from tfos.feed.targets import NodeTarget, open_feed


class _InferenceSession:
    """One partition's connection: sends chunks, collects results in order."""

    def __init__(self, plan: InferencePlan, partition: int):
        self.plan, self.partition = plan, partition
        self.target = NodeTarget(pick_local_node(plan.cluster_id, partition))
        self.what = f"partition {partition} of input {plan.qname!r}"
        try:
            self.conn = open_feed(self.target, plan.qname, mode="inference", partition=partition,
                                  feed_timeout=plan.feed_timeout)
        except FeedTerminated as exc:
            raise FeedError(f"cannot run inference on {self.what}: {exc} (terminate() ends inference "
                            f"before every row has its output)") from exc
        self.sent = 0
        self.received = 0

    def fail(self, exc: BaseException) -> BaseException:
        err = self.target.explain(exc, self.plan.qname, self.what, self.conn)
        if isinstance(err, FeedTerminated):
            return FeedError(f"inference of {self.what} stopped after {self.received} of {self.sent} outputs: {err}")
        return err

    def send(self, payload: Any, rows: int) -> None:
        self.conn.send(ch.DATA, payload, timeout=self.plan.feed_timeout,
                       what=f"{self.target.name} to read more of {self.what}")
        self.sent += rows

    def _results(self, msg: ch.Message) -> list:
        if msg.type in ch.INTERRUPTS:
            raise ch.Interrupted(msg, self.target.name)
        if msg.type != ch.RESULTS:
            raise FeedError(f"unexpected {msg.name} message from {self.target.name} during {self.what}")
        import pickle

        values = codec.split_results(pickle.loads(msg.payload))
        self.received += len(values)
        if self.received > self.sent:
            raise FeedError(f"{self.target.name} returned {self.received} results for the {self.sent} rows of "
                            f"{self.what}: batch_results() must get exactly one result per row")
        return values

    def ready(self) -> list:
        out: list = []
        while (msg := self.conn.poll_message()) is not None:
            out.extend(self._results(msg))
        return out

    def finish(self) -> Iterator[list]:
        self.conn.send_control(ch.END_PARTITION, {"rows": self.sent}, timeout=self.plan.feed_timeout,
                               what=f"{self.target.name} to read the end of {self.what}")
        while self.received < self.sent:
            msg = self.conn.recv(timeout=self.plan.feed_timeout,
                                 what=f"{self.target.name} to return the results of {self.what} ({self.received} of "
                                      f"{self.sent} so far; is main_fun calling batch_results()?)")
            yield self._results(msg)


def infer_rows(plan: InferencePlan, partition: int, rows: Iterable[Any]) -> Iterator[Any]:
    """``mapPartitionsWithIndex`` function: one output per input row, in order."""
    session = _InferenceSession(plan, partition)
    try:
        encoder = codec.RowEncoder(partition)
        for batch in encoded_chunks(rows, ChunkSizer(plan.chunk_rows, plan.chunk_bytes), encoder.encode):
            session.send(codec.to_ipc(batch), batch.num_rows)
            yield from session.ready()
        for values in session.finish():
            yield from values
    except (PeerGone, ch.Interrupted, FeedTerminated) as exc:
        raise session.fail(exc) from exc
    finally:
        session.conn.close()


def _infer_batches(plan: InferencePlan, batches: Iterable[pa.RecordBatch],
                   pack: Callable[[list], pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Send DataFrame batches through the local node in chunks; yield ``pack(outputs)`` in order."""
    from pyspark import TaskContext

    session = _InferenceSession(plan, TaskContext.get().partitionId())
    try:
        for batch in batches:
            for start in range(0, batch.num_rows, plan.chunk_rows):
                piece = batch.slice(start, plan.chunk_rows)
                session.send(codec.to_ipc(piece), piece.num_rows)
            values = session.ready()
            if values:
                yield pack(values)
        for values in session.finish():
            if values:
                yield pack(values)
    except (PeerGone, ch.Interrupted, FeedTerminated) as exc:
        raise session.fail(exc) from exc
    finally:
        session.conn.close()


def infer_arrow(plan: InferencePlan, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` function: DataFrame batches in, output batches (``plan.output_schema``) out."""
    schema = pa.ipc.read_schema(pa.py_buffer(plan.output_schema))
    return _infer_batches(plan, batches, lambda values: codec.results_to_batch(values, schema))


def infer_arrow_pickled(plan: InferencePlan, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Like :func:`infer_arrow` without an output schema: each output row pickled (``out binary``)."""
    import pickle

    def pack(values: list) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays([pa.array([pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)
                                                     for v in values], pa.binary())], names=["out"])

    return _infer_batches(plan, batches, pack)
