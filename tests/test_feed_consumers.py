"""TF-side stand-ins for the feed tests (no tests in this module).

:class:`ConsumerPool` keeps a few spawned processes; each runs one scenario at a time: a real
``DataFeed`` over its real Unix socket in a fresh ``feed_dir``, reading the way a ``main_fun``
would, and sends back what it saw. Scenarios that end their process (``fail``) or hang
(``hang``) are restarted by the pool.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from types import SimpleNamespace
from typing import Any

import numpy as np


def _ctx(feed_dir: str, node: str) -> SimpleNamespace:
    job, index = node.split(":")
    return SimpleNamespace(feed_dir=feed_dir, job_name=job, task_index=int(index), cluster_id="test",
                           executor_id=int(index), num_workers=0, worker_num=int(index))


def _feed(feed_dir: str, node: str, qname: str = "input", train_mode: bool = True, input_mapping: Any = None):
    from tfos.feed.datafeed import DataFeed

    return DataFeed(_ctx(feed_dir, node), train_mode, qname, "output", input_mapping)


def _first_column(batch: Any) -> np.ndarray:
    if isinstance(batch, tuple):
        return batch[0]
    if isinstance(batch, dict):
        return next(iter(batch.values()))
    return batch


# ---------------------------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------------------------
def collect(feed_dir: str, node: str, qname: str = "input", batch_size: int = 16, input_mapping: Any = None) -> list:
    """All rows until the feed ends (next_batch loop, TensorFlowOnSpark style)."""
    feed = _feed(feed_dir, node, qname, True, input_mapping)
    out: list = []
    while not feed.should_stop():
        batch = feed.next_batch(batch_size)
        if input_mapping:
            if len(next(iter(batch.values()))):
                out.append(batch)
        else:
            out.extend(batch)
    return out


def _epoch(feed: Any, batch_size: int) -> dict:
    sizes, ids = [], []
    for batch in feed.batches(batch_size):
        col = _first_column(batch)
        sizes.append(len(col))
        ids.extend(np.asarray(col).tolist())
    return {"sizes": sizes, "ids": ids}


def epochs(feed_dir: str, node: str, qnames: tuple = ("input",), batch_size: int = 8, validation_every: int = 1,
           delay: float = 0.0) -> dict:
    """Epoch by epoch with ``batches()``; the first input is 'training', the others are read every
    ``validation_every`` training epochs (Keras validation_freq), then drained to the end."""
    feeds = {q: _feed(feed_dir, node, q) for q in qnames}
    main, others = qnames[0], qnames[1:]
    result: dict[str, list] = {q: [] for q in qnames}
    done = 0
    while True:
        stats = _epoch(feeds[main], batch_size)
        if not stats["sizes"] and feeds[main].should_stop():
            break
        result[main].append(stats)
        done += 1
        time.sleep(delay)
        if done % validation_every == 0:
            for q in others:
                result[q].append(_epoch(feeds[q], batch_size))
    for q in others:
        while not feeds[q].should_stop():
            stats = _epoch(feeds[q], batch_size)
            if stats["sizes"]:
                result[q].append(stats)
    return result


def terminate_after(feed_dir: str, node: str, batches: int = 3, batch_size: int = 16) -> dict:
    """Read ``batches`` batches, then terminate()."""
    feed = _feed(feed_dir, node)
    rows = 0
    for _ in range(batches):
        rows += len(feed.next_batch(batch_size))
    feed.terminate()
    return {"rows": rows, "terminated_at": time.time(), "should_stop": feed.should_stop(),
            "after": feed.next_batch(batch_size)}


def hang(feed_dir: str, node: str, batches: int = 2, batch_size: int = 16, flag: str = "") -> None:
    """Read a little, say so in ``flag``, then stop reading (to be killed)."""
    feed = _feed(feed_dir, node)
    for _ in range(batches):
        feed.next_batch(batch_size)
    with open(flag, "w") as f:
        f.write(str(time.time()))
    time.sleep(600)


def fail(feed_dir: str, node: str, batches: int = 2, batch_size: int = 16) -> None:
    """Read a little, then die the way a failing main_fun does under tfos (exit state + traceback)."""
    from tfos.feed.registry import mark_tf_failed

    feed = _feed(feed_dir, node)
    for _ in range(batches):
        feed.next_batch(batch_size)
    try:
        raise ValueError("boom in main_fun")
    except ValueError:
        mark_tf_failed(feed_dir, traceback.format_exc())
    os._exit(1)


def infer(feed_dir: str, node: str, batch_size: int = 7, columnar: bool = False) -> int:
    """Inference loop: output = 10 x the first field, as a list (rows) or an array (columnar)."""
    feed = _feed(feed_dir, node, train_mode=False)
    rows = 0
    if columnar:
        for batch in feed.batches(batch_size):
            col = _first_column(batch)
            feed.batch_results(np.asarray(col) * 10)
            rows += len(col)
        return rows
    while not feed.should_stop():
        batch = feed.next_batch(batch_size)
        feed.batch_results([(r[0] if isinstance(r, (tuple, list)) else r) * 10 for r in batch])
        rows += len(batch)
    return rows


def dataset(feed_dir: str, node: str, batch_size: int = 8, epochs: int = 2) -> list:
    """tf.data over the feed: per epoch, the shapes and dtypes of every batch."""
    import tensorflow as tf

    feed = _feed(feed_dir, node)
    ds = feed.dataset(batch_size)
    out = []
    for _ in range(epochs):
        seen = []
        for batch in ds:
            flat = tf.nest.flatten(batch)
            seen.append([(tuple(t.shape), t.dtype.name) for t in flat])
        out.append(seen)
    return out


def dataset_values(feed_dir: str, node: str, batch_size: int = 16, epochs: int = 2,
                   drop_remainder: bool = False) -> list:
    """tf.data over the feed: per epoch, the first column's values of every batch."""
    feed = _feed(feed_dir, node)
    ds = feed.dataset(batch_size, drop_remainder=drop_remainder)
    return [[batch[0].numpy().tolist() for batch in ds] for _ in range(epochs)]


