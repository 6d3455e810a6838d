"""pytest plugin: the real single-host YARN (and HDFS) of ``scripts/hadoop.sh`` for tests marked ``yarn``.

Enable with ``pytest_plugins = ["tests.yarn_fixture"]`` (after ``tests.hdfs_fixture``).

``yarn_cluster`` (session) reuses a running HDFS + YARN, otherwise starts them
(``scripts/hadoop.sh start yarn``) and stops what it started after the session. If YARN cannot
start, the test FAILS with the script's output; it is never skipped. It yields a
:class:`YarnCluster`: ``conf_dir``, ``env``, ``rm_url``, ``rm_address``, ``hdfs_url``,
``spark_home``, and helpers ``spark_submit``, ``app_report``, ``wait_for_app``, ``app_attempts``,
``app_containers``, ``logs``, ``nodes``, ``node_label``, ``rest``.

Tests using it get the ``yarn`` marker automatically; mark them ``slow`` yourself.
The ports and the state directory follow ``scripts/hadoop.sh``'s settings (``TFOS_HDFS_PORT``,
``TFOS_YARN_PORT_BASE``, ``TFOS_YARN_WEB_PORT``, ...).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.hdfs_fixture import REPO, ensure_started, fail_with, run_script, script_env

FINAL_STATES = ("FINISHED", "FAILED", "KILLED")
# logAggregationStatus values after which no more logs arrive
AGGREGATION_DONE = ("SUCCEEDED", "FAILED", "TIME_OUT", "DISABLED")
APP_ID_RE = re.compile(r"application_\d+_\d+")
# "Container: container_1796179487701_0001_01_000001 on localhost_9160_1796179896105"
LOG_CONTAINER_RE = re.compile(r"^Container: (container_\S+) on (\S+?)_(\d+)(?:_\d+)?\s*$", re.M)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "yarn: needs the real single-host YARN of scripts/hadoop.sh (yarn_cluster)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "yarn_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.yarn)


def spark_home() -> str:
    """The pip pyspark package directory (it has ``bin/spark-submit`` and ``jars/``)."""
    import pyspark

    return str(Path(pyspark.__file__).resolve().parent)


def default_submit_conf(home: str) -> dict[str, str]:
    """The ``--conf`` settings every ``spark-submit --master yarn`` on this single host needs."""
    python = sys.executable
    return {
        # pyspark's jars are already on this (only) host: no 400 MB upload per submit
        "spark.yarn.jars": f"local:{home}/jars/*",
        # the driver (cluster mode: in the ApplicationMaster) and executors run this venv's python
        "spark.yarn.appMasterEnv.PYSPARK_PYTHON": python,
        "spark.executorEnv.PYSPARK_PYTHON": python,
        # a failed test application fails once, not twice (YARN's default is 2 attempts)
        "spark.yarn.maxAppAttempts": "1",
        # no Spark UI: its web server's start-up races under load (ConcurrentModificationException)
        "spark.ui.enabled": "false",
    }


@dataclass(frozen=True)
class ContainerPlacement:
    """Where one container of an application ran."""

    container_id: str
    node_id: str  # the NodeManager's id, e.g. "localhost:8050"
    node_label: str  # "GPU", "CPU" or "" (the default partition)


# Lines worth reading first in a failed submission's output: tfos's errors, Spark's task failures and lost
# executors, YARN's container kills.
_TROUBLE_RE = re.compile(r"ERROR|Error:|Exception|Traceback|FetchFailed|Lost executor|lost task|failed due to|"
                         r"killed|beyond physical memory|exit code|exitCode [1-9]|NodeFailure|FeedJobError")


class SparkSubmitResult(subprocess.CompletedProcess[str]):
    """``CompletedProcess`` of one spark-submit, with the YARN application id and the run time."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str, elapsed_s: float) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.elapsed_s = elapsed_s

    @property
    def app_id(self) -> str | None:
        """The application id spark-submit was given (None when it never reached YARN)."""
        match = APP_ID_RE.search(self.stderr) or APP_ID_RE.search(self.stdout)
        return match.group(0) if match else None

    @property
    def output(self) -> str:
        """Both streams, led by the lines that say what went wrong: a failed run's assertion message is
        often cut in the middle by whatever shows it, and the cause sits between the streams."""
        trouble = [line for line in (self.stdout + "\n" + self.stderr).splitlines() if _TROUBLE_RE.search(line)]
        lead = "\n".join(trouble[:40] + ([f"... {len(trouble) - 40} more"] if len(trouble) > 40 else []))
        return (f"--- what went wrong (exit {self.returncode}) ---\n{lead}\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}")


