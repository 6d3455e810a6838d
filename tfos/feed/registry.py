"""Executor-local registry of the TF nodes a feed task can reach.

The node start task (``tfos.cluster.node``) calls :func:`register_local_node` on the executor
that runs a chief/master/worker TF process in InputMode.SPARK; feed tasks running later on the
same executor call :func:`find_local_nodes` to learn where that process listens.

Where: ``$TFOS_FEED_REGISTRY_DIR/<cluster_id>/`` when that variable is set, otherwise
``<cwd>/.tfos-feed/<cluster_id>/``. A Spark executor's working directory is private to the
executor on standalone, YARN and Kubernetes, so each executor sees only its own nodes. In
local mode (``local[N]``) every "executor" shares the driver's working directory and sees all
nodes; feed tasks then spread over them by partition index (:func:`pick_local_node`).

Entries are small JSON files written atomically (mode 0600 in a 0700 directory). A node that
ends calls :func:`retire_local_node` (or :func:`unregister_local_node`): the last entry of a
cluster takes its registry directory with it (and ``<cwd>/.tfos-feed`` when that is empty).

The TF process (or its supervisor) also leaves its exit state in its ``feed_dir`` so that a
feed task that loses the connection can say why: :func:`mark_tf_finished` after ``main_fun``
returned, :func:`mark_tf_failed` with the traceback after it raised or the process died.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time

from tfos.feed.channel import FeedDir
from tfos.feed.errors import FeedError

REGISTRY_ENV = "TFOS_FEED_REGISTRY_DIR"
TRAINER_JOBS = ("chief", "master", "worker")
_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")


def _check_name(what: str, value: str) -> str:
    if not value or not _SAFE.match(value) or value in (".", ".."):
        raise ValueError(f"{what} {value!r} may only contain letters, digits, '_', '.' and '-'")
    return value


def registry_dir(cluster_id: str) -> str:
    """This executor's registry directory for ``cluster_id`` (not created)."""
    base = os.environ.get(REGISTRY_ENV) or os.path.join(os.getcwd(), ".tfos-feed")
    return os.path.join(base, _check_name("cluster_id", cluster_id))


def node_name(node: dict) -> str:
    """``job:index`` of a registry entry, e.g. ``worker:1``."""
    return f"{node['job_name']}:{node['task_index']}"


def register_local_node(cluster_id: str, executor_id: int, job_name: str, task_index: int, feed_dir: str,
                        *, pid: int | None = None) -> str:
    """Record that the TF process of ``job_name:task_index`` takes feeds in ``feed_dir`` on this executor.

    ``pid`` (optional) is the TF process id; feed tasks waiting for the process to open its
    DataFeed then notice at once when it is gone. Returns the entry's path.
    """
    _check_name("job_name", job_name)
    if not os.path.isdir(feed_dir):
        raise FeedError(f"feed_dir {feed_dir!r} of {job_name}:{task_index} does not exist")
    directory = registry_dir(cluster_id)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    entry = {"cluster_id": cluster_id, "executor_id": int(executor_id), "job_name": job_name,
             "task_index": int(task_index), "feed_dir": os.path.abspath(feed_dir), "pid": pid}
    path = os.path.join(directory, f"{job_name}-{int(task_index)}.json")
    fd, tmp = tempfile.mkstemp(prefix=".entry-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def unregister_local_node(cluster_id: str, job_name: str, task_index: int) -> None:
    """Remove an entry (missing entries are ignored), and the registry directories it leaves empty."""
    path = os.path.join(registry_dir(cluster_id), f"{_check_name('job_name', job_name)}-{int(task_index)}.json")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    _remove_empty_registry(cluster_id)


def _remove_empty_registry(cluster_id: str) -> None:
    """Remove ``cluster_id``'s registry directory once it holds no entries, and the default base
    directory (``<cwd>/.tfos-feed``, never a ``$TFOS_FEED_REGISTRY_DIR``) once it is empty."""
    directory = registry_dir(cluster_id)
    try:
        for name in os.listdir(directory):
            if name.startswith(".entry-"):  # a temporary entry of a writer that died
                try:
                    os.unlink(os.path.join(directory, name))
                except OSError:
                    pass
        os.rmdir(directory)
    except OSError:
        return  # not there, or still has entries
    if not os.environ.get(REGISTRY_ENV):
        try:
            os.rmdir(os.path.dirname(directory))
        except OSError:
            pass


def retire_local_node(cluster_id: str, job_name: str, task_index: int, feed_dir: str, *,
                      grace: float = 10.0, linger: float = 4.0) -> None:
    """For the node (or its supervisor) once its TF process exited, before it removes its directory.

    Unregisters the node, so no later feed task picks it, then waits for the feed tasks still
    feeding it to read its exit state and end: at least ``linger`` seconds (inference tasks hold
    no claim), longer while a training feed task's claim in ``feed_dir`` is alive, at most ``grace``.
    """
    from tfos.feed.claims import live_claims

    unregister_local_node(cluster_id, job_name, task_index)
    started = time.monotonic()
    while os.path.isdir(feed_dir) and time.monotonic() - started < grace:
        if time.monotonic() - started >= linger and not live_claims(feed_dir):
            return
        time.sleep(0.1)


def _sort_key(node: dict) -> tuple[int, int]:
    return (TRAINER_JOBS.index(node["job_name"]) if node["job_name"] in TRAINER_JOBS else len(TRAINER_JOBS),
            node["task_index"])


def find_local_nodes(cluster_id: str) -> list[dict]:
    """Chief/master/worker nodes of ``cluster_id`` registered on this executor, chief first then by index.

    Each entry: ``cluster_id, executor_id, job_name, task_index, feed_dir, pid``. Entries whose
    ``feed_dir`` no longer exists (the node ended and removed it) are dropped from the registry.
    """
    directory = registry_dir(cluster_id)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    nodes = []
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                node = json.load(f)
        except (OSError, ValueError):
            continue
        if not os.path.isdir(str(node.get("feed_dir"))):  # the node removed its directory: it is gone
            try:
                os.unlink(path)
            except OSError:
                pass
            continue
        if node.get("job_name") in TRAINER_JOBS:
            nodes.append(node)
    if not nodes:
        _remove_empty_registry(cluster_id)
    return sorted(nodes, key=_sort_key)


def pick_local_node(cluster_id: str, partition: int) -> dict:
    """The node a feed task for ``partition`` feeds: the only local node, or (local mode) one by index."""
    nodes = find_local_nodes(cluster_id)
    if not nodes:
        raise FeedError(
            f"no TF chief/worker node of cluster {cluster_id} is registered on this executor "
            f"(registry {registry_dir(cluster_id)}): a feed task ran on an executor that hosts no TF worker. "
            f"With InputMode.SPARK the application must have exactly one single-core executor per TF node "
            f"(no spare executors), and the cluster must still be up")
    return nodes[partition % len(nodes)]


def mark_tf_finished(feed_dir: str) -> None:
    """Call in the TF process (or its supervisor) when ``main_fun`` returned normally."""
    FeedDir(feed_dir).write_exit("finished", "")


def mark_tf_failed(feed_dir: str, error: str) -> None:
    """Call in the TF process (or its supervisor) when ``main_fun`` raised or the process died.

    ``error`` (usually the traceback) is carried into the error of any feed task that was
    feeding this node.
    """
    FeedDir(feed_dir).write_exit("failed", error)
