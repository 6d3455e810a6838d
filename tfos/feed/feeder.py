"""Former home of the Spark-task side of the feed, split by what each part is; these names stay
importable from here (the tests use them). Where each lives now:

* ``tfos.feed.targets``: ``NodeTarget``, ``open_feed`` (the TF node a task feeds).
* ``tfos.feed.plans``: ``ShardPlan``, ``TrainPlan``, ``InferencePlan`` (what the tasks are shipped).
* ``tfos.feed.sharding``: ``agreed_rows`` (and ``shard_rows`` / ``shard_arrow``, the map side).
* ``tfos.feed.spill``: ``SpillFile``, ``SPILL_PREFIX``, ``reap_spills``; ``_spill_dir`` is ``spill_dir``.
* ``tfos.feed.claims``: ``TaskAttempt``, ``CLAIM_PREFIX``, ``reap_claims``; ``_claim_node`` is ``claim_node``.
* ``tfos.feed.train_task``: ``feed_shard``; ``_feed_input`` is ``feed_input``.
* ``tfos.feed.inference_task``: ``infer_rows`` (and ``infer_arrow``, ``infer_arrow_pickled``).
* ``tfos.feed.chunking`` (``ChunkSizer``, ``iter_chunks``) and ``tfos.feed.housekeeping``
  (``end_feed_task``, ``clean_up_task``) hold the rest.
"""

from tfos.feed.claims import CLAIM_PREFIX, TaskAttempt, reap_claims
from tfos.feed.claims import claim_node as _claim_node
from tfos.feed.inference_task import infer_rows
from tfos.feed.plans import InferencePlan, ShardPlan, TrainPlan
from tfos.feed.sharding import agreed_rows
from tfos.feed.spill import SPILL_PREFIX, SpillFile, reap_spills
from tfos.feed.spill import spill_dir as _spill_dir
from tfos.feed.targets import NodeTarget, open_feed
from tfos.feed.train_task import feed_input as _feed_input
from tfos.feed.train_task import feed_shard

__all__ = ["CLAIM_PREFIX", "SPILL_PREFIX", "InferencePlan", "NodeTarget", "ShardPlan", "SpillFile", "TaskAttempt",
           "TrainPlan", "_claim_node", "_feed_input", "_spill_dir", "agreed_rows", "feed_shard", "infer_rows",
           "open_feed", "reap_claims", "reap_spills"]