@dataclass
class YarnCluster:
    """A running single-host YARN + HDFS and helpers to submit to it and inspect applications."""

    conf_dir: str  # HADOOP_CONF_DIR for clients
    env: dict[str, str]  # os.environ + `hadoop.sh env` + SPARK_HOME, for spark-submit subprocesses
    rm_url: str  # ResourceManager web/REST, e.g. http://127.0.0.1:8088
    rm_address: str  # ResourceManager client RPC, e.g. 127.0.0.1:8032
    hdfs_url: str  # hdfs://127.0.0.1:<port>
    spark_home: str
    _logs: dict[str, str] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ REST
    def rest(self, path: str, timeout: float = 15) -> Any:
        """GET ``{rm_url}{path}`` and decode the JSON."""
        req = urllib.request.Request(f"{self.rm_url}{path}", headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode())

    def nodes(self) -> list[dict[str, Any]]:
        """The RUNNING NodeManagers as the RM REST API ``/ws/v1/cluster/nodes`` reports them."""
        nodes = (self.rest("/ws/v1/cluster/nodes").get("nodes") or {}).get("node") or []
        return [n for n in nodes if n.get("state") == "RUNNING"]

    def node_label(self, node_id: str) -> str:
        """The node label of a NodeManager id ("GPU", "CPU", "" for none)."""
        for node in self.nodes():
            if node["id"] == node_id:
                return ",".join(node.get("nodeLabels") or [])
        raise KeyError(f"no RUNNING NodeManager {node_id} in {[n['id'] for n in self.nodes()]}")

    def app_report(self, app_id: str) -> dict[str, Any]:
        """``/ws/v1/cluster/apps/{id}``: state, finalStatus, diagnostics, queue, logAggregationStatus, ..."""
        return self.rest(f"/ws/v1/cluster/apps/{app_id}")["app"]

    def wait_for_app(self, app_id: str, timeout: float = 300, states: Sequence[str] = FINAL_STATES) -> dict[str, Any]:
        """Poll the app report until its state is one of ``states``; fail naming the last state."""
        deadline = time.monotonic() + timeout
        report: dict[str, Any] = {}
        while time.monotonic() < deadline:
            report = self.app_report(app_id)
            if report.get("state") in states:
                return report
            time.sleep(1)
        pytest.fail(f"{app_id} not in {list(states)} after {timeout} s: state {report.get('state')}, "
                    f"diagnostics {report.get('diagnostics')!r}", pytrace=False)
        raise AssertionError  # unreachable

    def app_attempts(self, app_id: str) -> list[dict[str, Any]]:
        """``/ws/v1/cluster/apps/{id}/appattempts``: each attempt's AM container and node."""
        return (self.rest(f"/ws/v1/cluster/apps/{app_id}/appattempts").get("appAttempts") or {}).get("appAttempt") or []

    # ------------------------------------------------------------ logs
    def logs(self, app_id: str, timeout: float = 180) -> str:
        """The aggregated logs of a finished application (``hadoop.sh yarn-logs``), once aggregation is done."""
        if app_id in self._logs:
            return self._logs[app_id]
        deadline = time.monotonic() + timeout
        report = self.wait_for_app(app_id, timeout)
        while report.get("logAggregationStatus") not in AGGREGATION_DONE:
            if time.monotonic() >= deadline:
                pytest.fail(f"log aggregation of {app_id} still {report.get('logAggregationStatus')} after "
                            f"{timeout} s", pytrace=False)
            time.sleep(1)
            report = self.app_report(app_id)
        proc = run_script("yarn-logs", app_id, timeout=max(60.0, deadline - time.monotonic()))
        if proc.returncode != 0:
            fail_with(f"yarn-logs {app_id}", proc)
        self._logs[app_id] = proc.stdout
        return proc.stdout

    def app_containers(self, app_id: str) -> list[ContainerPlacement]:
        """Every container of a finished application with its NodeManager and that node's label.

        Taken from the aggregated logs (each container's log names its node) and the app attempts
        (the ApplicationMaster's container, even if it logged nothing).
        """
        ports = {n["id"].rsplit(":", 1)[1]: n for n in self.nodes()}
        found: dict[str, str] = {}
        for attempt in self.app_attempts(app_id):
            found[attempt["containerId"]] = attempt["nodeId"]
        for container_id, host, port in LOG_CONTAINER_RE.findall(self.logs(app_id)):
            found.setdefault(container_id, f"{host}:{port}")
        placements = []
        for container_id, node_id in sorted(found.items()):
            node = ports.get(node_id.rsplit(":", 1)[1])
            label = ",".join(node.get("nodeLabels") or []) if node else "?"
            placements.append(ContainerPlacement(container_id, node["id"] if node else node_id, label))
        return placements

    # ------------------------------------------------------------ submit
    def spark_submit(self, args: Sequence[str], timeout: float = 600, conf: Mapping[str, str] | None = None,
                     env: Mapping[str, str] | None = None) -> SparkSubmitResult:
        """Run ``spark-submit --master yarn <defaults> [--conf K=V for conf] ARGS`` with :attr:`env`.

        ``args`` carries ``--deploy-mode``, ``--queue``, the script and its arguments; its ``--conf``
        settings override the defaults (:func:`default_submit_conf`). On time-out the submit is
        killed, so is its YARN application, and the test fails with the output so far.
        """
        settings = {**default_submit_conf(self.spark_home), **(conf or {})}
        cmd = [str(Path(self.spark_home) / "bin" / "spark-submit"), "--master", "yarn"]
        for key, value in settings.items():
            cmd += ["--conf", f"{key}={value}"]
        cmd += list(args)
        run_env = {**self.env, **(env or {})}
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=run_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            app = APP_ID_RE.search(err or "")
            if app:
                run_script("yarn", "application", "-kill", app.group(0), timeout=120)
            pytest.fail(f"spark-submit did not finish in {timeout} s (application {app.group(0) if app else '-'} "
                        f"killed)\n{' '.join(cmd)}\n--- stdout ---\n{out[-5000:]}\n--- stderr ---\n{err[-10000:]}",
                        pytrace=False)
        return SparkSubmitResult(cmd, proc.returncode, out, err, time.monotonic() - t0)


