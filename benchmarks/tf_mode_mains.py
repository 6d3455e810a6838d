"""The training mains of ``benchmarks/tf_mode_throughput.py`` and its by-hand launcher.

``train(args, ctx)`` is run unchanged both through ``tfos.run`` (ctx: tfos's NodeContext) and
by hand as TF processes with ``TF_CONFIG`` and no Spark (``python -m benchmarks.tf_mode_mains
TFARGS_JSON`` per task, ctx: a stand-in with job_name/task_index). ``cnn_fit`` trains a small
Keras CNN on in-memory MNIST-shaped data (real MNIST) or the CIFAR-10 CNN (the example's model
on the shipped binary batches) under MultiWorkerMirroredStrategy; ``criteo_ps`` trains the
Criteo example's wide & deep model under ParameterServerStrategy. Each times every epoch and,
on the timing process, snapshots the CPU time of every process on the host at the start of the
second epoch and at the end of training (the timed window), so the driver can say where the CPU
went. Every process writes ``node-<job>-<index>.json`` to ``args['out']``.
"""

from __future__ import annotations

import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def proc_snapshot() -> dict[int, dict]:
    """{pid: {ppid, cpu (s, utime+stime), name (cmdline head)}} for every process on the host."""
    snap = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "CoarseGrainedExecutorBackend" in cmd:
            cmd = "[executor JVM] " + cmd
        fields = stat[stat.rfind(b")") + 2:].split()
        snap[int(entry)] = {"ppid": int(fields[1]), "cpu": (int(fields[11]) + int(fields[12])) / TICK,
                            "threads": int(fields[17]), "name": cmd[:400]}
    return snap


def schedstat() -> tuple[float, float]:
    """(on-CPU, waiting-on-a-run-queue) seconds summed over this process's threads (/proc schedstat)."""
    run = wait = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                fields = f.read().split()
        except OSError:
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return run / 1e9, wait / 1e9


def host_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the host from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / TICK, total / TICK


def _environment() -> dict:
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Threads", "Cpus_allowed_list", "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                status[key] = value.strip()
    try:
        with open("/proc/self/autogroup") as f:
            autogroup = f.read().strip()
    except OSError:
        autogroup = "n/a"
    return {"pid": os.getpid(), "ppid": os.getppid(), "nice": os.nice(0), "sid": os.getsid(0),
            "policy": os.sched_getscheduler(0),
            "autogroup": autogroup,
            "affinity": sorted(os.sched_getaffinity(0)), "status": status,
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                                                   "TF_NUM_INTEROP_THREADS", "TF_ENABLE_ONEDNN_OPTS",
                                                   "TF_USE_LEGACY_KERAS", "MALLOC_ARENA_MAX", "TFOS_NODE", "TFOS_OWNER_PID",
                                                   "PYTHONHASHSEED", "LD_PRELOAD")}}


def _mnist(limit: int):
    sys.path.insert(0, ROOT)
    from tests.cluster_mains import load_mnist

    images, labels = load_mnist("train", limit=limit)
    return (images.reshape(-1, 28, 28, 1) / 255.0).astype("float32"), labels.astype("int64")


