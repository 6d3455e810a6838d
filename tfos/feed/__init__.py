"""Moving Spark data into TF processes (InputMode.SPARK).

Modules, in the direction the data flows:

* ``feed_job`` (driver): the Spark jobs behind ``cluster.train`` / ``cluster.inference`` /
  the end of the feed at shutdown.
* Spark tasks, partitions -> Arrow chunks -> the TF process on the same executor: ``sharding``
  (map side of training), ``train_task`` (shard feed tasks), ``inference_task``,
  ``housekeeping`` (end of feed, clean-up), built from ``plans`` (what each task is shipped),
  ``targets`` (the node a task feeds), ``chunking``, ``spill`` and ``claims``. ``feeder``
  re-exports the names the tests know it by.
* ``channel``: the executor-local Unix-socket transport with bounded buffering.
* ``arrow_codec``: rows <-> Arrow record batches.
* ``datafeed`` (TF process): ``DataFeed`` (``next_batch``, ``should_stop``, ``batch_results``,
  ``terminate``, ``dataset``), built from ``receiver`` (feed tasks' messages -> events),
  ``results`` (inference results owed), ``shaping`` (batches as rows, dicts, numpy) and
  ``tf_dataset`` (the tf.data adapter).
* ``registry``: which TF nodes a feed task can reach on its executor.
* ``progress``: rows fed and rows/s on the driver.

The TF-side names import without pyspark; the driver-side ones (``train``, ``inference``,
``end_feed``) are loaded on first use.
"""

from tfos.feed.datafeed import DataFeed
from tfos.feed.errors import FeedError, FeedTerminated, FeedTimeout, MalformedRowError, PeerGone
from tfos.feed.registry import (
    find_local_nodes,
    mark_tf_failed,
    mark_tf_finished,
    register_local_node,
    unregister_local_node,
)

__all__ = ["DataFeed", "FeedError", "FeedTerminated", "FeedTimeout", "MalformedRowError", "PeerGone", "end_feed",
           "find_local_nodes", "inference", "mark_tf_failed", "mark_tf_finished", "register_local_node", "train",
           "unregister_local_node"]


def __getattr__(name: str):
    if name in ("train", "inference", "end_feed"):
        from tfos.feed import feed_job

        return getattr(feed_job, name)
    raise AttributeError(f"module 'tfos.feed' has no attribute {name!r}")