@contextlib.contextmanager
def fake_resource_manager(routes: Mapping[str, Any]) -> Iterator[str]:
    """An in-process HTTP server answering the RM REST paths in ``routes`` (path -> JSON-able object, or a
    str sent as XML); a path is looked up with its query string first, then without. Yields ``host:port``."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = routes.get(self.path, routes.get(self.path.split("?", 1)[0]))
            xml = isinstance(body, str)
            self.send_response(404 if body is None else 200)
            self.send_header("Content-Type", "application/xml" if xml else "application/json")
            self.end_headers()
            self.wfile.write(body.encode() if xml else json.dumps(body or {}).encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _status_value(output: str, key: str) -> str:
    for line in output.splitlines():
        if line.startswith(f"{key}: "):
            return line.split(": ", 1)[1].strip()
    raise AssertionError(f"scripts/hadoop.sh status printed no '{key}:' line:\n{output}")


@pytest.fixture(scope="session")
def yarn_cluster(hdfs_url: str) -> Iterator[YarnCluster]:
    """A running HDFS + YARN (started, and later stopped, by this fixture if needed)."""
    started, _ = ensure_started("yarn")
    status = run_script("status", "yarn", timeout=120)
    if status.returncode != 0:
        fail_with("status yarn", status)
    env = script_env()
    home = spark_home()
    env.update(SPARK_HOME=home, PYSPARK_PYTHON=sys.executable, TFOS_HDFS_URL=hdfs_url)
    cluster = YarnCluster(conf_dir=env["HADOOP_CONF_DIR"], env=env, rm_url=_status_value(status.stdout, "yarn-web"),
                          rm_address=_status_value(status.stdout, "yarn-rm"), hdfs_url=hdfs_url, spark_home=home)
    try:
        cluster.rest("/ws/v1/cluster/info")
    except (urllib.error.URLError, OSError) as exc:
        pytest.fail(f"the ResourceManager REST API {cluster.rm_url} is unreachable: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        if started:
            stop = run_script("stop", "yarn", timeout=180)
            if stop.returncode != 0:
                print(f"yarn_fixture: scripts/hadoop.sh stop yarn failed:\n{stop.stdout}\n{stop.stderr}")
