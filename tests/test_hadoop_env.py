"""hadoop_env: the libhdfs environment computed from HADOOP_HOME, on real (small) directories.

Each test builds a Hadoop home with an executable ``bin/hadoop`` shell script, jar files, a
``lib/native/libhdfs.so`` and a Java home with ``lib/server/libjvm.so`` (empty files: only
their locations matter here; tests/test_cli_doctor.py loads the real libraries).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tfos.io.hadoop_env import (
    expand_classpath,
    find_java_home,
    hadoop_classpath,
    hadoop_env,
    libhdfs_path,
    libhdfs_problems,
    libjvm_path,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def java_home(tmp_path: Path) -> Path:
    home = tmp_path / "jdk"
    _touch(home / "lib" / "server" / "libjvm.so")
    _script(home / "bin" / "java", "exit 0\n")
    return home


@pytest.fixture
def hadoop(tmp_path: Path) -> Path:
    """A Hadoop home whose bin/hadoop records its arguments and prints conf dir + a wildcard entry."""
    home = tmp_path / "hadoop"
    for name in ("hadoop-common-3.3.6.jar", "hadoop-hdfs-3.3.6.jar"):
        _touch(home / "share" / "hadoop" / "common" / name)
    _touch(home / "share" / "hadoop" / "common" / "lib" / "guava-27.0-jre.jar")
    _touch(home / "share" / "hadoop" / "common" / "lib" / "README.txt")
    (home / "etc" / "hadoop").mkdir(parents=True)
    _touch(home / "lib" / "native" / "libhdfs.so")
    _script(home / "bin" / "hadoop",
            f'echo "$@" > "{home}/args.txt"\n'
            'if [ "$1" = classpath ]; then\n'
            f'  echo "{home}/etc/hadoop:{home}/share/hadoop/common/*:{home}/share/hadoop/common/lib/*"\n'
            "else\n  exit 1\nfi\n")
    return home


def _base_env(java_home: Path, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "JAVA_HOME": str(java_home), **extra}


def test_classpath_from_hadoop_classpath_glob_and_library_path(hadoop: Path, java_home: Path) -> None:
    env = _base_env(java_home, HADOOP_HOME=str(hadoop), LD_LIBRARY_PATH="/opt/existing")
    out = hadoop_env(env)
    assert (hadoop / "args.txt").read_text().split() == ["classpath", "--glob"]
    common = hadoop / "share" / "hadoop" / "common"
    assert out["CLASSPATH"].split(os.pathsep) == [
        str(hadoop / "etc" / "hadoop"),
        str(common / "hadoop-common-3.3.6.jar"), str(common / "hadoop-hdfs-3.3.6.jar"),
        str(common / "lib" / "guava-27.0-jre.jar"),  # wildcards expanded to jars only: libhdfs does not expand them
    ]
    assert out["LD_LIBRARY_PATH"].split(os.pathsep) == [
        "/opt/existing", str(java_home / "lib" / "server"), str(hadoop / "lib" / "native")]
    assert out["HADOOP_HDFS_HOME"] == str(hadoop)
    assert out["ARROW_LIBHDFS_DIR"] == str(hadoop / "lib" / "native")
    # applying the result again changes nothing
    env.update(out)
    assert hadoop_env(env) == {}
    assert libhdfs_problems(env) == []


def test_existing_classpath_is_kept_and_wildcards_expanded(hadoop: Path, java_home: Path) -> None:
    env = _base_env(java_home, HADOOP_HOME=str(hadoop), CLASSPATH="/etc/hadoop/conf:/x/y.jar")
    assert "CLASSPATH" not in hadoop_env(env)
    assert not (hadoop / "args.txt").exists()  # bin/hadoop not run when CLASSPATH is set
    lib = hadoop / "share" / "hadoop" / "common" / "lib"
    env["CLASSPATH"] = f"/etc/hadoop/conf:{lib}/*"  # what a YARN container gets
    assert hadoop_env(env)["CLASSPATH"] == f"/etc/hadoop/conf:{lib}/guava-27.0-jre.jar"
    assert expand_classpath(f"{lib}/*:{lib}/*") == f"{lib}/guava-27.0-jre.jar"


def test_hadoop_prefix_and_failing_script_falls_back_to_share_jars(hadoop: Path, java_home: Path) -> None:
    _script(hadoop / "bin" / "hadoop", 'echo "no JAVA" >&2\nexit 3\n')
    out = hadoop_env(_base_env(java_home, HADOOP_PREFIX=str(hadoop)))
    entries = out["CLASSPATH"].split(os.pathsep)
    assert entries[0] == str(hadoop / "etc" / "hadoop")
    assert [os.path.basename(e) for e in entries[1:]] == [
        "hadoop-common-3.3.6.jar", "hadoop-hdfs-3.3.6.jar", "guava-27.0-jre.jar"]
    assert hadoop_classpath(str(hadoop / "nowhere"), {}) is None


def test_java_found_on_path_when_java_home_unset(hadoop: Path, java_home: Path, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(java_home / "bin" / "java", bindir / "java")  # like /usr/bin/java -> alternatives -> JDK
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HADOOP_HOME": str(hadoop)}
    assert find_java_home(env) == str(java_home)
    assert libjvm_path(env) == str(java_home / "lib" / "server" / "libjvm.so")
    assert str(java_home / "lib" / "server") in hadoop_env(env)["LD_LIBRARY_PATH"].split(os.pathsep)


def test_jdk8_layout_and_jre_java(tmp_path: Path, hadoop: Path) -> None:
    jdk8 = tmp_path / "jdk8"
    _touch(jdk8 / "jre" / "lib" / "amd64" / "server" / "libjvm.so")
    _script(jdk8 / "jre" / "bin" / "java", "exit 0\n")
    env = {"PATH": f"{jdk8 / 'jre' / 'bin'}:/bin", "HADOOP_HOME": str(hadoop)}
    assert find_java_home(env) == str(jdk8)
    assert libjvm_path(env) == str(jdk8 / "jre" / "lib" / "amd64" / "server" / "libjvm.so")


def test_nothing_without_hadoop_home_or_when_disabled(hadoop: Path, java_home: Path, tmp_path: Path) -> None:
    assert hadoop_env(_base_env(java_home)) == {}
    assert hadoop_env(_base_env(java_home, HADOOP_HOME=str(tmp_path / "missing"))) == {}
    assert hadoop_env(_base_env(java_home, HADOOP_HOME=str(hadoop), TFOS_HADOOP_ENV="0")) == {}


def test_libhdfs_search_order_and_problems(hadoop: Path, java_home: Path, tmp_path: Path) -> None:
    elsewhere = _touch(tmp_path / "hdfs-home" / "lib" / "native" / "libhdfs.so")
    env = _base_env(java_home, HADOOP_HOME=str(hadoop), HADOOP_HDFS_HOME=str(tmp_path / "hdfs-home"))
    assert libhdfs_path(env) == str(elsewhere)  # HADOOP_HDFS_HOME first, as tensorflow-io looks there first
    assert "HADOOP_HDFS_HOME" not in hadoop_env(env)
    on_ld_path = _touch(tmp_path / "ld" / "libhdfs.so")
    assert libhdfs_path({"LD_LIBRARY_PATH": f"/nope:{on_ld_path.parent}"}) == str(on_ld_path)

    problems = libhdfs_problems({"PATH": "/nonexistent"})
    assert len(problems) == 3
    assert "CLASSPATH is not set" in problems[0] and "HADOOP_HOME" in problems[0]
    assert "libhdfs.so not found" in problems[1]
    assert "libjvm.so not found" in problems[2] and "JAVA_HOME" in problems[2]
    wildcard = libhdfs_problems(dict(env, CLASSPATH="/etc/hadoop:/jars/*"))
    assert any("wildcard" in p for p in wildcard)


def test_hadoop_conf_that_spark_ships_into_a_yarn_container(tmp_path):
    from tfos.io.hadoop_env import SPARK_SHIPPED_CONF, shipped_hadoop_conf

    conf = tmp_path / SPARK_SHIPPED_CONF
    conf.mkdir(parents=True)
    (conf / "core-site.xml").write_text("<configuration><property><name>fs.defaultFS</name>"
                                        "<value>hdfs://nn.example:8020</value></property></configuration>")
    assert shipped_hadoop_conf({}, str(tmp_path)) == {"fs.defaultFS": "hdfs://nn.example:8020"}
    assert shipped_hadoop_conf({"HADOOP_CONF_DIR": "/etc/hadoop/conf"}, str(tmp_path)) == {}  # set: it wins
    assert shipped_hadoop_conf({}, str(tmp_path / "elsewhere")) == {}
