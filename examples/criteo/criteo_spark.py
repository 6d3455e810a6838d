"""Criteo click-through-rate prediction on tfos: 1 parameter server + N workers, tf.compat.v1 graph mode.

Between-graph replication (``ctx.start_cluster_server()``, ``replica_device_setter``,
``MonitoredTrainingSession``; asynchronous updates on the parameter server) of the model in
``criteo_model.py``: logistic regression over bucketized integers, hashed categoricals and
crossed categorical pairs (``--model_type dnn``: wide & deep). Works in both input modes:

* ``--input_mode tf``: each worker reads its share of ``--data`` itself (whole files, or every
  N-th line of a single file);
* ``--input_mode spark``: the driver reads ``--data`` as an RDD of lines and feeds it
  (``cluster.train`` / ``cluster.inference``) to the workers' ``ctx.get_data_feed()``.

Train::

    spark-submit examples/criteo/criteo_spark.py --mode train --data criteo/train.tsv \\
        --validation criteo/validation --model criteo_model --steps 300 --cluster_size 3

logs the train cross-entropy and (on the chief) the validation cross-entropy every
``--validation_every`` steps, checkpoints to ``--model``, and ends with
``base-rate loss: ...`` (always predicting the training CTR) and, as the last line,
``validation loss: 0.xxxx``. Inference writes ``label<TAB>click probability`` lines to
``--output``::

    spark-submit examples/criteo/criteo_spark.py --mode inference --data criteo/validation \\
        --model criteo_model --output criteo_predictions --cluster_size 2

TensorFlowOnSpark's ``criteo_spark.py`` command line works as written (``--mode/-X``, ``--data/-i``,
``--validation/-v``, ``--model/-m``, ``--steps/-s``, ``--batch_size/-b``, ``--epochs/-e``,
``--cluster_size/-n``, ``--output/-o``, ``--tensorboard/-tb``, ``--tensorboardlogdir/-tbld``;
``--readers/-r`` and ``--rdma/-c`` are accepted and ignored). ``--cluster_size`` defaults to the
executors Spark was given; ``--validation ''`` trains without validation (logged). A ``--data`` or
``--validation`` path that does not exist fails before the cluster starts, naming it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import criteo_data
import criteo_model

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
METRICS = "validation.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """tfos's flags; TensorFlowOnSpark's one-letter forms and extra flags are accepted too."""
    p = argparse.ArgumentParser(description="Criteo CTR on tfos (1 ps + N workers, tf.compat.v1)")
    p.add_argument("-X", "--mode", choices=["train", "inference"], default="train")
    p.add_argument("-i", "--data", default=os.path.join(DATA, "train_head1000.tsv"),
                   help="TSV file, directory or glob (default FS): training rows, or rows to score")
    p.add_argument("-v", "--validation", default=",".join(os.path.join(DATA, f) for f in ("sample_a.tsv", "sample_b.tsv")),
                   help="held-out TSV rows (comma-separated files, directory or glob), read by the chief; '' for none")
    p.add_argument("-m", "--model", default="criteo_model", help="checkpoint directory (default FS)")
    p.add_argument("-o", "--output", default="criteo_predictions", help="inference: predictions directory")
    p.add_argument("-s", "--steps", type=int, default=300, help="global training steps")
    p.add_argument("-b", "--batch_size", type=int, default=32)
    p.add_argument("--model_type", choices=["linear", "dnn"], default="linear")
    p.add_argument("-n", "--cluster_size", type=int, default=None,
                   help="TF nodes: --num_ps parameter servers + workers (default: the executors Spark was given; "
                        "3 in local mode)")
    p.add_argument("--num_ps", type=int, default=1)
    p.add_argument("--input_mode", choices=["tf", "spark"], default="tf")
    p.add_argument("-e", "--epochs", type=int, default=20, help="spark input mode: passes of the feed (steps end it too)")
    p.add_argument("--learning_rate", type=float, default=0.05, help="Adagrad learning rate")
    p.add_argument("--l2", type=float, default=1e-3, help="L2 penalty on the weights each row uses")
    p.add_argument("--num_buckets", type=int, default=1 << 20, help="hash buckets (weights)")
    p.add_argument("--crosses", default=criteo_model.DEFAULT_CROSSES, help="crossed pairs, e.g. C1xC2,C3xC4")
    p.add_argument("--validation_every", type=int, default=100, help="steps between validation losses")
    p.add_argument("-tb", "--tensorboard", action="store_true", help="run TensorBoard (log dir: --tensorboardlogdir)")
    p.add_argument("-tbld", "--tensorboardlogdir", default=None, help="TensorBoard log directory (default: --model)")
    p.add_argument("-r", "--readers", type=int, default=1, help="TensorFlowOnSpark flag, ignored")
    p.add_argument("-c", "--rdma", default=False, help="TensorFlowOnSpark flag, ignored (no RDMA transport)")
    return p.parse_args(argv)


def resolve_paths(spec: str, default_fs: str, flag: str) -> str:
    """Comma-separated paths, fully qualified; exits (before any cluster starts) naming the first missing one."""
    from tfos.io.filesystem import FileSystem
    from tfos.io.paths import absolute_path

    paths = [absolute_path(part, default_fs, os.getcwd()) for part in spec.split(",") if part]
    with FileSystem() as fs:
        for path in paths:
            if not (any(ch in path for ch in "*?[") and fs.glob(path) or fs.exists(path)):
                raise SystemExit(f"criteo_spark.py: error: {flag} {path}: no such file or directory")
    return ",".join(paths)


def _files(ctx: Any, spec: str) -> list[str]:
    return [f for part in spec.split(",") if part for f in criteo_data.data_files(ctx.absolute_path(part))]


def _model_graph(args: argparse.Namespace, train: bool) -> criteo_model.Graph:
    return criteo_model.build_graph(args.model_type, args.num_buckets, criteo_model.parse_crosses(args.crosses),
                                    args.learning_rate, args.l2, train=train)


# input ---------------------------------------------------------------------------------------
def tf_mode_batches(args: argparse.Namespace, ctx: Any, epochs: int | None) -> Iterator[criteo_data.Batch]:
    """This worker's share of ``--data``, ``epochs`` times (None: forever), in batches."""
    files = _files(ctx, args.data)
    n, k = ctx.num_workers, ctx.worker_num
    mine = files[k::n] if len(files) >= n else files
    every = 1 if len(files) >= n else n  # one file shared by all workers: every n-th line
    epoch = 0
    while epochs is None or epoch < epochs:
        lines = [line for i, line in enumerate(criteo_data.read_lines(mine)) if every == 1 or i % every == k]
        for start in range(0, len(lines), args.batch_size):
            yield criteo_data.parse_lines(lines[start:start + args.batch_size])
        epoch += 1


