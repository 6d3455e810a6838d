"""InputMode.TENSORFLOW training throughput through tfos against the same main launched by hand.

Models (``--model``):

* ``mnist`` (default): a small Keras CNN on in-memory MNIST, global batch 128,
  MultiWorkerMirroredStrategy on 2 workers;
* ``cifar10``: the CIFAR-10 example's CNN on the shipped binary batches, the same way;
* ``criteo-ps``: the Criteo example's wide & deep model (hashed tokens, linear weights and 8-dim
  embeddings over 2^20 buckets) under TF2 ParameterServerStrategy: 1 ps + 2 workers, and the
  chief that TF2 needs to coordinate them (4 TF processes), steps scheduled by
  ``ClusterCoordinator`` over the real Criteo sample held in memory.

Each through ``tfos.run`` on a real Spark standalone cluster (one single-core Spark worker per
TF process, on 127.0.0.1) and as the same TF processes started by hand with ``TF_CONFIG`` and no
Spark, in the same run, alternating, best of ``--repeats``, examples/s over the epochs after the
first. The timing process (worker 0 and 1, or the chief) snapshots the CPU time of every process
on the host over the timed epochs, so each run also says where the CPU went (TF processes, the
prefork launcher, the executor JVMs and Python workers, the Spark daemons, the driver, other
load), with the load average.

    .venv/bin/python benchmarks/tf_mode_throughput.py [--model mnist|cifar10|criteo-ps] [--repeats 2]
        [--variants tfos,hand] [--steps 100] [--epochs 4]

Variants (``--variants``, comma-separated, run in that order each round):
``tfos`` (defaults), ``hand`` (by hand), ``tfos-fresh`` (a fresh interpreter per TF process
instead of the fork from the prefork launcher: ``run(..., release_port=False)`` takes that path,
the main releases the port), ``tfos-relay-off`` (``relay="off"``), ``hand-omp1`` (by hand with
``OMP_NUM_THREADS=1``, as Spark sets it for its Python workers), ``hand-setsid`` (by hand, each
TF process in a session of its own, as the tfos TF processes are in their Spark worker's session:
with the kernel's autogroup scheduling a session is a scheduling group), ``tfos-threads2`` /
``hand-threads2`` (TF intra/inter-op threads 2). Exits 0; the verdict line compares ``tfos``
with ``hand``. Besides examples/s each run prints the CPU the TF processes got over the timed
epochs and the examples per TF CPU-second: their efficiency, apart from the share of a loaded
host they were given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.tf_mode_mains import train  # noqa: E402
from tests.spark_standalone import StandaloneCluster, free_port, session_on  # noqa: E402

# name -> (how, tfos.run kwargs or None, extra env for the TF processes, extra main args)
VARIANTS: dict[str, tuple[str, dict, dict, dict]] = {
    "tfos": ("tfos", {}, {}, {}),
    "hand": ("hand", {}, {}, {}),
    "tfos-fresh": ("tfos", {"release_port": False}, {}, {}),
    "tfos-relay-off": ("tfos", {"relay": "off"}, {}, {}),
    "hand-omp1": ("hand", {}, {"OMP_NUM_THREADS": "1"}, {}),
    "hand-setsid": ("hand", {}, {}, {"setsid": True}),
    "tfos-threads2": ("tfos", {}, {}, {"intra": 2, "inter": 2}),
    "hand-threads2": ("hand", {}, {}, {"intra": 2, "inter": 2}),
}


# the TF cluster of each model: (job, index) per process, in tfos's role order (ps, chief, workers)
ROLES = {"mnist": [("worker", 0), ("worker", 1)], "cifar10": [("worker", 0), ("worker", 1)],
         "criteo-ps": [("ps", 0), ("chief", 0), ("worker", 0), ("worker", 1)]}


def timed_jobs(model: str) -> set[str]:
    """Whose processes time the training (and end by themselves): the chief under ParameterServerStrategy."""
    return {"chief"} if model == "criteo-ps" else {"worker"}


def run_hand(tf_args: dict, env_extra: dict, setsid: bool = False) -> None:
    roles = ROLES[tf_args["model"]]
    spec: dict[str, list[str]] = {}
    for job, _ in roles:
        spec.setdefault(job, []).append(f"127.0.0.1:{free_port()}")
    procs = []
    for job, index in roles:
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": spec, "task": {"type": job, "index": index}}),
                   TF_USE_LEGACY_KERAS="1", PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **env_extra)
        log = open(os.path.join(tf_args["out"], f"hand-{job}-{index}.log"), "wb")  # noqa: SIM115 - closed below
        procs.append((job, index, subprocess.Popen(
            [sys.executable, "-m", "benchmarks.tf_mode_mains", json.dumps(tf_args)], cwd=ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=setsid), log))
    codes = {}
    try:
        for job, index, proc, _ in procs:
            if job in timed_jobs(tf_args["model"]):
                codes[f"{job}:{index}"] = proc.wait(timeout=900)
    finally:
        for _, _, proc, log in procs:  # servers (ps, PS workers) serve until stopped
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
            log.close()
    failed = [name for name, code in codes.items() if code]
    if failed:
        job, index = failed[0].split(":")
        tail = open(os.path.join(tf_args["out"], f"hand-{job}-{index}.log"), errors="replace").read()[-3000:]
        raise RuntimeError(f"by-hand TF processes {failed} exited with {codes}:\n{tail}")


def run_tfos(sc, tf_args: dict, run_kwargs: dict) -> None:
    import tfos

    roles = ROLES[tf_args["model"]]
    num_ps = sum(1 for job, _ in roles if job == "ps")
    chief = "chief" if any(job == "chief" for job, _ in roles) else None
    tfos.run(sc, train, tf_args, len(roles), num_ps=num_ps, master_node=chief, **run_kwargs).shutdown(timeout=900)


def descendants(snap: dict[int, dict], roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, info in snap.items():
        children.setdefault(info["ppid"], []).append(pid)
    out, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_breakdown(results: list[dict], daemons: list[int]) -> dict[str, float]:
    """CPU cores used over the chief's timed window, by kind of process."""
    chief = next(r for r in results if "snaps" in r and r["snaps"])
    start, end = chief["snaps"]["start"], chief["snaps"]["end"]
    before = {int(k): v for k, v in start["procs"].items()}
    after = {int(k): v for k, v in end["procs"].items()}
    wall = chief["timed_secs"]
    tf_pids = {r["environment"]["pid"] for r in results}
    owner = chief["environment"]["env"].get("TFOS_OWNER_PID")
    jvms = {pid for pid, info in after.items() if info["name"].startswith("[executor JVM]")}
    ours = set()
    for pid in tf_pids:
        chain, p = [], pid
        while p in after and p > 1:
            chain.append(p)
            p = after[p]["ppid"]
        ours |= set(chain)
    our_jvms = {p for p in jvms if p in ours or str(p) == owner} or jvms
    launchers = {after[p]["ppid"] for p in tf_pids if p in after} & {
        p for p, info in after.items() if "tfos.cluster.prefork" in info["name"]}
    kinds: list[tuple[str, set[int]]] = [
        ("TF processes", tf_pids),
        ("prefork launchers", launchers),
        ("executor JVMs (this app)", our_jvms),
        ("Python workers (this app)", descendants(after, our_jvms) - our_jvms - tf_pids - launchers),
        ("Spark master/workers", descendants(after, set(daemons)) - descendants(after, jvms)),
        ("other executor JVMs + children", descendants(after, jvms - our_jvms)),
        ("driver (python + JVM)", descendants(after, {os.getpid()}) - tf_pids - descendants(after, set(daemons))),
    ]
    used: dict[str, float] = {}
    seen: set[int] = set()
    for name, pids in kinds:
        pids = pids - seen
        seen |= pids
        used[name] = sum(after[p]["cpu"] - before.get(p, {"cpu": 0.0})["cpu"] for p in pids if p in after) / wall
    used["other processes (load)"] = sum(
        info["cpu"] - before.get(p, {"cpu": 0.0})["cpu"] for p, info in after.items() if p not in seen) / wall
    busy = (end["host"][0] - start["host"][0]) / wall
    used["host busy (all)"] = busy
    used["load avg 1m (start/end)"] = (start["load"][0] + end["load"][0]) / 2
    return used


