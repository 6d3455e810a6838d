"""Inference tasks gather and encode their rows chunk by chunk with Python's garbage collector
paused (``tfos.feed.chunking.encoded_chunks``): what a user would notice of it, no Spark."""

from __future__ import annotations

import gc

import pytest

from tfos.feed import arrow_codec as codec
from tfos.feed.chunking import ChunkSizer, encoded_chunks, gc_paused
from tfos.feed.errors import MalformedRowError


def _decode(batches) -> list:
    rows: list = []
    for batch in batches:
        rows.extend(codec.rows_from_batch(codec.from_ipc(codec.to_ipc(batch))[0]))
    return rows


def _chunks(rows, partition: int = 0, chunk_rows: int = 64):
    return encoded_chunks(rows, ChunkSizer(chunk_rows, 1 << 20), codec.RowEncoder(partition).encode)


def test_rows_round_trip_exactly_in_order_across_chunks():
    rows = [([(i * 7 + j) % 256 for j in range(784)], i % 10) for i in range(300)]  # MNIST-like: bytes path
    rows += [([i * 1000 + j for j in range(5)], i) for i in range(300, 400)]  # ints beyond a byte: widened
    rows += [([i + 0.5, -1.25, 1e300], i) for i in range(400, 450)]  # floats: the column widens
    batches = list(_chunks(rows))
    assert sum(b.num_rows for b in batches) == len(rows) and len(batches) > 3
    back = _decode(batches)
    assert [(list(p), y) for p, y in back] == rows
    assert all(type(r) is tuple and type(r[0]) is list and type(r[1]) is int for r in back)
    assert all(type(v) is int for v in back[0][0]) and all(type(v) is float for v in back[-1][0])


def test_ragged_lists_in_a_later_chunk_fall_back_and_round_trip():
    rows = [([1, 2, 3], 0)] * 100 + [([1, 2], 1), ([4, 5, 6, 7], 2), ([], 3)] + [([9, 9, 9], 4)] * 70
    assert [(list(p), y) for p, y in _decode(_chunks(rows))] == rows


@pytest.mark.parametrize("bad,offset,match", [
    (([1, "x", 3], 5), 150, r"partition 7, row offset 150: field '_0'"),
    (([1, 2, 3],), 199, r"partition 7, row offset 199: expected a tuple of 2 fields"),
])
def test_a_malformed_row_in_a_later_chunk_is_named_by_partition_and_offset(bad, offset, match):
    rows = [([1, 2, 3], i) for i in range(offset)] + [bad] + [([1, 2, 3], 0)] * 10
    with pytest.raises(MalformedRowError, match=match):
        list(_chunks(rows, partition=7))
    assert gc.isenabled()


def test_the_collector_is_paused_only_while_a_chunk_is_gathered_and_encoded():
    seen: list[bool] = []

    def source():
        for i in range(200):
            seen.append(gc.isenabled())
            yield ([i % 256] * 8, i)

    for _ in _chunks(source(), chunk_rows=50):
        assert gc.isenabled()  # the caller's work on each batch runs with the collector on
    assert seen == [False] * 200 and gc.isenabled()


def test_the_collector_comes_back_when_the_caller_stops_early_or_the_source_fails():
    it = _chunks((([1, 2], i) for i in range(1000)), chunk_rows=10)
    next(it)
    it.close()
    assert gc.isenabled()

    def failing():
        yield ([1, 2], 0)
        raise RuntimeError("the source failed")

    with pytest.raises(RuntimeError, match="the source failed"):
        list(_chunks(failing()))
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_user_stays_off():
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
        list(_chunks(([1, 2], i) for i in range(100)))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_first_rows_of_every_shard_leave_with_the_first_chunk_and_chunks_grow_from_there():
    # what makes a node's first batch come within a fraction of a second of train(): the feed task
    # does not hold a shard's rows back until a whole 4,096-row chunk of it has been read
    from tfos.feed.plans import ShardPlan
    from tfos.feed.sharding import split_by_shard

    rows = [([i % 256] * 784, i % 10) for i in range(20_000)]
    batches = list(encoded_chunks(rows, ChunkSizer(4096, 4 << 20), codec.RowEncoder(0).encode))
    assert [b.num_rows for b in batches[:4]] == [64, 256, 1024, 4096]  # 4x per chunk up to chunk_rows
    emitted, consumed = [], 0

    def located():
        nonlocal consumed
        for b in batches:
            yield 0, consumed, b
            consumed += b.num_rows

    first_rows = {}
    for shard, n, payload in split_by_shard(ShardPlan(0, 2, 4096, 4 << 20), located()):
        emitted.append((shard, n, consumed))
        first_rows.setdefault(shard, [y for _, y in _decode(codec.from_ipc(payload))])
    # each shard's first 32 rows leave once the first 64 rows were read
    assert emitted[:2] == [(0, 32, 0), (1, 32, 0)]
    sizes = [n for shard, n, _ in emitted if shard == 0]
    assert sizes[:4] == [32, 128, 512, 2048] and sum(n for _, n, _ in emitted) == len(rows)
    assert all(n <= 4096 for n in sizes)
    assert first_rows == {k: [i % 10 for i in range(k, 64, 2)] for k in (0, 1)}  # rotation: row j to shard j mod 2