def spark_mode_batches(feed: Any, batch_size: int) -> Iterator[criteo_data.Batch]:
    """Batches of lines from the node's Spark feed until it ends."""
    while not feed.should_stop():
        rows = feed.next_batch(batch_size)
        if len(rows) == 0:
            break
        yield criteo_data.parse_lines(rows)


# training ------------------------------------------------------------------------------------
def _validation_hook(args: argparse.Namespace, graph: criteo_model.Graph, val: criteo_data.Batch | None,
                     base: float, metrics_path: str) -> Any:
    import tensorflow as tf

    log = logging.getLogger("criteo")

    class ValidationHook(tf.compat.v1.train.SessionRunHook):
        """Chief only: validation cross-entropy every ``--validation_every`` steps and at the end (to ``metrics_path``)."""

        def __init__(self) -> None:
            self.next_at = args.validation_every

        def before_run(self, run_context: Any) -> Any:
            return tf.compat.v1.train.SessionRunArgs(graph.global_step)

        def after_run(self, run_context: Any, run_values: Any) -> None:
            step = run_values.results
            if val is not None and step >= self.next_at:
                self.next_at = step + args.validation_every
                loss = run_context.session.run(graph.loss, graph.feed(val))
                log.info("step %d: validation loss %.4f (base rate %.4f)", step, loss, base)

        def end(self, session: Any) -> None:
            from tfos.io.filesystem import FileSystem

            if val is None:
                step = session.run(graph.global_step)
                log.info("final step %d (no validation rows)", step)
                FileSystem().write_bytes(metrics_path, json.dumps({"step": int(step)}).encode())
                return
            loss, step = session.run([graph.loss, graph.global_step], graph.feed(val))
            log.info("final step %d: validation loss %.4f (base rate %.4f)", step, loss, base)
            oracle = criteo_data.base_rate_loss(float(val.label.mean()), val.label)
            FileSystem().write_bytes(metrics_path, json.dumps(
                {"validation_loss": float(loss), "base_rate_loss": base, "validation_ctr_loss": oracle,
                 "step": int(step), "validation_rows": len(val), "validation_ctr": float(val.label.mean()),
                 "train_ctr": args.train_ctr}).encode())

    return ValidationHook()


