"""Mains for the chaos tests: real MNIST training that checkpoints every epoch and resumes.

Each TF process writes its pid to ``<out>/pid-<job>-<index>-gen<restart_count>`` as it starts,
so the test can SIGKILL it mid-training, and the step it resumed from in its result.
"""

from __future__ import annotations

import os

from tests.cluster_mains import load_mnist, write_result


def write_pid(args, ctx) -> None:
    path = os.path.join(args["out"], f"pid-{ctx.job_name}-{ctx.task_index}-gen{ctx.restart_count}")
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)


def mark_once(args, ctx, what: str) -> None:
    """``<out>/<what>-<job>-<index>-gen<restart_count>`` holding ``time.time()``, written the first time only."""
    import time

    path = os.path.join(args["out"], f"{what}-{ctx.job_name}-{ctx.task_index}-gen{ctx.restart_count}")
    if not os.path.exists(path):
        with open(path + ".tmp", "w") as f:
            f.write(repr(time.time()))
        os.replace(path + ".tmp", path)


def mnist_resuming_fit(args, ctx):
    """Keras fit under MultiWorkerMirroredStrategy, a checkpoint per epoch in ``model_dir``, resumed on restart."""
    import tensorflow as tf

    from tfos.training_checkpoint import TrainingCheckpoint

    write_pid(args, ctx)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    images, labels = load_mnist("train", limit=args.get("examples", 12000))
    x = (images.reshape(-1, 784) / 255.0).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, labels.astype("int64"))).shuffle(12000, seed=1).batch(64).repeat()
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(128, activation="relu", input_shape=(784,)),
                                     tf.keras.layers.Dense(10)])
        model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ckpt = TrainingCheckpoint(model, args["model_dir"], is_chief=ctx.worker_num == 0, worker_index=ctx.worker_num)
    initial_epoch = ckpt.restore()
    start_step = int(model.optimizer.iterations.numpy())
    model.fit(ds, epochs=args["epochs"], initial_epoch=initial_epoch, steps_per_epoch=args["steps_per_epoch"],
              callbacks=[ckpt.callback(), tf.keras.callbacks.LambdaCallback(
                  on_train_batch_end=lambda *_: mark_once(args, ctx, "first-step"))], verbose=0)
    if args.get("export_dir"):
        mark_once(args, ctx, "exporting")  # the test kills the chief now
        ckpt.export_saved_model(args["export_dir"])  # every worker takes part; closes the checkpoint
    else:
        ckpt.close()
    test_x, test_y = load_mnist("test")
    preds = model.predict((test_x.reshape(-1, 784) / 255.0).astype("float32"), verbose=0).argmax(axis=1)
    write_result(args, ctx, restart_count=ctx.restart_count, initial_epoch=initial_epoch, start_step=start_step,
                 final_step=int(model.optimizer.iterations.numpy()), test_accuracy=float((preds == test_y).mean()))


def feed_consumer(args, ctx):
    """InputMode.SPARK: count the rows of every epoch fed to this node; slow enough to be killed mid-feed."""
    import time

    write_pid(args, ctx)
    feed = ctx.get_data_feed()
    marker = os.path.join(args["out"], f"fed-{ctx.job_name}-{ctx.task_index}-gen{ctx.restart_count}")
    rows = 0
    while not feed.should_stop():
        batch = feed.next_batch(50)
        if batch:
            mark_once(args, ctx, "first-batch")
        rows += len(batch)
        if rows >= 500 and not os.path.exists(marker):
            open(marker, "w").close()  # mid-feed: the test kills now
        if ctx.restart_count == 0:
            time.sleep(args.get("sleep", 0.0))  # slower than the feed: the kill lands while train() feeds
    write_result(args, ctx, restart_count=ctx.restart_count, rows=rows)


def note_start(args, ctx):
    """Write when this node's main began (``time.time()``) and return."""
    import time

    write_pid(args, ctx)
    write_result(args, ctx, started=time.time(), restart_count=ctx.restart_count)


def hold_gil(args, ctx):
    """worker:0 sleeps ``args['secs']`` in a C call that keeps the GIL (libc ``sleep`` through
    ``ctypes.PyDLL``), so none of its Python threads, heartbeats included, runs; then both return."""
    import ctypes
    import time

    write_pid(args, ctx)
    if ctx.task_index == 0:
        mark_once(args, ctx, "gil")
        ctypes.PyDLL(None).sleep(int(args["secs"]))
    write_result(args, ctx, finished=time.time())
