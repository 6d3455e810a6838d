"""The arithmetic of rotation routing, for a feed hub that learns its input as it arrives.

Row ``j`` of partition ``p`` goes to shard ``(offset(p) + j) mod n`` (``offset(p) = p mod n``,
:class:`~tfos.feed.plans.ShardPlan`). A hub receives its own shard's rows of every partition,
and with each partition's end the partition's row count ``m``; from the counts of all
partitions it knows every shard's size, and so the rows every worker feeds per epoch
(:func:`~tfos.feed.sharding.agreed_rows`), with no exchange between the hubs.

Before every partition has ended, :func:`epoch_allowance` says how many rows the hub may
already hand its node in the first epoch without ever exceeding what the others will have:
a partition gives every shard ``m // n`` or ``m // n + 1`` rows, so a shard that received
``r`` rows of an unfinished partition knows the smallest shard gets at least ``r - 1`` of it.
The hub holds back at most one row per partition still being read.
"""

from __future__ import annotations

from collections.abc import Mapping

from tfos.feed.sharding import agreed_rows


def rows_for_shard(m: int, offset: int, k: int, n: int) -> int:
    """How many of a partition's ``m`` rows, the first going to shard ``offset``, go to shard ``k`` of ``n``."""
    start = (k - offset) % n
    return 0 if start >= m else (m - start + n - 1) // n


def shard_sizes(ended: Mapping[int, int], n: int) -> list[int]:
    """Every shard's rows, given every partition's row count (``{partition: m}``)."""
    return [sum(rows_for_shard(m, p % n, k, n) for p, m in ended.items()) for k in range(n)]


def epoch_allowance(received: Mapping[int, int], ended: Mapping[int, int], num_partitions: int | None, n: int,
                    remainder: str) -> tuple[int | None, int]:
    """``(exact, allowed)``: the rows per worker per epoch once every partition ended (else None), and
    how many rows of the first epoch a hub may feed now.

    ``received`` is this hub's rows so far per partition, ``ended`` the row counts of the ended
    partitions, ``num_partitions`` None while not known yet (a DataFrame's, until its job ends). With ``remainder="drop"`` every worker feeds the smallest shard's rows, so the hub
    stays within a lower bound of that; with ``"wrap"`` the largest's, which is at least this
    hub's own, as soon as every shard surely has a row (an empty shard makes the epoch empty).
    """
    if num_partitions is not None and len(ended) >= num_partitions:
        exact = agreed_rows(remainder, shard_sizes(ended, n))
        return exact, exact
    smallest = sum(m // n for m in ended.values()) + sum(max(r - 1, 0) for p, r in received.items()
                                                         if p not in ended)
    if remainder == "wrap" and smallest >= 1:
        return None, sum(received.values())
    return None, smallest
