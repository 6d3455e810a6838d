"""pytest plugin: the real single-node HDFS of ``scripts/hadoop.sh`` for tests marked ``hdfs``.

Enable with ``pytest_plugins = ["tests.hdfs_fixture"]`` in the top-level conftest.py.

* ``hdfs_url`` (session): ``hdfs://127.0.0.1:<port>``. Reuses a running instance, otherwise
  runs ``scripts/hadoop.sh start hdfs`` and stops it after the session. If HDFS cannot be started
  the test FAILS (errors at setup) with the script's output; it is never skipped.
* ``hdfs_env`` (session): environment for a subprocess that uses libhdfs (tensorflow-io,
  pyarrow): ``os.environ`` plus the exports of ``scripts/hadoop.sh env``.

Tests that use ``hdfs_url`` get the ``hdfs`` marker automatically (``-m "not hdfs"`` skips them).
``TFOS_HDFS_PORT`` and the other ``scripts/hadoop.sh`` settings apply.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "hadoop.sh"
# every wait inside the script is bounded by TFOS_HADOOP_START_TIMEOUT; + the first-time download
START_TIMEOUT_S = 4 * int(os.environ.get("TFOS_HADOOP_START_TIMEOUT", os.environ.get("TFOS_HDFS_START_TIMEOUT", "120"))) + 600


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hdfs: needs the real single-node HDFS of scripts/hadoop.sh (hdfs_url)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "hdfs_url" in getattr(item, "fixturenames", ()) or "hdfs_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.hdfs)


def run_script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/hadoop.sh ARGS`` from the repository root, capturing its output."""
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def fail_with(what: str, proc: subprocess.CompletedProcess[str] | subprocess.TimeoutExpired) -> None:
    """Fail the test (no traceback) with the script's exit status and full output."""
    if isinstance(proc, subprocess.TimeoutExpired):
        head = f"scripts/hadoop.sh {what} did not finish in {proc.timeout} s"
        out, err = proc.stdout, proc.stderr
    else:
        head = f"scripts/hadoop.sh {what} failed with exit code {proc.returncode}"
        out, err = proc.stdout, proc.stderr
    as_text = [x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (out, err)]
    pytest.fail(f"{head}\n--- stdout ---\n{as_text[0]}\n--- stderr ---\n{as_text[1]}", pytrace=False)


def ensure_started(part: str) -> tuple[bool, subprocess.CompletedProcess[str]]:
    """Start ``part`` (hdfs or yarn) unless it is up; returns (started here, the status/start run)."""
    status = run_script("status", part, timeout=120)
    if status.returncode == 0:
        return False, status
    t0 = time.monotonic()
    try:
        proc = run_script("start", part, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        fail_with(f"start {part}", exc)
        raise  # unreachable: pytest.fail raises
    if proc.returncode != 0:
        fail_with(f"start {part}", proc)
    print(f"\nhadoop.sh: {part} started in {time.monotonic() - t0:.1f} s")
    return True, proc


def script_env() -> dict[str, str]:
    """``os.environ`` plus the ``export`` lines of ``scripts/hadoop.sh env``."""
    proc = subprocess.run(["bash", "-c", f'eval "$(bash "{SCRIPT}" env)" && env -0'], capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    if proc.returncode != 0:
        fail_with("env", proc)
    return dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)


def _url_from(output: str) -> str | None:
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("url: "):
            line = line[5:]
        if line.startswith("hdfs://"):
            return line
    return None


@pytest.fixture(scope="session")
def hdfs_url() -> Iterator[str]:
    """URL of a running single-node HDFS; started (and later stopped) by this fixture if needed."""
    started, proc = ensure_started("hdfs")
    url = _url_from(proc.stdout)
    if not url:
        pytest.fail(f"scripts/hadoop.sh printed no hdfs:// URL:\n{proc.stdout}", pytrace=False)
    try:
        yield url
    finally:
        if started:
            stop = run_script("stop", timeout=180)
            if stop.returncode != 0:
                print(f"hdfs_fixture: scripts/hadoop.sh stop failed:\n{stop.stdout}\n{stop.stderr}")


@pytest.fixture(scope="session")
def hdfs_env(hdfs_url: str) -> dict[str, str]:
    """``os.environ`` plus the libhdfs exports of ``scripts/hadoop.sh env`` (for subprocesses)."""
    env = script_env()
    env["TFOS_HDFS_URL"] = hdfs_url
    return env
