"""The environment a process needs for libhdfs (TensorFlow's ``hdfs://`` through tensorflow-io, pyarrow).

libhdfs starts a JVM inside the process, so that process needs

* ``CLASSPATH`` with the Hadoop jars *expanded* (JNI does not expand ``dir/*`` wildcards) and the
  Hadoop configuration directory: ``$HADOOP_HOME/bin/hadoop classpath --glob``;
* ``libjvm.so`` and ``libhdfs.so`` loadable: ``LD_LIBRARY_PATH`` with the JVM's ``lib/server``
  directory and ``$HADOOP_HOME/lib/native``; tensorflow-io also looks in
  ``$HADOOP_HDFS_HOME/lib/native``.

:func:`hadoop_env` computes these from an environment that has ``HADOOP_HOME`` (or
``HADOOP_PREFIX``, ``HADOOP_COMMON_HOME``); tfos applies it to every TF process it starts
(``TFOS_HADOOP_ENV=0`` turns that off). ``LD_LIBRARY_PATH`` is read once when a process starts,
so a process that learns it later (a forked TF process) calls :func:`preload_libhdfs`, which
loads ``libjvm.so`` and ``libhdfs.so`` by path before tensorflow-io looks for them.

Nothing here imports TensorFlow; the functions have no state beyond what they are given and the
file system they look at.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping

logger = logging.getLogger(__name__)

__all__ = ["find_java_home", "hadoop_classpath", "hadoop_env", "hadoop_home", "libhdfs_path", "libhdfs_problems",
           "libjvm_path", "preload_libhdfs"]

HOME_VARS = ("HADOOP_HOME", "HADOOP_PREFIX", "HADOOP_COMMON_HOME")
_JVM_SUBDIRS = ("lib/server", "jre/lib/server", "lib/amd64/server", "jre/lib/amd64/server",
                "lib/aarch64/server", "jre/lib/aarch64/server", "lib/ppc64le/server", "jre/lib/ppc64le/server")
_JAR_DIRS = ("share/hadoop/common", "share/hadoop/common/lib", "share/hadoop/hdfs", "share/hadoop/hdfs/lib")


def _paths(value: str | None) -> list[str]:
    return [p for p in (value or "").split(os.pathsep) if p]


def hadoop_home(environ: Mapping[str, str]) -> str | None:
    """The Hadoop installation named by ``HADOOP_HOME``, ``HADOOP_PREFIX`` or ``HADOOP_COMMON_HOME``."""
    for var in HOME_VARS:
        home = environ.get(var)
        if home and os.path.isdir(home):
            return home
    return None


def find_java_home(environ: Mapping[str, str]) -> str | None:
    """``JAVA_HOME`` when it holds a JVM, else the installation of ``java`` on ``PATH`` (links resolved)."""
    home = environ.get("JAVA_HOME")
    if home and _jvm_in(home):
        return home
    java = shutil.which("java", path=environ.get("PATH", os.defpath))
    if not java:
        return None
    home = os.path.dirname(os.path.dirname(os.path.realpath(java)))
    if os.path.basename(home) == "jre" and _jvm_in(os.path.dirname(home)):
        return os.path.dirname(home)
    return home if _jvm_in(home) else None


def _jvm_in(java_home: str) -> str | None:
    for sub in _JVM_SUBDIRS:
        path = os.path.join(java_home, sub, "libjvm.so")
        if os.path.isfile(path):
            return path
    return None


def libjvm_path(environ: Mapping[str, str]) -> str | None:
    """Path of ``libjvm.so`` (from ``JAVA_HOME`` or ``java`` on ``PATH``), or None."""
    home = find_java_home(environ)
    return _jvm_in(home) if home else None


def _libhdfs_in(directory: str) -> str | None:
    for name in ("libhdfs.so", "libhdfs.so.0.0.0"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def libhdfs_path(environ: Mapping[str, str]) -> str | None:
    """Path of ``libhdfs.so``: ``$HADOOP_HDFS_HOME/lib/native``, the Hadoop home's ``lib/native``,
    ``ARROW_LIBHDFS_DIR`` or an ``LD_LIBRARY_PATH`` entry; None when none holds it."""
    dirs = [os.path.join(h, "lib", "native") for h in (environ.get("HADOOP_HDFS_HOME"), hadoop_home(environ)) if h]
    dirs += [d for d in (environ.get("ARROW_LIBHDFS_DIR"),) if d] + _paths(environ.get("LD_LIBRARY_PATH"))
    for directory in dirs:
        found = _libhdfs_in(directory)
        if found:
            return found
    return None


def expand_classpath(classpath: str) -> str:
    """Expand ``dir/*`` entries into the jars they name (the JVM libhdfs starts does not)."""
    out: list[str] = []
    for entry in _paths(classpath):
        if entry.endswith("*"):
            pattern = entry + ".jar" if entry.endswith(("/*", os.sep + "*")) else entry
            out += sorted(j for j in glob.glob(pattern) if j.lower().endswith(".jar"))
        else:
            out.append(entry)
    return os.pathsep.join(dict.fromkeys(out))


def hadoop_classpath(home: str, environ: Mapping[str, str], timeout: float = 60.0) -> str | None:
    """``$home/bin/hadoop classpath --glob``; without a usable ``bin/hadoop``, the configuration
    directory plus the jars of ``share/hadoop/{common,hdfs}`` (and their ``lib``). None if neither works."""
    script = os.path.join(home, "bin", "hadoop")
    if os.access(script, os.X_OK):
        env = dict(environ)
        env.setdefault("HADOOP_HOME", home)
        try:
            proc = subprocess.run([script, "classpath", "--glob"], env=env, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.warning("could not run %s classpath --glob: %s", script, exc)
        else:
            lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
            if proc.returncode == 0 and lines:
                return expand_classpath(lines[-1])
            logger.warning("%s classpath --glob exited with %d: %s", script, proc.returncode,
                           (proc.stderr.strip().splitlines() or ["(no output)"])[-1])
    jars = [j for d in _JAR_DIRS for j in sorted(glob.glob(os.path.join(home, d, "*.jar")))]
    if not jars:
        return None
    conf = environ.get("HADOOP_CONF_DIR") or os.path.join(home, "etc", "hadoop")
    return os.pathsep.join(([conf] if os.path.isdir(conf) else []) + jars)


def hadoop_env(environ: Mapping[str, str] | None = None, *, timeout: float = 60.0) -> dict[str, str]:
    """Variables to add to ``environ`` so libhdfs works in a process started with it.

    Empty unless a Hadoop home is set (``HADOOP_HOME``, ``HADOOP_PREFIX``, ``HADOOP_COMMON_HOME``)
    or when ``TFOS_HADOOP_ENV=0``. Otherwise, only what changes:

    * ``CLASSPATH``: from ``hadoop classpath --glob`` when unset; wildcard entries of a set one
      (YARN containers get ``.../*`` entries) expanded into jar lists;
    * ``LD_LIBRARY_PATH``: the existing entries, then the libjvm directory (``JAVA_HOME`` or
      ``java`` on ``PATH``) and the libhdfs directory when missing;
    * ``HADOOP_HDFS_HOME`` (where tensorflow-io looks for ``lib/native/libhdfs.so``) and
      ``ARROW_LIBHDFS_DIR`` (pyarrow), when unset and libhdfs is found.

    Typical use: ``env.update(hadoop_env(env))``.
    """
    environ = os.environ if environ is None else environ
    if environ.get("TFOS_HADOOP_ENV", "1").strip().lower() in ("0", "false", "no", "off"):
        return {}
    home = hadoop_home(environ)
    if home is None:
        return {}
    out: dict[str, str] = {}
    current = environ.get("CLASSPATH", "")
    if not current.strip():
        classpath = hadoop_classpath(home, environ, timeout)
        if classpath:
            out["CLASSPATH"] = classpath
        else:
            logger.warning("HADOOP_HOME=%s has no bin/hadoop and no share/hadoop jars: CLASSPATH not set", home)
    elif any(entry.endswith("*") for entry in _paths(current)):
        out["CLASSPATH"] = expand_classpath(current)

    native = os.path.join(home, "lib", "native")
    libhdfs = libhdfs_path(environ) or _libhdfs_in(native)
    libjvm = libjvm_path(environ)
    existing = _paths(environ.get("LD_LIBRARY_PATH"))
    wanted = [os.path.dirname(p) for p in (libjvm, libhdfs) if p]
    missing = [d for d in dict.fromkeys(wanted) if d not in existing]
    if missing:
        out["LD_LIBRARY_PATH"] = os.pathsep.join(existing + missing)
    if libhdfs:
        if not environ.get("HADOOP_HDFS_HOME") and _libhdfs_in(native):
            out["HADOOP_HDFS_HOME"] = home
        if not environ.get("ARROW_LIBHDFS_DIR"):
            out["ARROW_LIBHDFS_DIR"] = os.path.dirname(libhdfs)
    return out


def libhdfs_problems(environ: Mapping[str, str] | None = None) -> list[str]:
    """What keeps libhdfs from working in a process with ``environ`` (empty list: nothing known)."""
    environ = os.environ if environ is None else environ
    problems = []
    classpath = environ.get("CLASSPATH", "")
    if not classpath.strip():
        problems.append("CLASSPATH is not set: set HADOOP_HOME (tfos then runs `hadoop classpath --glob`) "
                        "or export CLASSPATH=$(hadoop classpath --glob)")
    elif any(entry.endswith("*") for entry in _paths(classpath)):
        problems.append("CLASSPATH has wildcard entries (dir/*) that libhdfs does not expand: "
                        "use `hadoop classpath --glob`")
    if libhdfs_path(environ) is None:
        problems.append("libhdfs.so not found in $HADOOP_HDFS_HOME/lib/native, $HADOOP_HOME/lib/native, "
                        "ARROW_LIBHDFS_DIR or LD_LIBRARY_PATH: install Hadoop's native libraries "
                        "or set HADOOP_HDFS_HOME")
    if libjvm_path(environ) is None:
        problems.append("libjvm.so not found: set JAVA_HOME to a Java 8-17 JDK/JRE")
    return problems


def preload_libhdfs(environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """Load ``libjvm.so`` then ``libhdfs.so`` into this process by path (global symbols).

    Needed where ``LD_LIBRARY_PATH`` was set after the process started (the loader reads it once),
    so that tensorflow-io's and pyarrow's own ``dlopen`` find both already loaded. Returns the two
    paths loaded (None for one not found); raises OSError when a library exists but cannot load.
    """
    environ = os.environ if environ is None else environ
    jvm, hdfs = libjvm_path(environ), libhdfs_path(environ)
    for path in (jvm, hdfs):
        if path:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    return jvm, hdfs


SPARK_SHIPPED_CONF = os.path.join("__spark_conf__", "__hadoop_conf__")


def shipped_hadoop_conf(environ: Mapping[str, str] | None = None, cwd: str | None = None) -> dict[str, str]:
    """Hadoop settings Spark shipped into this YARN container, when ``HADOOP_CONF_DIR`` is not set.

    spark-submit on YARN copies the submitting host's Hadoop configuration into every container
    (``__spark_conf__/__hadoop_conf__``) but does not point ``HADOOP_CONF_DIR`` at it, so a client
    that reads ``hdfs:///path`` (no NameNode in the URL) would not know ``fs.defaultFS``.
    """
    import xml.etree.ElementTree as ET

    environ = os.environ if environ is None else environ
    if environ.get("HADOOP_CONF_DIR"):
        return {}
    directory = os.path.join(cwd or os.getcwd(), SPARK_SHIPPED_CONF)
    settings: dict[str, str] = {}
    for name in ("core-site.xml", "hdfs-site.xml"):
        try:
            root = ET.parse(os.path.join(directory, name)).getroot()
        except (OSError, ET.ParseError):
            continue
        for prop in root.iter("property"):
            key, value = prop.findtext("name"), prop.findtext("value")
            if key and value is not None:
                settings[key.strip()] = value.strip()
    return settings
