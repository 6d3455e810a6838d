"""Helpers for the example tests: run an example script as its own Spark driver, parse its metric lines."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(script: str | Path, *args: str, cwd: str | Path, timeout: float = 300,
                master: str | None = None) -> str:
    """Run ``python examples/<script> args...`` (a SparkContext of its own, local mode unless
    ``master``) in ``cwd``; returns stdout, or fails with the tail of its output."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if master:
        env["PYSPARK_SUBMIT_ARGS"] = f"--master {master} pyspark-shell"
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited with {proc.returncode}\n--- stdout ---\n"
                             f"{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-8000:]}")
    return proc.stdout


def submit_example(script: str | Path, *args: str, cwd: str | Path, master_url: str, executors: int,
                   timeout: float = 600, py_files: tuple[str, ...] = ()) -> tuple[str, str]:
    """Run ``spark-submit --master <standalone> --total-executor-cores N --executor-cores 1 examples/<script>``
    as a user does, in ``cwd``; returns (stdout, stderr), or fails with their tails."""
    from tests.spark_standalone import spark_conf, spark_home

    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    conf = spark_conf(master_url, executors)
    cmd = [os.path.join(spark_home(), "bin", "spark-submit"), "--master", conf.pop("spark.master"),
           "--total-executor-cores", conf.pop("spark.cores.max"), "--executor-cores", conf.pop("spark.executor.cores"),
           "--conf", "spark.dynamicAllocation.enabled=false"]
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    if py_files:
        cmd += ["--py-files", ",".join(str(EXAMPLES / f) for f in py_files)]
    proc = subprocess.run([*cmd, str(EXAMPLES / script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"spark-submit {script} {' '.join(args)} exited with {proc.returncode}\n--- stdout ---\n"
                             f"{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-8000:]}")
    return proc.stdout, proc.stderr


def checkpoint_step(model_dir: str | Path) -> int:
    """The optimizer's step counter (global step) in the latest Keras training checkpoint of ``model_dir``."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(model_dir))
    assert latest, f"no checkpoint in {model_dir}"
    names = [n for n, _ in tf.train.list_variables(latest)
             if n.split("/")[:2] in (["optimizer", "iter"], ["optimizer", "_iterations"])]
    assert names, f"no optimizer step counter in {latest}"
    return int(tf.train.load_variable(latest, names[0]))


def metric(stdout: str, name: str) -> float:
    """The number on the last ``<name>: <number>`` line of ``stdout``."""
    found = re.findall(rf"^{re.escape(name)}: ([-+]?\d+(?:\.\d+)?)", stdout, flags=re.MULTILINE)
    if not found:
        raise AssertionError(f"no '{name}: <number>' line in the output:\n{stdout[-3000:]}")
    return float(found[-1])


def last_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def load_module(path: str | Path) -> ModuleType:
    """Import an example module by file path without changing ``sys.path``."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"_example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
