"""Resolve user paths against Spark's default file system (``fs.defaultFS``).

The rules are those of TensorFlowOnSpark 2.x ``TFNode.hdfs_path``:

* a path with a scheme (``hdfs://``, ``file://``, ``gs://``, ...) is returned unchanged;
* an absolute path (``/data/x``) is prefixed with the default file system;
* a relative path resolves against the user's home ``/user/<user>`` on ``hdfs://`` and
  ``viewfs://``, and against the working directory on ``file://``.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
from typing import Any

logger = logging.getLogger(__name__)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_HOME_SCHEMES = ("hdfs://", "viewfs://")


def has_scheme(path: str) -> bool:
    """True when ``path`` starts with ``<scheme>://``."""
    return bool(_SCHEME.match(path))


def normalize_default_fs(fs: str | None) -> str:
    """``file:///`` -> ``file://``, ``hdfs://nn:8020/`` -> ``hdfs://nn:8020``; empty -> ``file://``."""
    if not fs:
        return "file://"
    if fs in ("file:/", "file:///") or fs.startswith("file:") and not fs.startswith("file://"):
        return "file://"
    if fs.endswith("/") and len(fs) > len(fs.split("://", 1)[0]) + 3:
        fs = fs.rstrip("/")
    return fs


def hdfs_user() -> str:
    """The user whose home directory relative HDFS paths resolve to (``HADOOP_USER_NAME`` wins)."""
    return os.environ.get("HADOOP_USER_NAME") or getpass.getuser()


def absolute_path(path: str, default_fs: str | None, working_dir: str | None = None, user: str | None = None) -> str:
    """Fully qualified form of ``path`` (TensorFlowOnSpark ``TFNode.hdfs_path`` rules).

    ``default_fs`` is Spark's ``fs.defaultFS`` (``file:///`` and ``file://`` are equivalent),
    ``working_dir`` the directory relative local paths resolve to (default: the current one),
    ``user`` the owner of the HDFS home directory (default: ``HADOOP_USER_NAME`` or the login user).
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"path must be a non-empty string, got {path!r}")
    if has_scheme(path):
        return path
    fs = normalize_default_fs(default_fs)
    if path.startswith("/"):
        return fs + path
    if fs.startswith(_HOME_SCHEMES):
        return f"{fs}/user/{user or hdfs_user()}/{path}"
    if fs.startswith("file://"):
        wd = os.path.abspath(working_dir or os.getcwd())
        return f"{fs}/{wd.lstrip('/')}/{path}" if wd != "/" else f"{fs}/{path}"
    logger.warning("unknown default file system %s for relative path %s", fs, path)
    return f"{fs}/{path}"


def default_fs(sc: Any) -> str:
    """``fs.defaultFS`` of a SparkContext's Hadoop configuration, normalized (``file://`` for local)."""
    value = sc._jsc.hadoopConfiguration().get("fs.defaultFS")
    return normalize_default_fs(value)
