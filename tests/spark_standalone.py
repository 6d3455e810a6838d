"""A real Spark standalone cluster on 127.0.0.1 (one master, single-core workers), for tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> str:
    import pyspark

    return os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__)


@dataclass
class StandaloneCluster:
    """Master plus ``workers`` workers of one core each, started with pip pyspark's ``spark-class``."""

    workers: int = 3
    worker_memory: str = "2g"
    master_url: str = ""
    web_url: str = ""
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tfos-spark-")))
    _procs: list[subprocess.Popen] = field(default_factory=list)

    def _spawn(self, name: str, *args: str) -> None:
        env = dict(os.environ, SPARK_HOME=spark_home(), PYSPARK_PYTHON=sys.executable,
                   SPARK_LOCAL_IP="127.0.0.1", SPARK_WORKER_DIR=str(self.log_dir / "work"))
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        cmd = [os.path.join(spark_home(), "bin", "spark-class"), *args]
        self._procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True))

    def start(self, timeout: float = 120.0) -> StandaloneCluster:
        port, web = free_port(), free_port()
        self.master_url, self.web_url = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{web}/json/"
        self._spawn("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                    "--webui-port", str(web))
        for i in range(self.workers):
            self._spawn(f"worker{i}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores",
                        "1", "--memory", self.worker_memory, "--webui-port", str(free_port()), self.master_url)
        deadline = time.monotonic() + timeout
        alive = 0
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.web_url, timeout=2) as resp:
                    state = json.load(resp)
                alive = sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")
                if alive >= self.workers:
                    return self
            except OSError:
                pass
            for p in self._procs:
                if p.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"a Spark daemon exited with {p.returncode}; logs in {self.log_dir}")
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"Spark standalone: {alive}/{self.workers} workers registered with {self.master_url} "
                           f"after {timeout:.0f}s; logs in {self.log_dir}")

    def stop(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self._procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self._procs.clear()


def spark_conf(master_url: str, executors: int) -> dict[str, str]:
    """Settings for an application of ``executors`` single-core executors on the standalone cluster."""
    return {
        "spark.master": master_url,
        "spark.executor.cores": "1",
        "spark.task.cpus": "1",
        "spark.cores.max": str(executors),
        "spark.executor.memory": "1g",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.pyspark.python": sys.executable,
        "spark.executorEnv.PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }


def session_on(cluster: StandaloneCluster, app: str, executors: int):
    """A SparkSession named ``app`` of ``executors`` single-core executors on ``cluster`` (logs at ERROR)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app)
    for key, value in spark_conf(cluster.master_url, executors).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def wait_for_executors(sc, count: int, timeout: float = 180.0, log_dir: Path | str | None = None) -> None:
    """Block until ``count`` executors have joined the application of ``sc``; TimeoutError after ``timeout``."""
    tracker = sc._jsc.sc().statusTracker()
    deadline = time.monotonic() + timeout
    while len(tracker.getExecutorInfos()) - 1 < count:  # the driver is listed too
        if time.monotonic() > deadline:
            where = f"; Spark logs in {log_dir}" if log_dir else ""
            raise TimeoutError(f"only {len(tracker.getExecutorInfos()) - 1} of {count} executors joined in "
                               f"{timeout:.0f}s{where}")
        time.sleep(0.2)