def _cifar(limit: int):
    import numpy as np

    sys.path.insert(0, os.path.join(ROOT, "examples", "cifar10"))
    import cifar10_model

    data = os.path.join(ROOT, "examples", "cifar10", "data")
    images, labels = cifar10_model.read_cifar_binary([os.path.join(data, n) for n in cifar10_model.TRAIN_FILES])
    images = images[:, 4:28, 4:28, :].astype("float32")  # the central 24x24 crop the model sees
    images = (images - images.mean(axis=(1, 2, 3), keepdims=True)) / (images.std(axis=(1, 2, 3), keepdims=True) + 1e-6)
    reps = max(1, -(-limit // len(images)))
    return np.concatenate([images] * reps)[:limit], np.concatenate([labels] * reps)[:limit].astype("int64")


def _model(kind: str):
    import tensorflow as tf

    if kind == "cifar10":
        import cifar10_model

        return cifar10_model.build_model()
    layers = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10),
    ])
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def cnn_fit(args: dict, ctx) -> None:
    """Train ``args['model']`` ('mnist' or 'cifar10') for ``epochs`` x ``steps`` at global batch
    ``batch``; write per-epoch times (and the chief's process snapshots) to ``args['out']``."""
    import tensorflow as tf

    if hasattr(ctx, "release_port"):
        ctx.release_port()  # run(..., release_port=False): TF binds the port itself
    if args.get("intra"):
        tf.config.threading.set_intra_op_parallelism_threads(int(args["intra"]))
    if args.get("inter"):
        tf.config.threading.set_inter_op_parallelism_threads(int(args["inter"]))
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    batch, steps, epochs = int(args["batch"]), int(args["steps"]), int(args["epochs"])
    x, y = (_cifar if args["model"] == "cifar10" else _mnist)(int(args.get("examples", 8192)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=1).repeat()
          .batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(options))
    with strategy.scope():
        model = _model(args["model"])
    chief = ctx.task_index == 0
    marks: dict = {"begin": [], "end": []}
    snaps: dict = {}

    class Clock(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1 and chief:
                snaps["start"] = {"procs": proc_snapshot(), "host": host_cpu(), "load": os.getloadavg(),
                                  "self": _environment()}
            if epoch == 1:
                marks["sched_start"] = schedstat()
            marks["begin"].append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            marks["end"].append(time.perf_counter())

        def on_train_end(self, logs=None):
            marks["sched_end"] = schedstat()
            if chief:
                snaps["end"] = {"procs": proc_snapshot(), "host": host_cpu(), "load": os.getloadavg(),
                                "self": _environment()}

    env0 = _environment()
    model.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[Clock()])
    timed = marks["end"][-1] - marks["begin"][1]
    _write_node(args, ctx, {
        "epoch_secs": [e - b for b, e in zip(marks["begin"], marks["end"], strict=True)], "timed_secs": timed,
        "examples_per_s": batch * steps * (epochs - 1) / timed,
        "run_cores": (marks["sched_end"][0] - marks["sched_start"][0]) / timed,
        "queue_cores": (marks["sched_end"][1] - marks["sched_start"][1]) / timed,
        "environment": env0, "tf_threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                                            tf.config.threading.get_inter_op_parallelism_threads()],
        "snaps": snaps})


