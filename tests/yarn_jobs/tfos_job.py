"""A tfos job for the YARN tests, submitted with spark-submit (client or cluster deploy mode).

    tfos_job.py MODE [--nodes N] [--pid_dir DIR] [--max_wait S] [--hog_mb M]

MODE ``record``: every TF node prints ``TFOS_NODE_RECORD {json}`` (its interpreter, where tfos was
imported from, its GPUs and container) to its executor's stdout, and the job ends normally.
``raise``: worker:1's main raises, so the driver raises ``NodeFailure`` and the application fails.
``sleep``: every node writes ``DIR/<role>-<index>.json`` (its pid, its executor JVM's pid) and waits
up to S seconds, so a test can kill one. ``hog``: as ``sleep``, but worker:1 then allocates (and
touches) memory in 64 MB steps up to M MB (``--hog_mb``), past its container's limit, so that
YARN's physical-memory check kills the container. ``restart`` (with ``--max_restarts 1``): as ``sleep`` in
the first generation of nodes; the next generation's nodes (``ctx.restart_count`` 1) print
``TFOS_RESTARTED {json}`` and end at once, so the application succeeds after one restart. In every failing mode the driver prints ``TFOS_DETECTED {json}`` (wall-clock time,
node, message) before it re-raises.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import tfos


def main_fun(args, ctx):
    import socket

    node = f"{ctx.job_name}:{ctx.task_index}"
    record = {"node": node, "python": sys.executable, "prefix": sys.prefix, "tfos": tfos.__file__,
              "gpus": list(ctx.gpus), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "container": os.environ.get("CONTAINER_ID"), "host": socket.gethostname(), "pid": os.getpid(),
              "owner": int(os.environ.get("TFOS_OWNER_PID", "0"))}
    print("TFOS_NODE_RECORD " + json.dumps(record), flush=True)
    if args.mode == "raise" and node == "worker:1":
        raise ValueError("tfos-yarn-test: bad input in shard 1")
    if args.mode == "restart" and ctx.restart_count > 0:
        print("TFOS_RESTARTED " + json.dumps({"node": node, "restart_count": ctx.restart_count, "time": time.time(),
                                              "container": record["container"]}), flush=True)
        return
    if args.mode in ("sleep", "hog", "restart"):
        if args.pid_dir:
            path = os.path.join(args.pid_dir, f"{ctx.job_name}-{ctx.task_index}.json")
            with open(path + ".tmp", "w") as f:
                json.dump(record, f)
            os.replace(path + ".tmp", path)
        if args.mode == "hog" and node == "worker:1":
            hoard = []
            while len(hoard) * 64 < args.hog_mb:
                hoard.append(bytearray(b"\1" * (64 << 20)))  # written, so resident
                time.sleep(0.05)
            print(f"TFOS_HOG holding {len(hoard) * 64} MB", flush=True)
        time.sleep(args.max_wait)


def parse_args(argv):
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["record", "raise", "sleep", "hog", "restart"])
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--pid_dir", default="")
    p.add_argument("--max_wait", type=float, default=240)
    p.add_argument("--hog_mb", type=int, default=6144)
    p.add_argument("--max_restarts", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    from pyspark.sql import SparkSession

    args = parse_args(sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # as the examples
    spark = SparkSession.builder.appName(f"tfos-yarn-{args.mode}").getOrCreate()
    started = time.time()
    try:
        cluster = tfos.run(spark.sparkContext, main_fun, args, args.nodes, reservation_timeout=180,
                           max_restarts=args.max_restarts)
        cluster.shutdown(timeout=600)
    except Exception as exc:
        print("TFOS_DETECTED " + json.dumps({"time": time.time(), "type": type(exc).__name__,
                                             "node": getattr(exc, "node_name", None), "message": str(exc)}),
              flush=True)
        raise
    print(f"TFOS_JOB_DONE mode={args.mode} in {time.time() - started:.1f}s", flush=True)
    spark.stop()
