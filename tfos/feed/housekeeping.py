"""The feed's tasks that feed nothing: :func:`end_feed_task` (mark the feed ended on every local
node) and :func:`clean_up_task` (after a failed feed: remove what its killed tasks left, and say
which node each fed)."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tfos.feed import channel as ch
from tfos.feed.claims import CLAIM_PREFIX, live_claims, read_claim, reap_claims
from tfos.feed.registry import find_local_nodes, node_name
from tfos.feed.spill import reap_spills

logger = logging.getLogger("tfos.feed")


def end_feed_task(cluster_id: str, qnames: list[str] | None, _rows: Iterable[Any]) -> Iterator[str]:
    """Mark the feed ended for every local node (all inputs, or ``qnames``); yields the node names.

    Also removes what killed feed tasks left on this executor (claims, spill files)."""
    for node in find_local_nodes(cluster_id):
        fdir = ch.FeedDir(node["feed_dir"])
        if not os.path.isdir(node["feed_dir"]):
            continue
        for q in qnames or [None]:
            fdir.mark_ended(q)
        _quietly(reap_claims, node["feed_dir"])
        yield node_name(node)
    _quietly(reap_spills)


CLEANUP_WAIT = 10.0  # seconds the killed tasks of a failed feed get to die (Spark kills in ~2 s)


def clean_up_task(cluster_id: str, feed_id: str, _rows: Iterable[Any], wait: float = CLEANUP_WAIT) -> Iterator[str]:
    """After a failed feed: wait (up to ``wait`` s) for that feed's tasks on this executor to die,
    then remove the claims and spill files of dead feed tasks. Yields one JSON line: the feed's
    claims found here (``shard``, ``node``: which node each killed task fed) and the removed paths."""
    name = f"{CLAIM_PREFIX}{feed_id or 'feed'}"
    claims: list[dict] = []
    removed: list[str] = []
    deadline = time.monotonic() + wait
    for node in find_local_nodes(cluster_id):
        feed_dir = node["feed_dir"]
        while time.monotonic() < deadline and any(
                r.get("pid") != os.getpid() for r in live_claims(feed_dir, name)):
            time.sleep(0.1)
        record = read_claim(os.path.join(feed_dir, name))
        if record is not None:
            claims.append({"shard": record.get("shard"), "node": record.get("node", node_name(node))})
        removed.extend(_quietly(reap_claims, feed_dir) or [])
    removed.extend(_quietly(reap_spills) or [])
    yield json.dumps({"host": socket.gethostname(), "claims": claims, "removed": removed})


def _quietly(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; a clean-up that fails is logged, never raised."""
    try:
        return fn(*args)
    except OSError as exc:
        logger.warning("feed clean-up %s%s failed: %s", fn.__name__, args, exc)
        return None
