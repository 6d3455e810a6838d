"""TensorFlowOnSpark 2.2.5's public API, as thin adapters over the native tfos API.

Why a package of its own: every TensorFlowOnSpark name, spelling and quirk (``defaultFS``,
``worker_num`` = executor id, ``tensorboard_url()`` as a method, ``DataFeed.next_batch``
returning lists, ``ctx.mgr``) lives here and nowhere else, so the native API (``tfos.run``,
``NodeContext``, ``tfos.feed``, ``tfos.cluster``) keeps one meaning per name. The modules
mirror TensorFlowOnSpark's (``TFCluster``, ``TFNode``, ``TFParallel``, ``TFSparkNode``,
``TFManager``, ``compat``, ``util``, ``gpu_info``, ``marker``, ``reservation``); the top-level
``tfos.TFCluster``, ``tfos.TFNode``, ``tfos.compat``, ``tfos.util``... only re-export from
them, so ``from tfos import TFCluster, TFNode, compat`` is the one line a TensorFlowOnSpark
script changes. ``pipeline`` and ``dfutil`` are native tfos modules that already speak
TensorFlowOnSpark's API and are not repeated here.

Scripts started through these modules (``TFCluster.run``, ``TFParallel.run``) get a
``TFSparkNode.TFNodeContext`` as ``ctx``: TensorFlowOnSpark's view of the native
``NodeContext`` (which it wraps; other native attributes read through).

Nothing here imports TensorFlow or pyspark at import time.
"""
