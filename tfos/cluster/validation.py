"""Up-front checks of a cluster request against the Spark application, with messages that say what to change."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

logger = logging.getLogger(__name__)

_LOCAL_MASTER = re.compile(r"^local(?:\[(\*|\d+)(?:,\s*\d+)?\])?$")


class ClusterConfigError(ValueError):
    """The requested TF cluster cannot run on this Spark application as configured."""


def validate_arguments(main_fun: Any, num_executors: Any, num_ps: Any, reservation_timeout: Any) -> None:
    if not callable(main_fun):
        raise ClusterConfigError(f"main_fun must be a function main_fun(args, ctx), got {type(main_fun).__name__}")
    if not isinstance(num_executors, int) or isinstance(num_executors, bool) or num_executors < 1:
        raise ClusterConfigError(f"num_executors must be a positive int, got {num_executors!r}")
    if not isinstance(num_ps, int) or isinstance(num_ps, bool) or num_ps < 0:
        raise ClusterConfigError(f"num_ps must be an int >= 0, got {num_ps!r}")
    if not isinstance(reservation_timeout, int | float) or reservation_timeout <= 0:
        raise ClusterConfigError(f"reservation_timeout must be a positive number of seconds, got "
                                 f"{reservation_timeout!r}")


def local_slots(master: str) -> int | None:
    """Task slots of a ``local[N]`` master, or None when the master is not plain local mode."""
    match = _LOCAL_MASTER.match(master.strip())
    if not match:
        return None
    n = match.group(1)
    if n is None:
        return 1
    return (os.cpu_count() or 1) if n == "*" else int(n)


def _conf_int(conf: Any, key: str, default: int) -> int:
    value = conf.get(key, None)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ClusterConfigError(f"{key}={value!r} is not an integer") from exc


def _executor_count(sc: Any) -> int:
    """Executors registered with the application right now (the driver is listed too)."""
    return max(len(sc._jsc.sc().statusTracker().getExecutorInfos()) - 1, 0)


def validate_spark(sc: Any, spark_tasks: int, wait_secs: float = 60.0) -> None:
    """Check that ``spark_tasks`` start tasks can run at once, one per single-core executor."""
    conf = sc.getConf()
    master = sc.master
    task_cpus = _conf_int(conf, "spark.task.cpus", 1)
    slots = local_slots(master)
    if slots is not None:
        if slots // task_cpus < spark_tasks:
            raise ClusterConfigError(
                f"master {master!r} runs {slots // task_cpus} task(s) at a time but the TF cluster needs "
                f"{spark_tasks} nodes running together; use --master local[{spark_tasks * task_cpus}] or lower "
                f"num_executors")
        return
    if str(conf.get("spark.dynamicAllocation.enabled", "false")).lower() == "true":
        raise ClusterConfigError(
            "spark.dynamicAllocation.enabled=true: a TF cluster needs a fixed set of executors; submit with "
            "--conf spark.dynamicAllocation.enabled=false and --num-executors N")
    exec_cores = conf.get("spark.executor.cores", None)
    if exec_cores is not None and int(exec_cores) != task_cpus:
        raise ClusterConfigError(
            f"spark.executor.cores={exec_cores} but spark.task.cpus={task_cpus}: tfos runs one TF node per "
            f"executor, so each executor must run exactly one task at a time; set --executor-cores "
            f"{task_cpus} (or spark.task.cpus={exec_cores})")
    on_yarn = master.startswith("yarn")
    if on_yarn:
        from tfos.cluster import yarn

        problem = yarn.check_request(sc, spark_tasks)
        if problem:
            raise ClusterConfigError(problem)
    deadline = time.monotonic() + wait_secs
    next_note = time.monotonic() + 10.0
    while True:
        executors = _executor_count(sc)
        if executors >= spark_tasks or time.monotonic() >= deadline:
            break
        if time.monotonic() >= next_note:
            why = ""
            if on_yarn:
                try:
                    why = yarn.explain_waiting(sc, spark_tasks, executors)
                except Exception as exc:  # noqa: BLE001 - an explanation must never break the wait
                    why = f"(the ResourceManager could not say: {exc})"
            logger.info("waiting up to %.0fs more for %d executors to join (%d so far)%s",
                        deadline - time.monotonic(), spark_tasks, executors, f"; {why}" if why else "")
            next_note += 10.0
        time.sleep(0.2)  # executors register with the driver asynchronously after start-up
    if executors < spark_tasks:
        why = yarn.explain_missing(sc) if on_yarn else ""
        raise ClusterConfigError(
            f"the TF cluster needs {spark_tasks} executors but only {executors} joined this application "
            f"within {wait_secs:.0f}s; submit with --num-executors {spark_tasks} (YARN/Kubernetes) or "
            f"--total-executor-cores {spark_tasks * task_cpus} with --executor-cores {task_cpus} (standalone), "
            f"and check that the cluster/queue has room for them" + (f" ({why})" if why else ""))
    total_cores = sc.defaultParallelism
    if exec_cores is None and total_cores > executors * task_cpus:
        raise ClusterConfigError(
            f"executors have more cores than spark.task.cpus={task_cpus} ({total_cores} cores over {executors} "
            f"executors), so two TF nodes could share one executor; set --executor-cores {task_cpus}")


def validate_spark_feed(sc: Any, spark_tasks: int) -> None:
    """InputMode.SPARK: every executor of the application must host a TF node.

    A feed task may run on any executor; on one without a TF node it has nothing to feed, so
    spare executors would make feeds fail at random. (Executors still registering are not seen.)
    """
    if local_slots(sc.master) is not None:
        return
    executors = _executor_count(sc)
    if executors > spark_tasks:
        raise ClusterConfigError(
            f"InputMode.SPARK feeds each TF node from a Spark task on its own executor, but this application has "
            f"{executors} executors for {spark_tasks} TF node(s) on executors, so feed tasks could land on an "
            f"executor without a node; submit with --num-executors {spark_tasks} (YARN/Kubernetes) or "
            f"--total-executor-cores {spark_tasks} (standalone), or start {executors} nodes")
