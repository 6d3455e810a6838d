"""pytest plugin: a real single-node HDFS (``scripts/hdfs.sh``) for tests marked ``hdfs``.

Enable with ``pytest_plugins = ["tests.hdfs_fixture"]`` in the top-level conftest.py.

* ``hdfs_url`` (session): ``hdfs://127.0.0.1:<port>``. Reuses a running instance, otherwise
  runs ``scripts/hdfs.sh start`` and stops it after the session. If HDFS cannot be started the
  test FAILS (errors at setup) with the script's output; it is never skipped.
* ``hdfs_env`` (session): environment for a subprocess that uses libhdfs (tensorflow-io,
  pyarrow): ``os.environ`` plus the exports of ``scripts/hdfs.sh env``.

Tests that use ``hdfs_url`` get the ``hdfs`` marker automatically (``-m "not hdfs"`` skips them).
``TFOS_HDFS_PORT`` and the other ``scripts/hdfs.sh`` settings apply.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "hdfs.sh"
START_TIMEOUT_S = int(os.environ.get("TFOS_HDFS_START_TIMEOUT", "120")) + 600  # + first-time download


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hdfs: needs the real single-node HDFS of scripts/hdfs.sh (hdfs_url)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "hdfs_url" in getattr(item, "fixturenames", ()) or "hdfs_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.hdfs)


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def _fail(what: str, proc: subprocess.CompletedProcess[str]) -> None:
    pytest.fail(f"scripts/hdfs.sh {what} failed with exit code {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}", pytrace=False)


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
    status = _script("status", timeout=60)
    started = False
    if status.returncode == 0:
        url = _url_from(status.stdout)
    else:
        t0 = time.monotonic()
        try:
            proc = _script("start", timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"scripts/hdfs.sh start did not finish in {START_TIMEOUT_S} s\n"
                        f"--- stdout ---\n{exc.stdout}\n--- stderr ---\n{exc.stderr}", pytrace=False)
        if proc.returncode != 0:
            _fail("start", proc)
        started = True
        url = _url_from(proc.stdout)
        print(f"\nhdfs_fixture: HDFS started at {url} in {time.monotonic() - t0:.1f} s")
    if not url:
        pytest.fail(f"scripts/hdfs.sh printed no hdfs:// URL:\n{status.stdout}", pytrace=False)
    try:
        yield url
    finally:
        if started:
            stop = _script("stop", timeout=120)
            if stop.returncode != 0:
                print(f"hdfs_fixture: scripts/hdfs.sh stop failed:\n{stop.stdout}\n{stop.stderr}")


@pytest.fixture(scope="session")
def hdfs_env(hdfs_url: str) -> dict[str, str]:
    """``os.environ`` plus the libhdfs exports of ``scripts/hdfs.sh env`` (for subprocesses)."""
    proc = subprocess.run(["bash", "-c", f'eval "$(bash "{SCRIPT}" env)" && env -0'], capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    if proc.returncode != 0:
        _fail("env", proc)
    env = dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)
    env["TFOS_HDFS_URL"] = hdfs_url
    return env
