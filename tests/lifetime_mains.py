"""``main_fun``s for the process-lifetime tests: each records where its TF process sits in the process tree."""

from __future__ import annotations

import json
import os
import time


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def record_and_wait(args, ctx):
    """Write this TF process's pid, session, owner and children, then wait (bounded) for ``args['release']``."""
    deadline = time.time() + args.get("max_wait", 120)
    info = {"pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0), "pgid": os.getpgid(0),
            "owner": int(os.environ.get("TFOS_OWNER_PID", "0")), "node": f"{ctx.job_name}:{ctx.task_index}"}
    if ctx.tensorboard_url:  # give TensorBoard's guard a moment to exec, then record it
        while time.time() < deadline and not _children(os.getpid()):
            time.sleep(0.1)
        info["children"] = _children(os.getpid())
    path = os.path.join(args["out"], f"{ctx.job_name}-{ctx.task_index}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(info, f)
    os.replace(path + ".tmp", path)
    while not os.path.exists(args.get("release", "/nonexistent")) and time.time() < deadline:
        time.sleep(0.2)
