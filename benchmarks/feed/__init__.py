"""The InputMode.SPARK feed benchmarks behind ``benchmarks/feed_throughput.py`` (its command line).

* ``compare``: the default sub-command, :class:`~benchmarks.feed.compare.Bench` and its run.
* ``training``: measurement (a) of ``compare``, ``train`` over a cached and a computed RDD against
  the single-process bounds, with where each run's time and CPU go.
* ``inference``: measurement (d) of ``compare``, inference over a cached and a computed RDD.
* ``inference_parts``: an inference task's Spark side timed alone (``python -m``), collections counted.
* ``report``: ratios, targets and the printed tables of ``compare``.
* ``figures``: a measurement's rate, checksums, best run and ``train`` phases.
* ``workloads``: what ``compare`` runs on the TF nodes and in Spark tasks.
* ``data``: the MNIST-shaped rows, their checksums, the consumer and the numpy model.
* ``harness``: waiting for the nodes' result files, RSS and CPU sampling (a CPU timeline per phase),
  caching an input before timing, the watchdog, clean-up of the run's processes, the
  micro-benchmarks' consumer process.
* ``channel`` and ``spark``: the micro-benchmark sub-commands.
"""