def _wait_for_init(target: str, config: Any, timeout: float = 1800.0) -> None:
    """Block until the chief has initialized the model's variables (on the parameter servers)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    uninitialized = v1.report_uninitialized_variables()
    deadline = time.monotonic() + timeout
    with v1.Session(target, config=config) as sess:
        while len(sess.run(uninitialized)) and time.monotonic() < deadline:
            time.sleep(0.5)


def train_fun(args: argparse.Namespace, ctx: Any) -> None:
    """ps: serve variables. Workers: asynchronous between-graph training; the chief checkpoints and validates."""
    import tensorflow as tf

    from tfos.io.checkpoint import local_mirror
    from tfos.io.filesystem import join

    v1 = tf.compat.v1
    log = logging.getLogger("criteo")
    v1.disable_eager_execution()
    cluster, server = ctx.start_cluster_server()
    if ctx.job_name == "ps":
        server.join()
        return
    is_chief = ctx.task_index == 0
    device = v1.train.replica_device_setter(worker_device=f"/job:worker/task:{ctx.task_index}", cluster=cluster)
    with v1.device(device):
        graph = _model_graph(args, train=True)
    hooks = [v1.train.StopAtStepHook(last_step=args.steps)]
    feed = ctx.get_data_feed(train_mode=True) if args.input_mode == "spark" else None
    batches = spark_mode_batches(feed, args.batch_size) if feed else tf_mode_batches(args, ctx, None)
    # talk only to the ps and this worker: a worker that finished early (and exited) must not block others
    session_config = v1.ConfigProto(device_filters=["/job:ps", f"/job:worker/task:{ctx.task_index}"],
                                    allow_soft_placement=True)
    model_dir = ctx.absolute_path(args.model)
    chief_hooks = []
    local_steps = 0
    if not is_chief:  # MonitoredTrainingSession rechecks only every 30 s: wait for the chief's init here
        _wait_for_init(server.target, session_config)
    with contextlib.ExitStack() as stack:
        checkpoint_dir = None
        if is_chief:  # checkpoints go to model_dir, through a local copy where TF cannot write it directly
            checkpoint_dir = stack.enter_context(local_mirror(model_dir)).path
            val, base = None, float("nan")
            if args.validation:
                val = criteo_data.parse_lines(criteo_data.read_lines(_files(ctx, args.validation)))
                base = criteo_data.base_rate_loss(args.train_ctr, val.label)
                log.info("validation: %d rows, CTR %.4f; training CTR %.4f", len(val), val.label.mean(),
                         args.train_ctr)
            chief_hooks.append(_validation_hook(args, graph, val, base, join(model_dir, METRICS)))
        with v1.train.MonitoredTrainingSession(
                master=server.target, is_chief=is_chief, checkpoint_dir=checkpoint_dir, hooks=hooks,
                chief_only_hooks=chief_hooks, save_checkpoint_steps=100, save_summaries_steps=None,
                save_summaries_secs=None, log_step_count_steps=0, config=session_config) as sess:
            for batch in batches:
                if sess.should_stop():
                    break
                _, loss, step = sess.run([graph.train_op, graph.loss, graph.global_step], graph.feed(batch))
                local_steps += 1
                if local_steps % 50 == 0:
                    log.info("step %d (local %d): train loss %.4f", step, local_steps, loss)
    if feed is not None and not feed.should_stop():
        feed.terminate()  # step target reached: stop the remaining feed
    log.info("worker %d done after %d local steps", ctx.task_index, local_steps)


# inference -----------------------------------------------------------------------------------
def inference_fun(args: argparse.Namespace, ctx: Any) -> None:
    """Restore the latest checkpoint and write click probabilities (tf mode) or return them (spark mode)."""
    import tensorflow as tf

    from tfos.io.checkpoint import local_mirror
    from tfos.io.filesystem import FileSystem, join

    v1 = tf.compat.v1
    v1.disable_eager_execution()
    graph = _model_graph(args, train=False)
    saver = v1.train.Saver()
    with local_mirror(ctx.absolute_path(args.model)) as mirror, v1.Session() as sess:
        latest = tf.train.latest_checkpoint(mirror.path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {ctx.absolute_path(args.model)}; train first")
        saver.restore(sess, latest)
        if args.input_mode == "spark":
            feed = ctx.get_data_feed(train_mode=False)
            for batch in spark_mode_batches(feed, args.batch_size):
                probs = sess.run(graph.probs, {graph.ints: batch.ints, graph.cats: batch.cats})
                feed.batch_results([f"{int(y)}\t{p:.6f}" for y, p in zip(batch.label, probs, strict=True)])
            return
        lines = []
        for batch in tf_mode_batches(args, ctx, epochs=1):
            probs = sess.run(graph.probs, {graph.ints: batch.ints, graph.cats: batch.cats})
            lines.extend(f"{int(y)}\t{p:.6f}" for y, p in zip(batch.label, probs, strict=True))
    fs = FileSystem()
    out = ctx.absolute_path(args.output)
    fs.makedirs(out)
    fs.write_bytes(join(out, f"part-{ctx.worker_num:05d}"), "".join(f"{line}\n" for line in lines).encode())


def main_fun(args: argparse.Namespace, ctx: Any) -> None:
    """Runs on every node."""
    if args.mode == "train":
        train_fun(args, ctx)
    else:
        inference_fun(args, ctx)


# driver --------------------------------------------------------------------------------------
def _spark_lines(sc: Any, spec: str, partitions: int) -> Any:
    from tfos.io.paths import absolute_path, default_fs

    fs = default_fs(sc)
    paths = ",".join(absolute_path(p, fs, os.getcwd()) for p in spec.split(",") if p)
    return sc.textFile(paths, minPartitions=partitions).filter(lambda line: line.strip() != "")


def ship_modules(sc: Any, *names: str) -> None:
    """Send this example's helper modules to the executors (with --py-files they are there already)."""
    for name in names:
        path = os.path.join(HERE, name)
        if os.path.exists(path):
            sc.addPyFile(path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark import SparkContext

    import tfos
    from tfos.io.filesystem import FileSystem, join
    from tfos.io.paths import absolute_path, default_fs

    if args.rdma or args.readers != 1:
        logging.info("--rdma and --readers are ignored (no RDMA transport; one reader per worker)")
    sc = SparkContext(conf=criteo_data.spark_conf(f"criteo_{args.mode}", args.cluster_size or 3))
    ship_modules(sc, "criteo_data.py", "criteo_model.py")
    args.cluster_size = args.cluster_size or criteo_data.executor_count(sc, 3)
    logging.info("Spark master %s: %d TF nodes", sc.master, args.cluster_size)
    mode = tfos.InputMode.SPARK if args.input_mode == "spark" else tfos.InputMode.TENSORFLOW
    fs = FileSystem()
    begin = time.time()
    args.data = resolve_paths(args.data, default_fs(sc), "--data")
    if args.mode == "train":
        args.validation = resolve_paths(args.validation, default_fs(sc), "--validation")
        if not args.validation:
            logging.info("no --validation rows: training without validation")
        model_dir = absolute_path(args.model, default_fs(sc), os.getcwd())
        fs.delete(join(model_dir, METRICS), missing_ok=True)
        train_lines = _spark_lines(sc, args.data, args.cluster_size - args.num_ps).cache()
        args.train_ctr = train_lines.map(lambda line: float(line.split("\t", 1)[0] or 0)).mean()
        logging.info("training rows: %d, CTR %.4f", train_lines.count(), args.train_ctr)
        log_dir = absolute_path(args.tensorboardlogdir, default_fs(sc), os.getcwd()) if args.tensorboardlogdir \
            else model_dir
        cluster = tfos.run(sc, main_fun, args, args.cluster_size, num_ps=args.num_ps, input_mode=mode,
                           tensorboard=args.tensorboard, log_dir=log_dir if args.tensorboard else None)
        if mode == tfos.InputMode.SPARK:
            cluster.train(train_lines, num_epochs=args.epochs)
        cluster.shutdown()
        metrics = json.loads(fs.read_bytes(join(model_dir, METRICS)))
        sc.stop()
        print(f"trained {metrics['step']} steps in {time.time() - begin:.1f}s; checkpoints in {model_dir}")
        if "validation_loss" not in metrics:
            print("validation skipped: no --validation rows")
            return
        print(f"base-rate loss: {metrics['base_rate_loss']:.4f} (constant training CTR {metrics['train_ctr']:.4f}; "
              f"the validation rows' own CTR {metrics['validation_ctr']:.4f} would score "
              f"{metrics['validation_ctr_loss']:.4f})")
        print(f"validation loss: {metrics['validation_loss']:.4f}")
        return
    output = absolute_path(args.output, default_fs(sc), os.getcwd())
    fs.delete(output, recursive=True, missing_ok=True)
    cluster = tfos.run(sc, main_fun, args, args.cluster_size, input_mode=mode)
    if mode == tfos.InputMode.SPARK:
        cluster.inference(_spark_lines(sc, args.data, args.cluster_size)).saveAsTextFile(output)
    cluster.shutdown()
    rows = sum(len(fs.read_bytes(join(output, n)).splitlines()) for n in fs.listdir(output) if n.startswith("part-"))
    sc.stop()
    print(f"wrote {rows} click probabilities to {output} in {time.time() - begin:.1f}s")


if __name__ == "__main__":
    main()
