"""``main_fun(args, ctx)`` functions written the way TensorFlowOnSpark 2.x users write them.

Run by tests/test_compat_*.py on the executors (importable, so they unpickle by reference);
each records what it saw as JSON in ``args["out"]``.
"""

from __future__ import annotations

import json
import os

import numpy as np

from tests.cluster_mains import load_mnist  # noqa: F401 - re-exported for the tests


def _record(args, ctx, **values) -> None:
    path = os.path.join(args["out"], f"{ctx.job_name}-{ctx.task_index}.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"job_name": ctx.job_name, "task_index": ctx.task_index, "executor_id": ctx.executor_id,
                   "worker_num": ctx.worker_num, "num_workers": ctx.num_workers, **values}, f)
    os.replace(path + ".tmp", path)


def keras_datafeed_fit(args, ctx):
    """TFoS's Keras MNIST example shape: a generator over DataFeed(ctx.mgr, False).next_batch(1) -> model.fit
    under MultiWorkerMirroredStrategy, compat.export_saved_model on the chief, then terminate()."""
    import tensorflow as tf

    from tfos import TFNode, compat

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    tf_feed = TFNode.DataFeed(ctx.mgr, False)
    seen = {"rows": 0}

    def rdd_generator():
        while not tf_feed.should_stop():
            batch = tf_feed.next_batch(1)
            if len(batch) == 0:
                return
            image, label = batch[0]
            seen["rows"] += 1
            yield (np.reshape(np.array(image, dtype=np.float32) / 255.0, (784,)),
                   np.reshape(np.array(label, dtype=np.float32), (1,)))

    ds = tf.data.Dataset.from_generator(rdd_generator, (tf.float32, tf.float32),
                                        (tf.TensorShape([784]), tf.TensorShape([1])))
    options = tf.data.Options()
    compat.disable_auto_shard(options)
    ds = ds.with_options(options).batch(args["batch_size"])
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(32, activation="relu", input_shape=(784,)),
                                     tf.keras.layers.Dense(10)])
        model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    history = model.fit(ds, epochs=args["epochs"], steps_per_epoch=args["steps_per_epoch"], verbose=0)
    compat.export_saved_model(model, args["export_dir"], ctx.job_name == "chief")
    tf_feed.terminate()
    _record(args, ctx, rows=seen["rows"], loss=history.history["loss"], mgr_state=ctx.mgr.get("state"),
            queue_in=type(tf_feed.queue_in).__name__, done_feeding=tf_feed.done_feeding)


def tfrecord_reader(args, ctx):
    """InputMode.TENSORFLOW: each chief/worker reads its shard of the TFRecords at ctx.absolute_path(dir)."""
    import tensorflow as tf

    path = ctx.absolute_path(args["tfrecords"])
    files = sorted(tf.io.gfile.glob(path + "/part-*"))
    mine = files[ctx.task_index + (1 if ctx.job_name == "worker" else 0)::ctx.num_workers]
    labels = []
    spec = {"label": tf.io.FixedLenFeature([], tf.int64)}
    for record in tf.data.TFRecordDataset(mine):
        labels.append(int(tf.io.parse_single_example(record, spec)["label"]))
    _record(args, ctx, path=path, files=len(files), labels=labels, defaultFS=ctx.defaultFS,
            tf_config=json.loads(os.environ["TF_CONFIG"]))


def parallel_predict(args, ctx):
    """TFParallel: score the TFRecord files of shard ctx.worker_num of ctx.num_workers; write them with gfile."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(args["tfrecords"] + "/part-*"))[ctx.worker_num::ctx.num_workers]
    model = tf.saved_model.load(args["model"])
    spec = {"image": tf.io.FixedLenFeature([784], tf.int64), "label": tf.io.FixedLenFeature([], tf.int64)}
    ds = tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, spec)).batch(100)
    out = tf.io.gfile.GFile(os.path.join(args["out"], f"part-{ctx.worker_num:05d}"), "w")
    with out:
        for batch in ds:
            scores = model.serve(tf.cast(batch["image"], tf.float32) / 255.0).numpy()
            for label, pred in zip(batch["label"].numpy(), scores.argmax(axis=1), strict=True):
                out.write(f"{int(label)} {int(pred)}\n")
    return {"worker_num": ctx.worker_num, "num_workers": ctx.num_workers, "files": len(files),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "defaultFS": ctx.defaultFS}


def estimator_train(args, ctx):
    """TFEstimator train_fn, TFoS style: DataFeed(ctx.mgr, False, input_mapping=...) batches of lists."""
    import tensorflow as tf

    from tests.cluster_mains import softmax_module
    from tfos import TFNode

    feed = TFNode.DataFeed(ctx.mgr, False, input_mapping=args.input_mapping)
    w, b = tf.Variable(tf.zeros([784, 10])), tf.Variable(tf.zeros([10]))
    opt = tf.keras.optimizers.SGD(0.5)
    rows, shapes = 0, set()
    while not feed.should_stop():
        batch = feed.next_batch(args.batch_size)
        if not batch["x"]:
            continue
        shapes.add(f"{type(batch).__name__}/{type(batch['x']).__name__}/{type(batch['x'][0]).__name__}")
        x = tf.constant(np.asarray(batch["x"], dtype=np.float32) / 255.0)
        y = tf.constant(np.asarray(batch["y"], dtype=np.int64))
        rows += int(x.shape[0])
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.matmul(x, w) + b))
        opt.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b], strict=True))
    if ctx.job_name == "chief":
        module = softmax_module(tf, w.numpy(), b.numpy())
        tf.saved_model.save(module, args.export_dir, signatures={"serving_default": module.serve})
    _record({"out": args.out}, ctx, rows=rows, shapes=sorted(shapes), grace_secs=args.grace_secs,
            model_dir=args.model_dir)


def stream_consumer(args, ctx):
    """Streaming: read DataFeed batches until the feed ends; mark when the first rows arrived."""
    from tfos import TFNode

    feed = TFNode.DataFeed(ctx.mgr, False)
    rows = 0
    while not feed.should_stop():
        rows += len(feed.next_batch(10))
        if rows and not os.path.exists(os.path.join(args["out"], f"started-{ctx.executor_id}")):
            open(os.path.join(args["out"], f"started-{ctx.executor_id}"), "w").close()
    _record(args, ctx, rows=rows)