SCENARIOS = {f.__name__: f for f in (collect, epochs, terminate_after, hang, fail, infer, dataset, dataset_values)}


# ---------------------------------------------------------------------------------------------
# the pool
# ---------------------------------------------------------------------------------------------
def _serve(conn: Any) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="consumer %(process)d %(name)s: %(message)s")
    import tfos.feed.datafeed  # noqa: F401 - import once, before the first scenario

    conn.send(("ready", os.getpid()))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        name, kwargs = msg
        try:
            conn.send(("ok", SCENARIOS[name](**kwargs)))
        except BaseException:  # noqa: BLE001 - reported to the test
            conn.send(("error", traceback.format_exc()))


class ConsumerPool:
    """``n`` spawned consumer processes; ``submit`` a scenario to one, then ``result``."""

    def __init__(self, n: int):
        self._mp = mp.get_context("spawn")
        self.slots: list[tuple[Any, Any]] = [None] * n  # type: ignore[list-item]
        self.busy = [False] * n
        for i in range(n):
            self._start(i)
        for i in range(n):
            self._ready(i)

    def _start(self, i: int) -> None:
        parent, child = self._mp.Pipe()
        proc = self._mp.Process(target=_serve, args=(child,), daemon=True, name=f"feed-consumer-{i}")
        proc.start()
        self.slots[i] = (proc, parent)
        self.busy[i] = False

    def _ready(self, i: int, timeout: float = 120) -> None:
        _, conn = self.slots[i]
        if not conn.poll(timeout):
            raise TimeoutError(f"consumer {i} did not start in {timeout}s")
        conn.recv()

    def pid(self, i: int) -> int:
        return self.slots[i][0].pid

    def submit(self, i: int, scenario: str, **kwargs: Any) -> None:
        assert not self.busy[i], f"consumer {i} is busy"
        self.slots[i][1].send((scenario, kwargs))
        self.busy[i] = True

    def result(self, i: int, timeout: float = 90) -> Any:
        proc, conn = self.slots[i]
        if not conn.poll(timeout):
            raise TimeoutError(f"consumer {i} gave no result in {timeout}s")
        status, value = conn.recv()
        self.busy[i] = False
        if status == "error":
            raise AssertionError(f"consumer {i} failed:\n{value}")
        return value

    def kill(self, i: int) -> None:
        proc, _ = self.slots[i]
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)

    def reset(self) -> None:
        """Restart every consumer that is busy or dead (after a failed or killing test)."""
        restarted = []
        for i, (proc, _) in enumerate(self.slots):
            if self.busy[i] or not proc.is_alive():
                self.kill(i)
                self._start(i)
                restarted.append(i)
        for i in restarted:
            self._ready(i)

    def close(self) -> None:
        for i, (proc, conn) in enumerate(self.slots):
            try:
                if not self.busy[i]:
                    conn.send(None)
            except OSError:
                pass
            proc.join(2)
            self.kill(i)
