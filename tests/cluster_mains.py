"""``main_fun(args, ctx)`` functions run by the cluster tests on real executors.

They live in an importable module so executors unpickle them by reference. Each writes what
it observed as JSON under ``args["out"]`` for the test to check.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import time

import numpy as np

MNIST_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "mnist", "data")


def load_mnist(kind: str = "train", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST from the shipped IDX files: (images uint8 [n, 28, 28], labels uint8 [n])."""
    prefix = "train" if kind == "train" else "t10k"
    with gzip.open(os.path.join(MNIST_DIR, f"{prefix}-images-idx3-ubyte.gz")) as f:
        _, n, rows, cols = struct.unpack(">IIII", f.read(16))
        n = n if limit is None else min(n, limit)
        images = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8).reshape(n, rows, cols)
    with gzip.open(os.path.join(MNIST_DIR, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        f.read(8)
        labels = np.frombuffer(f.read(n), dtype=np.uint8)
    return images, labels


def write_result(args: dict, ctx, **values) -> None:
    path = os.path.join(args["out"], f"{ctx.job_name}-{ctx.task_index}.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"job_name": ctx.job_name, "task_index": ctx.task_index, "pid": os.getpid(), **values}, f)
    os.replace(path + ".tmp", path)


def private_mb() -> float:
    """This process's private dirty memory (what it does not share with the launcher it was forked from)."""
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:")) / 1024


def record_context(args, ctx):
    import gc

    before = private_mb()
    gc.collect()  # a full collection, as any long main meets: it must not copy the launcher's heap
    write_result(args, ctx, tf_config=json.loads(os.environ["TF_CONFIG"]), num_workers=ctx.num_workers,
                 worker_num=ctx.worker_num, cluster_spec=ctx.cluster_spec, executor_id=ctx.executor_id,
                 keras=os.environ.get("TF_USE_LEGACY_KERAS"), frozen_objects=gc.get_freeze_count(),
                 collect_private_mb=private_mb() - before)


def mwms_fit(args, ctx):
    """Keras model.fit under MultiWorkerMirroredStrategy on a shard of real MNIST."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    images, labels = load_mnist("train", limit=4096)
    x = (images.reshape(-1, 784) / 255.0).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, labels.astype("int64"))).shuffle(4096, seed=1).batch(64).repeat()
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(64, activation="relu", input_shape=(784,)),
                                     tf.keras.layers.Dense(10)])
        model.compile(optimizer="adam", metrics=["accuracy"],
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = []
    if args.get("progress"):
        import tfos

        callbacks.append(tfos.ProgressCallback(ctx, batch_size=64))
    history = model.fit(ds, epochs=2, steps_per_epoch=args.get("steps", 40), verbose=0, callbacks=callbacks)
    test_x, test_y = load_mnist("test", limit=2000)
    preds = model.predict((test_x.reshape(-1, 784) / 255.0).astype("float32"), verbose=0).argmax(axis=1)
    checksum = float(sum(float(np.sum(w)) for w in model.get_weights()))
    write_result(args, ctx, loss=history.history["loss"], test_accuracy=float((preds == test_y).mean()),
                 weight_checksum=checksum, workers=strategy.num_replicas_in_sync)


def ps_strategy(args, ctx):
    """TF2 ParameterServerStrategy: ps and workers serve, the chief coordinates a custom loop."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if ctx.job_name in ("ps", "worker"):
        server = tf.distribute.Server(resolver.cluster_spec(), job_name=ctx.job_name, task_index=ctx.task_index,
                                      protocol="grpc", start=True)
        server.join()
        return
    strategy = tf.distribute.ParameterServerStrategy(resolver)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        w = tf.Variable(0.0)
        b = tf.Variable(0.0)
        opt = tf.keras.optimizers.SGD(0.1)

    def dataset_fn():
        xs = tf.random.stateless_uniform([1024], seed=[1, 2])
        return tf.data.Dataset.from_tensor_slices((xs, 3.0 * xs + 1.0)).batch(32).repeat()

    per_worker = coordinator.create_per_worker_dataset(dataset_fn)
    it = iter(per_worker)

    @tf.function
    def step(iterator):
        def replica(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((w * x + b - y) ** 2)
            opt.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b], strict=True))
            return loss
        x, y = next(iterator)
        return strategy.run(replica, args=(x, y))

    for _ in range(300):
        coordinator.schedule(step, args=(it,))
    coordinator.join()
    write_result(args, ctx, w=float(w.numpy()), b=float(b.numpy()),
                 ps_device=w.device)


def v1_graph(args, ctx):
    """Legacy tf.compat.v1 between-graph replication through ctx.start_cluster_server()."""
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    cluster, server = ctx.start_cluster_server()
    if ctx.job_name == "ps":
        server.join()
        return
    device = tf.compat.v1.train.replica_device_setter(
        worker_device=f"/job:worker/task:{ctx.task_index}", cluster=cluster)
    with tf.compat.v1.device(device):
        step = tf.compat.v1.train.get_or_create_global_step()
        x = tf.random.uniform([32])
        w = tf.compat.v1.get_variable("w", initializer=0.0)
        loss = tf.reduce_mean((w * x - 2.0 * x) ** 2)
        train = tf.compat.v1.train.GradientDescentOptimizer(0.5).minimize(loss, global_step=step)
    hooks = [tf.compat.v1.train.StopAtStepHook(last_step=200)]
    # Each worker only talks to the ps and itself, so it never waits for a worker that has finished.
    config = tf.compat.v1.ConfigProto(device_filters=["/job:ps", f"/job:worker/task:{ctx.task_index}"])
    with tf.compat.v1.train.MonitoredTrainingSession(master=server.target, is_chief=ctx.task_index == 0,
                                                     hooks=hooks, config=config) as sess:
        while not sess.should_stop():
            _, w_value, step_value = sess.run([train, w, step])
    write_result(args, ctx, w=float(w_value), step=int(step_value), w_device=w.device)


def with_evaluator(args, ctx):
    """Chief and worker train under MWMS and checkpoint; the evaluator evaluates the checkpoint."""
    import tensorflow as tf

    ckpt_dir = os.path.join(args["out"], "ckpt")
    if ctx.job_name == "evaluator":
        w = tf.Variable(0.0)
        ckpt = tf.train.Checkpoint(w=w)
        deadline = time.time() + 120
        while tf.train.latest_checkpoint(ckpt_dir) is None and time.time() < deadline:
            time.sleep(0.5)
        ckpt.restore(tf.train.latest_checkpoint(ckpt_dir)).expect_partial()
        write_result(args, ctx, w=float(w.numpy()), tf_config=json.loads(os.environ["TF_CONFIG"]))
        while True:  # like a real evaluator, keep waiting for new checkpoints until shut down
            time.sleep(1)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        w = tf.Variable(0.0)
    strategy.run(lambda: w.assign_add(1.0))
    target = ckpt_dir if ctx.job_name == "chief" else os.path.join(args["out"], f"tmp-{ctx.task_index}")
    tf.train.Checkpoint(w=w).save(os.path.join(target, "ckpt"))
    write_result(args, ctx, w=float(w.numpy()))


def raise_on_worker(args, ctx):
    if "out" in args:
        write_result(args, ctx, started=True)  # its pid: the test checks every TF process ended
    if ctx.job_name == "worker" and ctx.task_index == args.get("bad_index", 0):
        raise ValueError(f"bad input in shard {ctx.task_index}")
    time.sleep(args.get("others_sleep", 120))


def wait_for_file(args, ctx):
    """Block until the test creates ``args['release']`` (bounded), e.g. while TensorBoard is checked."""
    deadline = time.time() + args.get("max_wait", 120)
    while not os.path.exists(args["release"]) and time.time() < deadline:
        time.sleep(0.2)
    write_result(args, ctx, released=os.path.exists(args["release"]), tensorboard_url=ctx.tensorboard_url)


def build_mwms(args, ctx):
    """Only build MultiWorkerMirroredStrategy (the lifecycle benchmark's workload)."""
    import tensorflow as tf

    tf.distribute.MultiWorkerMirroredStrategy()


def parallel_inference(args, ctx):
    """TFParallel: each instance scores its shard of the test images with a SavedModel."""
    import tensorflow as tf

    model = tf.saved_model.load(args["model"])
    images, labels = load_mnist("test", limit=args["rows"])
    mine = np.arange(len(labels))[ctx.worker_num::ctx.num_workers]
    scores = model.serve(tf.constant(images[mine].reshape(-1, 784) / 255.0, tf.float32)).numpy()
    return {"worker_num": ctx.worker_num, "rows": mine.tolist(), "pred": scores.argmax(axis=1).tolist()}


def softmax_module(tf, weights, bias):
    """A SavedModel-ready module: ``serving_default`` maps ``x`` [batch, 784] to ``pred`` and ``prob``."""
    module = tf.Module()
    module.w, module.b = tf.Variable(weights), tf.Variable(bias)

    @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="x")])
    def serve(x):
        prob = tf.nn.softmax(tf.matmul(x / 255.0, module.w) + module.b)
        return {"pred": tf.argmax(prob, axis=1), "prob": prob}

    module.serve = serve
    return module