def one_run(name: str, sc, base_args: dict, daemons: list[int]) -> dict:
    how, run_kwargs, env_extra, main_args = VARIANTS[name]
    out = tempfile.mkdtemp(prefix=f"tfos-tfmode-{name}-")
    tf_args = dict(base_args, out=out, **main_args)
    load = os.getloadavg()
    begin = time.perf_counter()
    if how == "hand":
        run_hand(tf_args, env_extra, setsid=bool(main_args.get("setsid")))
    else:
        run_tfos(sc, tf_args, run_kwargs)
    wall = time.perf_counter() - begin
    results = [json.load(open(os.path.join(out, f"node-{job}-{index}.json"))) for job, index in ROLES[base_args["model"]]]
    shutil.rmtree(out, ignore_errors=True)
    timers = [r for r in results if "examples_per_s" in r]
    rate = min(r["examples_per_s"] for r in timers)
    row = {"variant": name, "examples_per_s": rate, "wall": wall, "load_before": load[0],
           "epoch_secs": timers[0]["epoch_secs"], "cpu": cpu_breakdown(results, daemons),
           "env": timers[0]["environment"], "tf_threads": timers[0]["tf_threads"],
           "threads_end": next(r for r in timers if r["snaps"])["snaps"]["end"]["self"]["status"].get("Threads"),
           "autogroups": sorted({r["environment"]["autogroup"].split()[0] for r in results})}
    row["per_tf_core"] = rate / max(row["cpu"]["TF processes"], 1e-9)
    # per timing TF process: on-CPU and runnable-but-waiting (run queue) cores, from its threads' schedstat
    row["sched"] = [(r["run_cores"], r["queue_cores"]) for r in sorted(timers, key=lambda r: r["task"])]
    epochs = " ".join(f"{s:.2f}" for s in row["epoch_secs"])
    print(f"{name:16s} {rate:8.0f} examples/s  (epochs {epochs} s; run {wall:.1f} s; load {load[0]:.1f}; "
          f"TF processes used {row['cpu']['TF processes']:.2f} cores = {row['per_tf_core']:.0f} examples per TF "
          f"CPU-s; TF threads {row['threads_end']}, OMP_NUM_THREADS={row['env']['env']['OMP_NUM_THREADS']}, "
          f"affinity {row['env']['affinity']}, autogroups {row['autogroups']}; on-CPU/run-queue cores per worker "
          f"{' '.join(f'{a:.2f}/{b:.2f}' for a, b in row['sched'])})", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=tuple(ROLES), default="mnist")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default="tfos,hand")
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch (global batch each)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is not timed")
    parser.add_argument("--batch", type=int, default=128, help="global batch")
    parser.add_argument("--examples", type=int, default=8192, help="in-memory examples per worker")
    parser.add_argument("--json", help="write every run's figures here")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    logging.basicConfig(level=logging.WARNING)
    base = {"model": args.model, "batch": args.batch, "steps": args.steps, "epochs": args.epochs,
            "examples": args.examples}
    rows: list[dict] = []
    nodes = len(ROLES[args.model])
    standalone = StandaloneCluster(workers=nodes).start()
    try:
        spark = session_on(standalone, "tfos-tf-mode-throughput", nodes)
        daemons = [p.pid for p in standalone._procs]  # noqa: SLF001 - to name their CPU use
        setup = ("Criteo wide & deep, ParameterServerStrategy: 1 ps + 2 workers + the chief coordinating"
                 if args.model == "criteo-ps" else f"{args.model} CNN, 2 workers, MultiWorkerMirroredStrategy")
        print(f"{setup}; global batch {args.batch}, {args.steps} steps x {args.epochs} epochs (first not timed); "
              f"{os.cpu_count()} CPUs", flush=True)
        for _ in range(args.repeats):
            for name in variants:
                rows.append(one_run(name, spark.sparkContext, base, daemons))
        spark.stop()
    finally:
        standalone.stop()
    best = {v: max(r["examples_per_s"] for r in rows if r["variant"] == v) for v in variants}
    print(f"\nbest of {args.repeats}, examples/s (load average 1m at the start of each run: "
          f"{min(r['load_before'] for r in rows):.1f}-{max(r['load_before'] for r in rows):.1f})")
    for v in variants:
        ratio = f"  {best[v] / best['hand']:.2f} of hand" if "hand" in best else ""
        print(f"  {v:16s} {best[v]:8.0f}{ratio}")
    print("\nexamples per CPU-second of the TF processes (their efficiency, whatever share of the host they got), "
          "best of the runs:")
    for v in variants:
        print(f"  {v:16s} {max(r['per_tf_core'] for r in rows if r['variant'] == v):8.0f}")
    print("\nper TF process, mean over the runs: on-CPU cores / cores runnable but waiting on a run queue:")
    for v in variants:
        mine = [r["sched"] for r in rows if r["variant"] == v]
        cells = [f"timer {i}: {sum(s[i][0] for s in mine) / len(mine):.2f} / {sum(s[i][1] for s in mine) / len(mine):.2f}"
                 for i in range(len(mine[0]))]
        print(f"  {v:16s} " + "   ".join(cells))
    print("\nCPU cores used during the timed epochs, mean over the runs of each variant:")
    keys = list(rows[0]["cpu"])
    print("  " + " " * 34 + "".join(f"{v[:14]:>15s}" for v in variants))
    for key in keys:
        means = [sum(r["cpu"][key] for r in rows if r["variant"] == v) / args.repeats for v in variants]
        print(f"  {key:34s}" + "".join(f"{m:15.2f}" for m in means))
    if "tfos" in best and "hand" in best:
        ratio = best["tfos"] / best["hand"]
        print(f"\ntfos / by hand = {ratio:.2f} (goal >= 0.95): {'met' if ratio >= 0.95 else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
