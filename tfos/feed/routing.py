"""Routing keys: values that Spark's hash partitioning sends to a chosen partition.

``DataFrame.repartition(n, col)`` puts a row into partition ``pmod(murmur3(col, seed=42), n)``
(Spark's ``HashPartitioning``, the same function as SQL ``hash()``). The feed routes the chunk
of shard ``k`` with a bigint key whose partition is ``k``, so the shuffle that brings every
worker its shard is Spark's own. The keys are found here, on the driver, with Spark's 32-bit
Murmur3 of a long written out in Python (no Spark job); the feed task checks on arrival that
each chunk reached the partition of its shard.
"""

from __future__ import annotations

SPARK_HASH_SEED = 42
_MASK = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


def _mix_k1(k1: int) -> int:
    k1 = (k1 * 0xCC9E2D51) & _MASK
    k1 = _rotl(k1, 15)
    return (k1 * 0x1B873593) & _MASK


def _mix_h1(h1: int, k1: int) -> int:
    h1 ^= k1
    h1 = _rotl(h1, 13)
    return (h1 * 5 + 0xE6546B64) & _MASK


def _fmix(h1: int, length: int) -> int:
    h1 ^= length
    h1 ^= h1 >> 16
    h1 = (h1 * 0x85EBCA6B) & _MASK
    h1 ^= h1 >> 13
    h1 = (h1 * 0xC2B2AE35) & _MASK
    h1 ^= h1 >> 16
    return h1


def spark_hash_long(value: int, seed: int = SPARK_HASH_SEED) -> int:
    """Spark's ``hash()`` of a bigint: Murmur3 x86 32-bit over its two 32-bit halves, signed."""
    value &= 0xFFFFFFFFFFFFFFFF
    h1 = _mix_h1(seed & _MASK, _mix_k1(value & _MASK))
    h1 = _mix_h1(h1, _mix_k1(value >> 32))
    h1 = _fmix(h1, 8)
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


def hash_partition(value: int, num_partitions: int) -> int:
    """The partition ``repartition(num_partitions, col)`` gives a bigint ``value``."""
    return spark_hash_long(value) % num_partitions  # Python's % is already a non-negative pmod


def routing_keys(num_partitions: int) -> list[int]:
    """Key ``k`` of the result is a bigint that hash partitioning sends to partition ``k``."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    found: dict[int, int] = {}
    value = 0
    while len(found) < num_partitions:
        found.setdefault(hash_partition(value, num_partitions), value)
        value += 1
    return [found[k] for k in range(num_partitions)]
