"""How the feed turns the workers' shard sizes into rows per epoch, and what the driver logs (no Spark)."""

from __future__ import annotations

import logging

import pytest

from tfos.feed.feed_job import _plan_summary
from tfos.feed.feeder import ShardPlan, agreed_rows


@pytest.mark.parametrize("remainder,sizes,expected", [
    ("drop", [101, 101, 99], 99),
    ("wrap", [101, 101, 99], 101),
    ("drop", [5, 5], 5),
    ("wrap", [5, 5], 5),
    ("wrap", [2, 0, 1], 0),  # an empty shard has nothing to repeat: every worker gets an empty epoch
    ("drop", [0, 0, 0], 0),
])
def test_every_worker_feeds_the_smallest_shard_or_with_wrap_the_largest(remainder, sizes, expected):
    assert agreed_rows(remainder, sizes) == expected


def test_rotation_starts_each_partition_one_worker_further():
    plan = ShardPlan(qindex=0, num_shards=3)
    assert [plan.offset(p) for p in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert plan.offset(None) == 0


def test_the_plan_says_how_many_rows_each_worker_gets_and_what_is_left_out():
    agreed = {"shard_sizes": [[101, 10], [101, 10], [99, 11]], "rows_per_epoch": [99, 10]}
    plan = _plan_summary(["train", "validation"], agreed, 3, "drop")
    assert plan["summary"]["train"] == {"rows": 301, "shard_rows": [101, 101, 99], "rows_per_worker_per_epoch": 99,
                                        "remainder": "drop", "remainder_rows_per_epoch": 4}
    lines = [message for _, message in plan["log"]]
    assert lines[0] == ("input 'train': 301 rows over 3 workers -> 99 rows per worker per epoch; 4 remainder rows are "
                        "left out of each epoch (shards of 99-101 rows, remainder='drop', different rows each epoch)")
    assert lines[1].startswith("input 'validation': 31 rows over 3 workers -> 10 rows per worker per epoch; 1 "
                               "remainder rows are left out")
    wrapped = _plan_summary(["train"], {"shard_sizes": [[101], [101], [99]], "rows_per_epoch": [101]}, 3, "wrap")
    assert wrapped["summary"]["train"]["remainder_rows_per_epoch"] == 2
    assert wrapped["log"][0][1].endswith("2 rows are fed twice per epoch to even the workers out (shards of 99-101 "
                                         "rows, remainder='wrap')")


def test_an_empty_shard_is_warned_about_with_what_to_change():
    plan = _plan_summary(["val"], {"shard_sizes": [[2], [0], [1]], "rows_per_epoch": [0]}, 3, "wrap")
    levels = [level for level, _ in plan["log"]]
    assert logging.WARNING in levels
    warning = [m for level, m in plan["log"] if level == logging.WARNING][0]
    assert "a worker's shard is empty" in warning and "coalesce" in warning
