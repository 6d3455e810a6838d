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