def pipeline_train(args, ctx):
    """TFEstimator train_fn (InputMode.SPARK): softmax regression on the fed ``x``/``y`` batches; the
    first worker exports it to ``args.export_dir``; every node records what it was given."""
    import tensorflow as tf

    feed = ctx.get_data_feed(train_mode=True, input_mapping=args.input_mapping)
    w = tf.Variable(tf.zeros([784, 10]))
    b = tf.Variable(tf.zeros([10]))
    opt = tf.keras.optimizers.SGD(0.5)
    rows, keys = 0, set()
    while not feed.should_stop():
        batch = feed.next_batch(args.batch_size)
        if not batch or not len(next(iter(batch.values()))):
            continue
        keys |= set(batch)
        x = tf.constant(np.asarray(batch["x"], dtype=np.float32) / 255.0)
        y = tf.constant(np.asarray(batch["y"], dtype=np.int64))
        rows += int(x.shape[0])
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.matmul(x, w) + b))
        opt.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b], strict=True))
    if ctx.worker_num == 0:
        tf.saved_model.save(softmax_module(tf, w.numpy(), b.numpy()), args.export_dir)
    write_result({"out": args.out}, ctx, rows=rows, keys=sorted(keys), epochs=args.epochs, batch_size=args.batch_size,
                 cluster_size=args.cluster_size, note=args.note)


def pipeline_count_records(args, ctx):
    """TFEstimator train_fn (InputMode.TENSORFLOW): count the TFRecords in ``args.tfrecord_dir``."""
    import glob

    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(args.tfrecord_dir.replace("file:", ""), "part-*")))
    count = sum(1 for _ in tf.data.TFRecordDataset(files)) if ctx.worker_num == 0 else 0
    write_result({"out": args.out}, ctx, records=count, files=len(files), tfrecord_dir=args.tfrecord_dir)


def pipeline_export(args):
    """TFEstimator export_fn: mark that it ran (once, on an executor)."""
    with open(os.path.join(args.out, f"export-{os.getpid()}.json"), "w") as f:
        json.dump({"export_dir": args.export_dir}, f)
