"""``tfos doctor`` against the real test HDFS and an unreachable NameNode, Spark ``local[2]``, in a subprocess.

The reachable case gives the doctor only ``HADOOP_HOME`` (a real directory whose ``bin/hadoop``
prints the test HDFS's classpath and whose ``lib/native`` holds the real libhdfs.so) and
``JAVA_HOME``: CLASSPATH and LD_LIBRARY_PATH must come from :func:`tfos.io.hadoop_env.hadoop_env`,
and TensorFlow must then really reach HDFS through tensorflow-io on the driver and both executors.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

LIBHDFS_VARS = ("CLASSPATH", "LD_LIBRARY_PATH", "HADOOP_HOME", "HADOOP_PREFIX", "HADOOP_COMMON_HOME",
                "HADOOP_HDFS_HOME", "HADOOP_CONF_DIR", "ARROW_LIBHDFS_DIR")


def _plain_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LIBHDFS_VARS}
    env.update(PYSPARK_PYTHON=sys.executable, PYTHONUNBUFFERED="1", **extra)
    return env


def _doctor(*args: str, env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tfos.cli", "doctor", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def fake_hadoop_home(tmp_path: Path, hdfs_env: dict[str, str]) -> Path:
    """A Hadoop home with a bin/hadoop script printing the test HDFS classpath and the real libhdfs.so."""
    home = tmp_path / "hadoop"
    (home / "bin").mkdir(parents=True)
    (home / "lib" / "native").mkdir(parents=True)
    real = Path(hdfs_env["ARROW_LIBHDFS_DIR"]) / "libhdfs.so"
    assert real.is_file(), f"scripts/hdfs.sh env names no libhdfs.so: {real}"
    os.symlink(real, home / "lib" / "native" / "libhdfs.so")
    script = home / "bin" / "hadoop"
    script.write_text('#!/bin/sh\n[ "$1" = classpath ] || exit 1\n'
                      f"echo '{hdfs_env['CLASSPATH']}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return home


def test_doctor_reaches_real_hdfs_from_driver_and_executors(hdfs_url, hdfs_env, fake_hadoop_home):
    env = _plain_env(HADOOP_HOME=str(fake_hadoop_home), JAVA_HOME=hdfs_env["JAVA_HOME"])
    proc = _doctor("--master", "local[2]", "--executors", "2", "--hdfs", f"{hdfs_url}/tmp", "--json", env=env)
    assert proc.returncode == 0, f"doctor failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout)
    assert result["unreachable_from"] == [] and result["spark_error"] is None
    assert [r["label"] for r in result["reports"]] == ["driver", "executor task 0", "executor task 1"]
    for report in result["reports"]:
        assert report["python_reachable"] is True, report
        assert report["hadoop_home"] == str(fake_hadoop_home)
        assert {"CLASSPATH", "LD_LIBRARY_PATH", "HADOOP_HDFS_HOME"} <= set(report["env_set_by_tfos"])
        tf = report["tf"]
        assert tf["hdfs_registered"] is True and tf["reachable"] is True, tf
        assert tf["libhdfs"] == str(fake_hadoop_home / "lib" / "native" / "libhdfs.so")
        assert report["path"] == "tensorflow_io"
        assert report["advice"] == []


def test_doctor_unreachable_namenode_fails_naming_the_address():
    begin = time.monotonic()
    proc = _doctor("--master", "local[2]", "--executors", "1", "--hdfs", "hdfs://127.0.0.1:1/data",
                   env=_plain_env())
    elapsed = time.monotonic() - begin
    out = proc.stdout
    assert proc.returncode == 1, f"expected exit status 1:\n{out}\n{proc.stderr[-4000:]}"
    assert "result: hdfs://127.0.0.1:1/data is UNREACHABLE from driver, executor task 0" in out
    assert "127.0.0.1:1" in out and "Connection refused" in out
    assert out.count("to do: HDFS hdfs://127.0.0.1:1/data is unreachable from this host") == 2
    # without HADOOP_HOME the libhdfs prerequisites are listed as optional fixes
    assert "no HADOOP_HOME/HADOOP_PREFIX" in out
    assert "optional, for TensorFlow's own hdfs://: CLASSPATH is not set" in out
    assert elapsed < 240, f"an unreachable NameNode took {elapsed:.0f} s to report"


def test_doctor_driver_only_and_bad_url():
    proc = _doctor("--executors", "0", "--hdfs", "hdfs://127.0.0.1:1", "--timeout", "60", env=_plain_env())
    assert proc.returncode == 1 and "UNREACHABLE from driver" in proc.stdout, proc.stdout + proc.stderr
    bad = _doctor("--executors", "0", "--hdfs", "namenode:8020", env=_plain_env())
    assert bad.returncode == 2 and "--hdfs must be a URL" in bad.stderr


def test_doctor_exits_1_when_the_user_may_not_submit_to_the_queue(tmp_path):
    """A ResourceManager whose SECRET_Q ACL excludes the user (a fake RM: the test YARN's ACLs are open to all)."""
    from tests.test_yarn_queue_checks import acl_routes
    from tests.yarn_fixture import fake_resource_manager

    with fake_resource_manager(acl_routes()) as address:
        (tmp_path / "yarn-site.xml").write_text(
            "<configuration><property><name>yarn.resourcemanager.webapp.address</name>"
            f"<value>{address}</value></property></configuration>")
        env = _plain_env(HADOOP_CONF_DIR=str(tmp_path), HADOOP_USER_NAME="bob")
        refused = _doctor("--executors", "0", "--queue", "SECRET_Q", env=env)
        allowed = _doctor("--executors", "0", "--queue", "CPU_Q", "--json", env=env)
    assert refused.returncode == 1, refused.stdout + refused.stderr[-3000:]
    assert "submit as bob: REFUSED (ResourceManager" in refused.stdout
    assert "to do: bob may not submit to queue 'SECRET_Q'" in refused.stdout
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr[-3000:]
    queues = {q["name"]: q["submit"]["allowed"] for q in json.loads(allowed.stdout)["yarn"]["queues"]}
    assert queues == {"CPU_Q": True, "SECRET_Q": False}
