"""``main_fun(args, ctx)`` functions for the relay, progress and stack tests (importable by executors)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time


def _write(args: dict, ctx, **values) -> None:
    path = os.path.join(args["out"], f"{ctx.job_name}-{ctx.task_index}.json")
    with open(path, "w") as f:
        json.dump(values, f)


def chatty(args, ctx):
    """One line on each channel: print, sys.stderr, a native write to fd 2, logging; worker 0 may flood."""
    name = f"{ctx.job_name}:{ctx.task_index}"
    print(f"stdout line from {name}")
    print(f"stderr line from {name}", file=sys.stderr)
    os.write(2, f"W0000 00:00:1.0 native.cc:1] native line from {name}\n".encode())
    logging.getLogger("user_main").warning("logging record from %s", name)
    logging.getLogger("user_main").info("info record from %s", name)
    flood = args.get("flood", 0) if ctx.task_index == 0 else 0
    started = time.monotonic()
    for i in range(flood):
        print(f"flood {i}")
    _write(args, ctx, flood_seconds=time.monotonic() - started)


def keras_progress(args, ctx):
    """A short Keras fit with tfos.ProgressCallback, slowed so the driver sees steps advance."""
    import numpy as np
    import tensorflow as tf

    import tfos

    class Slow(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(args.get("sleep", 0.05))

    x = np.random.default_rng(0).normal(size=(640, 8)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int64")
    model = tf.keras.Sequential([tf.keras.layers.Dense(8, activation="relu", input_shape=(8,)),
                                 tf.keras.layers.Dense(2)])
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=args.get("epochs", 4), verbose=0,
              callbacks=[tfos.ProgressCallback(ctx, batch_size=32), Slow()])


def stuck_forever_in_here(seconds: float) -> None:
    time.sleep(seconds)


def hang(args, ctx):
    """Never finishes on its own (the driver's shutdown times out)."""
    stuck_forever_in_here(args.get("seconds", 300))


def echo_feed(args, ctx):
    """InputMode.SPARK: reads whatever is fed; answers inference rows with themselves."""
    feed = ctx.get_data_feed(train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(10)
        if batch:
            feed.batch_results(batch)
