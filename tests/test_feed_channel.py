"""The feed below Spark: codec, channel, feeder and DataFeed across real processes and sockets."""

from __future__ import annotations

import datetime
import decimal
import os
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from tests.test_feed_consumers import ConsumerPool
from tfos.feed import arrow_codec as codec
from tfos.feed import channel as ch
from tfos.feed import feeder
from tfos.feed.errors import FeedError, FeedTimeout, MalformedRowError
from tfos.feed.registry import find_local_nodes, pick_local_node, register_local_node


class Opaque:
    """Not representable in Arrow: travels pickled."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Opaque) and other.value == self.value


@pytest.fixture(scope="module")
def consumers():
    pool = ConsumerPool(2)
    yield pool
    pool.close()


@pytest.fixture
def pool(consumers):
    consumers.reset()
    yield consumers
    consumers.reset()


@pytest.fixture
def feed_dir(tmp_path):
    path = tmp_path / "feed"
    path.mkdir(mode=0o700)
    return str(path)


def target(feed_dir: str, index: int = 0) -> feeder.NodeTarget:
    return feeder.NodeTarget({"job_name": "worker", "task_index": index, "feed_dir": feed_dir, "executor_id": index})


def feed_rows(feed_dir: str, rows: list, *, epochs: int = 1, chunk: int = 50, timeout: float = 30, qname="input",
              index: int = 0) -> dict:
    """Feed ``rows`` to the consumer in ``feed_dir`` through the real shard-feeding code (no Spark)."""
    spill = feeder.SpillFile(feed_dir, ".spill")  # next to the socket: removed with the test's tmp_path
    encoder = codec.RowEncoder(0)
    for start in range(0, len(rows), chunk):
        batch = encoder.encode(rows[start:start + chunk], start)
        spill.append(codec.to_ipc(batch).to_pybytes(), batch.num_rows)
    spill.finish()
    plan = feeder.TrainPlan(cluster_id="t", qnames=[qname], num_epochs=epochs, feed_timeout=timeout)
    try:
        return feeder._feed_input(plan, target(feed_dir, index), 0, 0, spill, spill.rows, None, threading.Event())
    finally:
        spill.close()


def assert_same_row(expected, got):
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == expected.dtype and np.array_equal(got, expected)
    elif isinstance(expected, (tuple, list)):
        assert len(expected) == len(got)
        for e, g in zip(expected, got, strict=True):
            assert_same_row(e, g)
    elif isinstance(expected, dict):
        assert set(expected) == set(got)
        for k in expected:
            assert_same_row(expected[k], got[k])
    else:
        assert expected == got, (expected, got)


# ---------------------------------------------------------------------------------------------
# codec (in process)
# ---------------------------------------------------------------------------------------------
def test_codec_rejects_a_misfit_row_naming_partition_and_offset():
    enc = codec.RowEncoder(partition=4)
    enc.encode([(1, "a", np.zeros(3)), (2, "b", np.zeros(3))], first_offset=0)
    with pytest.raises(MalformedRowError, match=r"partition 4, row offset 12: field '_1': expected string.*int 7"):
        enc.encode([(3, "c", np.zeros(3)), (4, 7, np.zeros(3))], first_offset=10, stride=2)
    with pytest.raises(MalformedRowError, match=r"partition 4, row offset 10: expected a tuple of 3 fields"):
        enc.encode([(3, "c")], first_offset=10)
    with pytest.raises(MalformedRowError, match=r"row offset 11: field '_2': expected a numpy array of shape \(3,\)"):
        enc.encode([(3, "c", np.zeros(3)), (3, "c", np.zeros(4))], first_offset=10)
    with pytest.raises(MalformedRowError, match=r"row offset 3: expected a dict with keys \['x'\]"):
        codec.RowEncoder(0).encode([{"x": 1}, {"x": 2}, {"x": 3}, {"y": 4}])


def test_codec_widens_ints_to_floats_and_nulls_to_types():
    enc = codec.RowEncoder(0)
    assert enc.encode([(None, 1)]).schema.types == [pa.null(), pa.int64()]
    assert enc.encode([(2, 1.5)]).schema.types == [pa.int64(), pa.float64()]


def test_codec_packs_lists_of_numbers_densely_and_gives_them_back_unchanged():
    # MNIST-like rows as parsed from CSV: a list of 784 small ints and a label.
    rng = np.random.default_rng(1)
    rows = [(rng.integers(0, 256, 784).tolist(), i % 10) for i in range(300)]
    batch = codec.RowEncoder(0).encode(rows)
    assert batch.nbytes < 300 * 800  # one byte per pixel on the wire, not eight
    back = codec.rows_from_batch(batch)
    assert back == rows and type(back[0][0]) is list and type(back[0][0][0]) is int
    pixels = codec.column_to_numpy(batch.column(0), batch.schema.field(0))
    assert pixels.dtype == np.int64 and pixels.shape == (300, 784)
    assert np.array_equal(pixels, np.array([r[0] for r in rows]))
    # Later chunks may be ragged, hold floats or nulls: they fall back to plain lists, values intact.
    enc = codec.RowEncoder(2)
    chunks = [[([1, 2, 3],), ([4, 5, -6],)], [([1, 2],), ([3, 4, 5],)], [([1.5, 2.0],), ([None, 1.0],)],
              [([True, False],), ([1, 0],)], [([7, 8],), ([9, 10],)]]
    for chunk in chunks:
        assert codec.rows_from_batch(enc.encode(chunk)) == [tuple(r) for r in chunk]
    with pytest.raises(MalformedRowError, match=r"partition 2, row offset 41: field '_0': expected list"):
        enc.encode([([1],), (["x"],)], first_offset=40)


@pytest.mark.parametrize("chunk", [
    [[0, 255], [256, 1]],           # one value past a byte: stored wider, value intact
    [[0, 255], [-1, 1]],            # a negative value
    [[1, 2], [3, 4.5]],             # a float late in the chunk: floats for the whole chunk
    [[1, True], [0, False]],        # bools among ints are ints (as numpy reads them)
    [[1, 2], [3, np.int64(4)]],     # numpy ints among Python ints
    [[2**40, 1], [0, 0]],           # a large int
])
def test_codec_dense_lists_keep_every_value_whatever_the_fast_path_sees(chunk):
    rows = [(v, i) for i, v in enumerate(chunk)]
    batch = codec.RowEncoder(0).encode(rows)
    back = codec.rows_from_batch(batch)
    assert back == rows
    assert [type(x) for x in back[1][0]] == [type(x) for x in np.array(chunk).tolist()[1]]
    assert np.array_equal(codec.column_to_numpy(batch.column(0), batch.schema.field(0)), np.array(chunk))
    assert codec.column_to_numpy(batch.column(0), batch.schema.field(0)).dtype == np.array(chunk).dtype


@pytest.mark.parametrize("held_chunks", [0, 1, 3], ids=["on-disk", "first-chunk-held", "all-held"])
def test_spill_epochs_drop_and_wrap_move_through_the_shard(tmp_path, held_chunks):
    enc = codec.RowEncoder(0)
    payloads = [codec.to_ipc(enc.encode(list(range(s, min(s + 4, 10))))).to_pybytes() for s in range(0, 10, 4)]
    spill = feeder.SpillFile(str(tmp_path), "s", memory_bytes=sum(len(p) for p in payloads[:held_chunks]))
    for payload in payloads:
        spill.append(payload, len(codec.rows_from_batch(codec.from_ipc(payload)[0])))
    assert spill.held_bytes + spill.disk_bytes == sum(map(len, payloads))
    # only what does not fit in memory is written, and the file is made only then
    assert os.path.exists(spill.path) == (held_chunks < 3)
    assert spill.disk_bytes == sum(len(p) for p in payloads[held_chunks:])

    def epoch(e, target):
        out = []
        for payload, n in spill.epoch(e, target):
            batch_rows = [r for b in codec.from_ipc(payload) for r in codec.rows_from_batch(b)]
            assert len(batch_rows) == n
            out.extend(batch_rows)
        return out

    assert epoch(0, 10) == list(range(10))
    dropped = [set(range(10)) - set(epoch(e, 9)) for e in range(10)]
    assert all(len(d) == 1 for d in dropped) and set().union(*dropped) == set(range(10))
    assert [len(epoch(e, 7)) for e in range(3)] == [7, 7, 7]
    wrapped = epoch(3, 12)
    assert len(wrapped) == 12 and wrapped[:10] == list(range(10)) and wrapped[10:] == [6, 7]
    assert len(epoch(1, 25)) == 25
    spill.close()


def test_a_released_spill_chunk_frees_its_memory_and_cannot_be_fed_again(tmp_path):
    spill = feeder.SpillFile(str(tmp_path), "s", memory_bytes=100)
    spill.append(b"a" * 60, 1)
    spill.append(b"b" * 60, 1)  # does not fit beside the first: to disk
    assert (spill.held_bytes, spill.disk_bytes) == (60, 60)
    assert spill.read(0) == b"a" * 60 and spill.read(1) == b"b" * 60
    spill.release(0)
    assert spill.held_bytes == 0
    with pytest.raises(ValueError, match="chunk 0 .* was released"):
        spill.read(0)
    spill.append(b"c" * 60, 1)  # the freed memory takes the next chunk
    assert (spill.held_bytes, spill.disk_bytes) == (60, 60)
    assert spill.read(2) == b"c" * 60
    spill.close()


def test_registry_sorts_nodes_and_spreads_partitions(tmp_path, monkeypatch):
    monkeypatch.setenv("TFOS_FEED_REGISTRY_DIR", str(tmp_path / "reg"))
    dirs = {}
    for job, index in (("worker", 1), ("chief", 0), ("worker", 0)):
        dirs[(job, index)] = tmp_path / f"{job}{index}"
        dirs[(job, index)].mkdir()
        register_local_node("c-1", index, job, index, str(dirs[(job, index)]))
    assert [(n["job_name"], n["task_index"]) for n in find_local_nodes("c-1")] == \
        [("chief", 0), ("worker", 0), ("worker", 1)]
    assert [pick_local_node("c-1", p)["job_name"] for p in range(4)] == ["chief", "worker", "worker", "chief"]
    with pytest.raises(FeedError, match="no TF chief/worker node of cluster other"):
        pick_local_node("other", 0)
    with pytest.raises(ValueError):
        register_local_node("../x", 0, "worker", 0, str(tmp_path))


# ---------------------------------------------------------------------------------------------
# across processes
# ---------------------------------------------------------------------------------------------
def test_round_trip_of_every_supported_value_type(pool, feed_dir):
    rows = [(i, i / 4, f"s{i}", b"b%d" % i, i % 2 == 0, [i, i + 1], (np.arange(6, dtype=np.float32) + i).reshape(2, 3),
             np.int16(i), None if i % 3 else i, {"k": i}, Opaque(i), decimal.Decimal(f"{i}.5"),
             datetime.datetime(2020, 1, 1, 0, 0, i % 60), np.arange(i % 4, dtype=np.int64), 2 ** 70 + i,
             np.array([i % 2 == 0, True]), np.full(3, i, dtype=np.uint8), np.array([1j * i]))
            for i in range(130)]
    pool.submit(0, "collect", feed_dir=feed_dir, node="worker:0", batch_size=17)
    assert feed_rows(feed_dir, rows, chunk=40)["state"] == "done"
    got = pool.result(0)
    assert len(got) == len(rows)
    for expected, row in zip(rows, got, strict=True):
        assert isinstance(row, tuple)
        expected = list(expected)
        expected[5] = [expected[5][0], expected[5][1]]
        expected[7] = int(expected[7])  # numpy scalars come back as Python numbers
        expected[13] = expected[13].tolist()  # ragged 1-d arrays travel as Arrow lists
        assert_same_row(tuple(expected), row)


@pytest.mark.parametrize("kind", ["dict", "ndarray", "scalar", "object"])
def test_row_kinds_come_back_as_they_were_fed(pool, feed_dir, kind):
    make = {"dict": lambda i: {"x": i, "y": [float(i)] * 3},
            "ndarray": lambda i: np.full((2, 2), i, dtype=np.float64),
            "scalar": lambda i: f"row-{i}",
            "object": lambda i: Opaque(i)}[kind]
    rows = [make(i) for i in range(25)]
    pool.submit(0, "collect", feed_dir=feed_dir, node="worker:0", batch_size=4)
    feed_rows(feed_dir, rows, chunk=10)
    got = pool.result(0)
    assert len(got) == 25
    for e, g in zip(rows, got, strict=True):
        assert_same_row(e, g)


def test_input_mapping_gives_numpy_columns(pool, feed_dir):
    rows = [(np.full(4, i, dtype=np.float32), i % 3) for i in range(20)]
    pool.submit(0, "collect", feed_dir=feed_dir, node="worker:0", batch_size=8,
                input_mapping={"a_image": "x", "b_label": "y"})
    feed_rows(feed_dir, rows, chunk=6)
    batches = pool.result(0)
    assert [len(b["y"]) for b in batches] == [8, 8, 4]
    assert batches[0]["x"].shape == (8, 4) and batches[0]["x"].dtype == np.float32
    assert batches[2]["y"].tolist() == [16 % 3, 17 % 3, 18 % 3, 19 % 3]


def test_a_stalled_consumer_back_pressures_the_feeder_with_a_clear_timeout(pool, feed_dir, tmp_path):
    # ~40 MB offered, the consumer stops after two small batches: the feeder must block (bounded
    # buffering) and give up after feed_timeout naming what it waited for.
    flag = str(tmp_path / "read")
    pool.submit(0, "hang", feed_dir=feed_dir, node="worker:0", batches=2, batch_size=4, flag=flag)
    sent = []

    class CountingSpill(feeder.SpillFile):
        def epoch(self, epoch, target):
            for payload, n in super().epoch(epoch, target):
                sent.append(len(payload))
                yield payload, n

    spill = CountingSpill(str(tmp_path), "big")
    enc = codec.RowEncoder(0)
    chunk = [np.ones(1 << 17, dtype=np.float32) for _ in range(2)]  # 1 MB per chunk
    payload = codec.to_ipc(enc.encode(chunk)).to_pybytes()
    for _ in range(40):
        spill.append(payload, 2)
    spill.finish()
    plan = feeder.TrainPlan(cluster_id="t", qnames=["input"], num_epochs=1, feed_timeout=3)
    started = time.monotonic()
    with pytest.raises(FeedTimeout, match=r"timed out after 3s waiting for worker:0 to read more of shard 0"):
        feeder._feed_input(plan, target(feed_dir), 0, 0, spill, spill.rows, None, threading.Event())
    assert time.monotonic() - started < 15
    assert os.path.exists(flag)
    assert sum(sent) < 16 << 20, f"{sum(sent)} bytes went out to a consumer that stopped reading"


def test_killed_consumer_fails_the_feeder_within_seconds_naming_the_node(pool, feed_dir, tmp_path):
    flag = str(tmp_path / "read")
    pool.submit(1, "hang", feed_dir=feed_dir, node="worker:1", batches=2, batch_size=8, flag=flag)
    rows = [(i, np.zeros(100)) for i in range(20000)]
    errors = []

    def run():
        try:
            feed_rows(feed_dir, rows, chunk=200, index=1, timeout=120)
        except Exception as exc:  # noqa: BLE001
            errors.append((time.monotonic(), exc))

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed_at = time.monotonic()
    pool.kill(1)
    thread.join(30)
    assert errors, "the feeder did not notice the dead consumer"
    at, exc = errors[0]
    assert at - killed_at < 10
    assert isinstance(exc, FeedError) and "worker:1" in str(exc)


def test_failed_consumer_error_carries_its_traceback(pool, feed_dir):
    pool.submit(0, "fail", feed_dir=feed_dir, node="worker:0", batches=2, batch_size=8)
    rows = [(i, np.zeros(100)) for i in range(20000)]
    started = time.monotonic()
    with pytest.raises(FeedError) as info:
        feed_rows(feed_dir, rows, chunk=100, timeout=120)
    assert time.monotonic() - started < 30
    text = str(info.value)
    assert "worker:0" in text and "ValueError: boom in main_fun" in text and "Traceback" in text


def test_a_feed_task_that_goes_away_mid_epoch_fails_the_datafeed_naming_it(pool, feed_dir):
    # its Spark task was killed or cancelled: the epoch can never be completed, so reading on would
    # silently break exact epochs
    pool.submit(0, "collect", feed_dir=feed_dir, node="worker:0", batch_size=4)
    conn = feeder.open_feed(target(feed_dir), "input", mode="train", partition=2, feed_timeout=30,
                            extra={"epochs": 2, "rows_per_epoch": 100})
    batch = codec.RowEncoder(0).encode([(i, float(i)) for i in range(10)], 0)
    conn.send(ch.DATA, codec.to_ipc(batch), timeout=30, what="the consumer")
    conn.send_control(ch.END_EPOCH, {"epoch": 0, "rows": 10}, timeout=30, what="the consumer")
    conn.send(ch.DATA, codec.to_ipc(batch), timeout=30, what="the consumer")
    conn.close()
    with pytest.raises(AssertionError, match=r"FeedError: worker:0: the feed task of shard 2 of 'input' went away "
                                             r"in epoch 2/2 \(its Spark task failed, was killed or cancelled"):
        pool.result(0, timeout=30)


def test_terminate_ends_the_feed_quietly_and_promptly(pool, feed_dir):
    pool.submit(0, "terminate_after", feed_dir=feed_dir, node="worker:0", batches=3, batch_size=10)
    rows = [(i, np.zeros(100)) for i in range(20000)]
    result = feed_rows(feed_dir, rows, chunk=100, epochs=3)
    done = time.time()
    seen = pool.result(0)
    assert result["state"] == "terminated" and result["rows"] < len(rows)
    assert seen["rows"] == 30 and seen["should_stop"] and seen["after"] == []
    assert done - seen["terminated_at"] < 5
    # a later feed task does not even connect
    assert feed_rows(feed_dir, rows[:10])["state"] == "terminated"


def test_end_of_feed_marker_stops_a_waiting_datafeed(pool, feed_dir):
    pool.submit(0, "collect", feed_dir=feed_dir, node="worker:0")
    time.sleep(1.0)
    ch.FeedDir(feed_dir).mark_ended()
    assert pool.result(0, timeout=30) == []


def test_inference_returns_one_output_per_row_in_order(pool, feed_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFOS_FEED_REGISTRY_DIR", str(tmp_path / "reg"))
    register_local_node("inf", 0, "worker", 0, feed_dir)
    pool.submit(0, "infer", feed_dir=feed_dir, node="worker:0", batch_size=7)
    plan = feeder.InferencePlan(cluster_id="inf", qname="input", feed_timeout=30, chunk_rows=10)
    outputs = []
    for partition, size in enumerate([23, 0, 1, 40]):
        rows = [(partition * 1000 + j, "x") for j in range(size)]
        outputs.append(list(feeder.infer_rows(plan, partition, iter(rows))))
        assert outputs[-1] == [r[0] * 10 for r in rows]
    ch.FeedDir(feed_dir).mark_ended()
    assert pool.result(0) == 64


def test_inference_with_columnar_results(pool, feed_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFOS_FEED_REGISTRY_DIR", str(tmp_path / "reg"))
    register_local_node("inf2", 0, "worker", 0, feed_dir)
    pool.submit(0, "infer", feed_dir=feed_dir, node="worker:0", batch_size=16, columnar=True)
    plan = feeder.InferencePlan(cluster_id="inf2", qname="input", feed_timeout=30, chunk_rows=5)
    out = list(feeder.infer_rows(plan, 0, iter(range(37))))
    assert [int(v) for v in out] == [10 * i for i in range(37)]
    ch.FeedDir(feed_dir).mark_ended()
    assert pool.result(0) == 37


def test_train_mode_datafeed_refuses_inference_with_a_clear_error(pool, feed_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFOS_FEED_REGISTRY_DIR", str(tmp_path / "reg"))
    register_local_node("inf3", 0, "worker", 0, feed_dir)
    pool.submit(0, "collect", feed_dir=feed_dir, node="worker:0")
    plan = feeder.InferencePlan(cluster_id="inf3", qname="input", feed_timeout=30)
    with pytest.raises(FeedError, match="created with train_mode=True"):
        list(feeder.infer_rows(plan, 0, iter(range(3))))
    ch.FeedDir(feed_dir).mark_ended()
    pool.result(0)


def test_tf_dataset_yields_whole_batches_per_epoch(pool, feed_dir):
    pool.submit(0, "dataset", feed_dir=feed_dir, node="worker:0", batch_size=8, epochs=2)
    rows = [(np.full((3, 2), i, dtype=np.float32), i % 5, f"r{i}") for i in range(20)]
    feed_rows(feed_dir, rows, chunk=6, epochs=2, timeout=120)
    per_epoch = pool.result(0, timeout=180)
    expected = [[((n, 3, 2), "float32"), ((n,), "int64"), ((n,), "string")] for n in (8, 8, 4)]
    assert per_epoch == [expected, expected]


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_tf_dataset_keeps_batch_boundaries_and_row_order_across_epochs(pool, feed_dir, drop_remainder):
    # Python hands TF blocks of many batches that TF cuts again: same batches, same order.
    pool.submit(0, "dataset_values", feed_dir=feed_dir, node="worker:0", batch_size=16, epochs=2,
                drop_remainder=drop_remainder)
    rows = [(i, np.full(40, i, dtype=np.int32)) for i in range(3000)]
    feed_rows(feed_dir, rows, chunk=700, epochs=2, timeout=120)
    per_epoch = pool.result(0, timeout=180)
    full = [list(range(s, s + 16)) for s in range(0, 2992, 16)]
    expected = full if drop_remainder else full + [list(range(2992, 3000))]
    assert per_epoch == [expected, expected]


def test_feed_dir_paths_too_long_for_a_unix_socket_still_work(pool, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    os.chmod(deep, 0o700)
    assert len(str(deep / "input.sock")) > 108
    pool.submit(0, "collect", feed_dir=str(deep), node="worker:0")
    feed_rows(str(deep), [(i,) for i in range(10)])
    assert pool.result(0) == [(i,) for i in range(10)]