def _write_node(args: dict, ctx, extra: dict) -> None:
    """This process's result (or, for a serving ps/worker, its pid and environment) in ``args['out']``."""
    os.makedirs(args["out"], exist_ok=True)
    path = os.path.join(args["out"], f"node-{ctx.job_name}-{ctx.task_index}.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"job": ctx.job_name, "task": ctx.task_index, "environment": _environment(), **extra}, f)
    os.replace(path + ".tmp", path)


def _criteo(limit: int):
    sys.path.insert(0, os.path.join(ROOT, "examples", "criteo"))
    import criteo_data

    data = os.path.join(ROOT, "examples", "criteo", "data")
    batch = criteo_data.parse_lines(criteo_data.read_lines([os.path.join(data, "train_head1000.tsv")]))
    return batch.ints[:limit], batch.cats[:limit].astype(str), batch.label[:limit]


def criteo_ps(args: dict, ctx) -> None:
    """The Criteo example's wide & deep model (``--model_type dnn``: hashed tokens, a linear weight and
    an 8-dim embedding per token, two ReLU layers; Adagrad) under TF2 ParameterServerStrategy: the
    ps and the workers serve, the chief coordinates ``epochs`` x ``steps`` scheduled steps of
    ``batch`` examples each over the real Criteo sample (held in memory, repeated) and times the
    epochs after the first. Every process writes ``node-<job>-<index>.json``."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if ctx.job_name in ("ps", "worker"):
        server = tf.distribute.Server(resolver.cluster_spec(), job_name=ctx.job_name, task_index=ctx.task_index,
                                      protocol="grpc", start=True)
        _write_node(args, ctx, {})
        server.join()
        return
    ints, cats, label = _criteo(int(args.get("examples", 8192)))
    import criteo_model  # on sys.path once _criteo ran

    crosses = criteo_model.parse_crosses(criteo_model.DEFAULT_CROSSES)
    buckets, dim, batch = 1 << 20, 8, int(args["batch"])
    steps, epochs = int(args["steps"]), int(args["epochs"])
    strategy = tf.distribute.ParameterServerStrategy(resolver)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        weights = tf.Variable(tf.zeros([buckets]), name="linear_weights")
        bias = tf.Variable(-1.0986, name="linear_bias")  # log(0.25 / 0.75), as the example starts
        table = tf.Variable(tf.random.truncated_normal([buckets, dim], stddev=0.01, seed=1), name="embeddings")
        dense = [(tf.Variable(tf.keras.initializers.GlorotUniform(seed=i)([n_in, n_out])), tf.Variable(tf.zeros([n_out])))
                 for i, (n_in, n_out) in enumerate((((39 + len(crosses)) * dim, 64), (64, 32), (32, 1)))]
        optimizer = tf.keras.optimizers.Adagrad(0.05)
    variables = [weights, bias, table] + [v for layer in dense for v in layer]

    def dataset_fn(_context=None):
        ds = tf.data.Dataset.from_tensor_slices((ints, cats, label)).shuffle(len(label), seed=1).repeat()
        ds = ds.batch(batch, drop_remainder=True)
        return ds.map(lambda i, c, y: (tf.strings.to_hash_bucket_fast(criteo_model._tokens(i, c, crosses), buckets), y))

    per_worker = coordinator.create_per_worker_dataset(dataset_fn)
    iterator = iter(per_worker)

    @tf.function
    def step(it):
        def replica(ids, y):
            with tf.GradientTape() as tape:
                used = tf.gather(weights, ids)
                deep = tf.reshape(tf.gather(table, ids), [-1, ids.shape[1] * dim])
                for i, (w, b) in enumerate(dense):
                    deep = tf.matmul(deep, w) + b
                    if i < len(dense) - 1:
                        deep = tf.nn.relu(deep)
                logits = bias + tf.reduce_sum(used, axis=1) + deep[:, 0]
                loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return loss
        ids, y = next(it)
        return strategy.run(replica, args=(ids, y))

    marks, snaps = [], {}
    for epoch in range(epochs):
        if epoch == 1:
            snaps["start"] = {"procs": proc_snapshot(), "host": host_cpu(), "load": os.getloadavg(),
                              "self": _environment()}
            sched_start = schedstat()
        begin = time.perf_counter()
        for _ in range(steps):
            loss = coordinator.schedule(step, args=(iterator,))
        coordinator.join()
        marks.append((begin, time.perf_counter()))
    sched_end = schedstat()
    snaps["end"] = {"procs": proc_snapshot(), "host": host_cpu(), "load": os.getloadavg(), "self": _environment()}
    timed = marks[-1][1] - marks[1][0]
    _write_node(args, ctx, {
        "epoch_secs": [e - b for b, e in marks], "timed_secs": timed,
        "examples_per_s": batch * steps * (epochs - 1) / timed, "final_loss": float(loss.fetch()),
        "run_cores": (sched_end[0] - sched_start[0]) / timed, "queue_cores": (sched_end[1] - sched_start[1]) / timed,
        "tf_threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                       tf.config.threading.get_inter_op_parallelism_threads()], "snaps": snaps})


def train(args: dict, ctx) -> None:
    """The main of ``args['model']``: ``criteo_ps`` for 'criteo-ps', else ``cnn_fit``."""
    (criteo_ps if args["model"] == "criteo-ps" else cnn_fit)(args, ctx)


class HandContext:
    """What ``cnn_fit`` reads of tfos's NodeContext, for the by-hand processes."""

    def __init__(self):
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        self.job_name, self.task_index = task["type"], int(task["index"])


if __name__ == "__main__":
    train(json.loads(sys.argv[1]), HandContext())
