"""What a full garbage collection costs a process forked from one that imported TensorFlow, as the
TF processes are forked from the warm launcher (``tfos.cluster.prefork``): without and with
``gc.freeze()`` before the fork, side by side. The child reports the collection's CPU time, its
minor page faults (copy-on-write copies of the parent's pages) and its private dirty memory.

    .venv/bin/python benchmarks/fork_gc.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import time


def private_mb() -> float:
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:")) / 1024


def child_collect() -> dict:
    before, faults, cpu = private_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
    gc.collect()
    return {"collect_cpu_s": round(time.process_time() - cpu, 4),
            "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
            "private_mb_added": round(private_mb() - before, 1), "frozen": gc.get_freeze_count()}


def forked(freeze: bool) -> dict:
    if freeze:
        gc.freeze()
    else:
        gc.unfreeze()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, json.dumps(child_collect()).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = json.load(f)
    os.waitpid(pid, 0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args()
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow  # noqa: F401 - what the launcher holds

    gc.collect()
    for r in range(opts.rounds):
        for freeze in (False, True):
            print(json.dumps({"round": r + 1, "gc.freeze before fork": freeze, **forked(freeze)}), flush=True)


if __name__ == "__main__":
    main()
