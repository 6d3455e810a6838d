"""A small file-system facade over local files, ``hdfs://`` and whatever TensorFlow supports.

Which implementation serves a path:

* no scheme or ``file://``: plain Python (``open``, ``os``, ``shutil``);
* another scheme, when TensorFlow is *already imported* and ``tf.io.gfile`` has the scheme
  registered (tensorflow-io adds ``hdfs://`` on TF <= 2.17; for ``hdfs`` libhdfs must be
  usable, i.e. ``CLASSPATH`` is set): ``tf.io.gfile``;
* otherwise ``hdfs://`` and ``viewfs://``: hdfs-native (pure Rust client, no JVM, no libhdfs).

This module never imports TensorFlow, so it is cheap to use in Spark tasks. ``backend=`` or
the ``TFOS_FS_BACKEND`` environment variable (``auto``, ``native``, ``tf``) overrides the choice.

Before the first call to a NameNode, a TCP connection to it is tried with a short timeout, so an
unreachable NameNode fails in seconds with :class:`HdfsConnectionError` naming the address
instead of hanging in client retries.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import glob as _glob
import io
import logging
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

__all__ = ["FileInfo", "FileSystem", "HdfsConnectionError", "join", "split_url"]

logger = logging.getLogger(__name__)

_LOCAL_SCHEMES = ("", "file")
_NATIVE_SCHEMES = ("hdfs", "viewfs")
_COPY_CHUNK = 4 << 20


class HdfsConnectionError(ConnectionError):
    """The NameNode of an ``hdfs://`` URL cannot be reached."""


@dataclass(frozen=True)
class FileInfo:
    """What :meth:`FileSystem.stat` returns; ``path`` is a full URL for remote files."""

    path: str
    size: int
    is_dir: bool
    mtime: float  # seconds since the epoch


def split_url(path: str) -> tuple[str, str, str]:
    """``hdfs://nn:9000/a/b`` -> ``("hdfs", "nn:9000", "/a/b")``; ``/a`` -> ``("", "", "/a")``."""
    if "://" not in path:
        if path.startswith("file:"):  # file:/a/b (Hadoop's short form)
            return "file", "", path[len("file:"):]
        return "", "", path
    parts = urlsplit(path)
    return parts.scheme.lower(), parts.netloc, parts.path or "/"


def join(base: str, *names: str) -> str:
    """Join path components with ``/`` (URLs) or ``os.path.join`` (plain local paths)."""
    if "://" not in base:
        return os.path.join(base, *names)
    out = base
    for name in names:
        out = out.rstrip("/") + "/" + name.lstrip("/")
    return out


def _local_path(path: str) -> str:
    scheme, netloc, p = split_url(path)
    if scheme == "file" and netloc not in ("", "localhost"):
        raise ValueError(f"file:// URL with a host is not a local path: {path}")
    return p if scheme else path


def _not_found(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "No such file or directory", path)


class _NativeReader(io.RawIOBase):
    """hdfs-native FileReader as a raw stream that io.BufferedReader accepts (needs readinto).

    A read that fails (hdfs-native's transient "All DataNodes failed", hdfs-native issue #227;
    Java's client retries such reads itself) is retried up to ``READ_ATTEMPTS`` times on a freshly
    opened reader at the same offset, with a warning naming the path; then it raises an OSError
    that names the path, the offset and the last error.
    """

    READ_ATTEMPTS = 4
    RETRY_DELAY = 0.2  # seconds, doubled after each failed attempt

    def __init__(self, inner: Any, name: str, reopen: Any = None):
        self._inner = inner
        self._reopen = reopen
        self._pos = 0
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        delay = self.RETRY_DELAY
        for attempt in range(1, self.READ_ATTEMPTS + 1):
            try:
                data = self._inner.read(len(b))
                break
            except (RuntimeError, OSError) as exc:
                if self._reopen is None or attempt == self.READ_ATTEMPTS or isinstance(exc, FileNotFoundError):
                    raise OSError(f"reading {self.name} at offset {self._pos} failed after {attempt} attempt(s): "
                                  f"{_short(exc)[:500]}") from exc
                logger.warning("reading %s at offset %d failed (attempt %d of %d), retrying on a new reader in %.1fs: "
                               "%s", self.name, self._pos, attempt, self.READ_ATTEMPTS, delay, _short(exc)[:300])
                time.sleep(delay)
                delay *= 2
                with contextlib.suppress(Exception):  # a new reader below is what matters
                    self._inner.close()
                try:
                    self._inner = self._reopen()
                    self._inner.seek(self._pos)
                except (RuntimeError, OSError) as reopen_exc:
                    raise OSError(f"reading {self.name} at offset {self._pos} failed ({_short(exc)[:300]}) and "
                                  f"reopening it failed: {_short(reopen_exc)[:300]}") from reopen_exc
        n = len(data)
        b[:n] = data
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self._pos
        elif whence == os.SEEK_END:
            offset += self._inner.file_length()
        elif whence != os.SEEK_SET:
            raise ValueError(f"invalid whence {whence}")
        self._inner.seek(offset)
        self._pos = offset
        return offset

    def tell(self) -> int:
        return self._pos


class _NativeWriter(io.RawIOBase):
    """hdfs-native FileWriter as a raw stream; close() completes the file on the NameNode."""

    def __init__(self, inner: Any, name: str):
        self._inner = inner
        self.name = name
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._inner.write(data)
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def close(self) -> None:
        if not self.closed:
            try:
                self._inner.close()
            finally:
                super().close()


class FileSystem:
    """Uniform file operations on local paths, ``file://``, ``hdfs://`` (and TF-registered schemes).

    One instance caches one hdfs-native client per NameNode; create one per process or task.
    A new NameNode must accept a TCP connection within ``connect_timeout`` seconds and answer a
    first RPC within ``rpc_timeout`` seconds, else :class:`HdfsConnectionError`. ``hdfs_config``
    adds Hadoop client settings for hdfs-native (e.g. ``dfs.client.failover.max.attempts``).
    """

    def __init__(self, *, backend: str | None = None, connect_timeout: float = 5.0, rpc_timeout: float = 15.0,
                 hdfs_config: dict[str, str] | None = None):
        self._backend = (backend or os.environ.get("TFOS_FS_BACKEND") or "auto").lower()
        if self._backend not in ("auto", "native", "tf"):
            raise ValueError(f"backend must be auto, native or tf, got {self._backend!r}")
        self._connect_timeout = connect_timeout
        self._rpc_timeout = rpc_timeout
        self._hdfs_config = {
            # fail instead of retrying for minutes; the TCP pre-check covers unreachable NameNodes
            "dfs.client.failover.max.attempts": "2",
            "dfs.client.failover.sleep.base.millis": "200",
            "dfs.client.failover.sleep.max.millis": "1000",
            **(hdfs_config or {}),
        }
        self._clients: dict[str, Any] = {}

    # ------------------------------------------------------------------ backend selection
    def backend_for(self, path: str) -> str:
        """``local``, ``tf`` or ``native``: the implementation serving ``path``."""
        scheme = split_url(path)[0]
        if scheme in _LOCAL_SCHEMES:
            return "local"
        if self._backend in ("auto", "tf") and self._tf_supports(scheme):
            return "tf"
        if self._backend == "tf":
            raise ValueError(f"TensorFlow is not imported or has no file system for {scheme}:// ({path})")
        if scheme in _NATIVE_SCHEMES:
            return "native"
        raise ValueError(f"unsupported file system scheme {scheme}:// in {path} "
                         f"(import tensorflow/tensorflow_io first if TensorFlow supports it)")

    @staticmethod
    def _tf_supports(scheme: str) -> bool:
        tf = sys.modules.get("tensorflow")
        if tf is None:
            return False
        try:
            schemes = tf.io.gfile.get_registered_schemes()
        except Exception:  # noqa: BLE001 - very old TF or a partial import
            return False
        if scheme not in schemes:
            return False
        # TF's hdfs file system needs libhdfs + the Hadoop jars (CLASSPATH) at first use.
        return scheme not in _NATIVE_SCHEMES or bool(os.environ.get("CLASSPATH"))

    @staticmethod
    def _gfile() -> Any:
        return sys.modules["tensorflow"].io.gfile

    # ------------------------------------------------------------------ hdfs-native client
    def _client(self, path: str) -> tuple[Any, str]:
        scheme, netloc, p = split_url(path)
        key = f"{scheme}://{netloc}"
        client = self._clients.get(key)
        if client is None:
            self._check_reachable(scheme, netloc, path)
            import hdfs_native

            try:
                config = self._hdfs_config
                if not netloc:  # hdfs:///path: the default file system, from the configuration in force
                    from tfos.io.hadoop_env import shipped_hadoop_conf

                    config = {**shipped_hadoop_conf(), **config}
                client = hdfs_native.Client(key if netloc else None, config=config)
            except Exception as exc:
                raise HdfsConnectionError(f"cannot create an HDFS client for {key} ({path}): {exc}") from exc
            self._first_rpc(client, key, path)
            self._clients[key] = client
        return client, p

    def _first_rpc(self, client: Any, key: str, path: str) -> None:
        """One getFileInfo("/") in a daemon thread, so a NameNode that accepts connections but
        never answers (or a wrong port) fails in ``rpc_timeout`` instead of hanging the caller."""
        outcome: dict[str, BaseException] = {}

        def _probe() -> None:
            try:
                client.get_file_info("/")
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                outcome["exc"] = exc

        thread = threading.Thread(target=_probe, name="tfos-hdfs-probe", daemon=True)
        thread.start()
        thread.join(self._rpc_timeout)
        if thread.is_alive():
            raise HdfsConnectionError(f"HDFS NameNode {key} accepted a connection but did not answer "
                                      f"within {self._rpc_timeout:g} s ({path})")
        exc = outcome.get("exc")
        if exc is not None and not isinstance(exc, (FileNotFoundError, PermissionError)):
            raise HdfsConnectionError(f"HDFS NameNode {key} failed the first request for {path}: "
                                      f"{_short(exc)}") from exc

    def _check_reachable(self, scheme: str, netloc: str, path: str) -> None:
        """TCP-connect to ``host:port`` within ``connect_timeout``; HA name services are skipped."""
        if scheme != "hdfs" or not netloc:
            return
        host, _, port_s = netloc.rpartition("@")[2].partition(":")
        if not port_s:
            try:
                socket.getaddrinfo(host, None)
            except OSError:
                return  # no such host: an HA name service resolved from the Hadoop configuration
            port_s = "8020"
        addr = f"{host}:{port_s}"
        try:
            with socket.create_connection((host, int(port_s)), timeout=self._connect_timeout):
                pass
        except OSError as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise HdfsConnectionError(
                f"cannot reach HDFS NameNode {addr} for {path}: {reason} "
                f"(within {self._connect_timeout:g} s)") from exc

    def _native_call(self, path: str, fn: Any, *args: Any) -> Any:
        """Run ``fn(client, hdfs_path, *args)``, mapping errors to ones that name the path."""
        client, p = self._client(path)
        try:
            return fn(client, p, *args)
        except FileNotFoundError as exc:
            raise _not_found(path) from exc
        except FileExistsError as exc:
            raise FileExistsError(errno.EEXIST, "File exists", path) from exc
        except (ConnectionError, TimeoutError) as exc:
            raise HdfsConnectionError(f"HDFS connection failed for {path}: {exc}") from exc
        except OSError as exc:
            if exc.filename:  # raised by tfos itself, already names the path
                raise
            if exc.errno is None and any(w in str(exc).lower() for w in ("disconnected", "connect", "broken pipe")):
                raise HdfsConnectionError(f"HDFS connection failed for {path}: {_short(exc)}") from exc
            raise OSError(exc.errno, f"{_short(exc)}: {path}") from exc
        except RuntimeError as exc:
            raise OSError(f"HDFS operation failed on {path}: {_short(exc)}") from exc

    def _tf_call(self, path: str, fn: Any, *args: Any) -> Any:
        tf = sys.modules["tensorflow"]
        try:
            return fn(self._gfile(), *args)
        except tf.errors.NotFoundError as exc:
            raise _not_found(path) from exc
        except tf.errors.AlreadyExistsError as exc:
            raise FileExistsError(errno.EEXIST, "File exists", path) from exc
        except tf.errors.OpError as exc:
            raise OSError(f"{type(exc).__name__} on {path}: {exc.message}") from exc

    def close(self) -> None:
        """Drop cached clients."""
        self._clients.clear()

    def __enter__(self) -> FileSystem:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ queries
    def stat(self, path: str) -> FileInfo:
        """Size, type and modification time of ``path``; FileNotFoundError names a missing path."""
        kind = self.backend_for(path)
        if kind == "local":
            lp = _local_path(path)
            try:
                st = os.stat(lp)
            except FileNotFoundError as exc:
                raise _not_found(path) from exc
            return FileInfo(path, st.st_size, os.path.isdir(lp), st.st_mtime)
        if kind == "tf":
            st = self._tf_call(path, lambda g: g.stat(path))
            return FileInfo(path, int(st.length), bool(st.is_directory), st.mtime_nsec / 1e9)
        fs = self._native_call(path, lambda c, p: c.get_file_info(p))
        return FileInfo(path, int(fs.length), bool(fs.isdir), fs.modification_time / 1000.0)

    def exists(self, path: str) -> bool:
        """True when ``path`` exists (file or directory)."""
        try:
            self.stat(path)
        except FileNotFoundError:
            return False
        return True

    def isdir(self, path: str) -> bool:
        """True when ``path`` is an existing directory."""
        try:
            return self.stat(path).is_dir
        except FileNotFoundError:
            return False

    def listdir(self, path: str) -> list[str]:
        """Sorted names (not paths) of the entries of directory ``path``."""
        kind = self.backend_for(path)
        if kind == "local":
            try:
                return sorted(os.listdir(_local_path(path)))
            except FileNotFoundError as exc:
                raise _not_found(path) from exc
        if kind == "tf":
            if not self._tf_call(path, lambda g: g.isdir(path)):
                raise _not_found(path) if not self.exists(path) else NotADirectoryError(
                    errno.ENOTDIR, "Not a directory", path)
            return sorted(n.rstrip("/") for n in self._tf_call(path, lambda g: g.listdir(path)))

        def _list(c: Any, p: str) -> list[str]:
            if not c.get_file_info(p).isdir:
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
            return sorted(s.path.rstrip("/").rsplit("/", 1)[-1] for s in c.list_status(p))

        return self._native_call(path, _list)

    def walk_files(self, path: str) -> Iterator[FileInfo]:
        """Every file below directory ``path`` (recursively), in sorted order."""
        for name in self.listdir(path):
            child = join(path, name)
            info = self.stat(child)
            if info.is_dir:
                yield from self.walk_files(child)
            else:
                yield info

    def glob(self, pattern: str) -> list[str]:
        """Sorted paths matching a shell pattern (``*``, ``?``, ``[..]``), in the pattern's form."""
        kind = self.backend_for(pattern)
        if kind == "local":
            scheme = split_url(pattern)[0]
            matches = sorted(_glob.glob(_local_path(pattern)))
            return [f"file://{m}" if scheme == "file" else m for m in matches]
        if kind == "tf":
            return sorted(self._tf_call(pattern, lambda g: g.glob(pattern)))
        scheme, netloc, p = split_url(pattern)
        prefix = f"{scheme}://{netloc}"
        # glob only the last component on the NameNode side: list the parent and match names
        parent, _, leaf = p.rstrip("/").rpartition("/")
        if any(ch in parent for ch in "*?["):
            statuses = self._native_call(pattern, lambda c, q: c.glob_status(q))
            return sorted(prefix + s.path for s in statuses)
        parent_url = prefix + (parent or "/")
        try:
            names = self.listdir(parent_url)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [join(parent_url, n) for n in names if fnmatch.fnmatchcase(n, leaf)]

    # ------------------------------------------------------------------ changes
    def makedirs(self, path: str, exist_ok: bool = True) -> None:
        """Create directory ``path`` and its parents."""
        kind = self.backend_for(path)
        if kind == "local":
            os.makedirs(_local_path(path), exist_ok=exist_ok)
            return
        if not exist_ok and self.exists(path):
            raise FileExistsError(errno.EEXIST, "File exists", path)
        if kind == "tf":
            self._tf_call(path, lambda g: g.makedirs(path))
            return
        self._native_call(path, lambda c, p: c.mkdirs(p, create_parent=True))

    def delete(self, path: str, recursive: bool = False, missing_ok: bool = False) -> None:
        """Delete a file, or a directory (non-empty ones need ``recursive=True``)."""
        kind = self.backend_for(path)
        if kind == "local":
            lp = _local_path(path)
            try:
                if os.path.isdir(lp) and not os.path.islink(lp):
                    shutil.rmtree(lp) if recursive else os.rmdir(lp)
                else:
                    os.remove(lp)
            except FileNotFoundError as exc:
                if not missing_ok:
                    raise _not_found(path) from exc
            return
        if not self.exists(path):
            if missing_ok:
                return
            raise _not_found(path)
        if kind == "tf":
            if self._tf_call(path, lambda g: g.isdir(path)):
                if recursive:
                    self._tf_call(path, lambda g: g.rmtree(path))
                elif self.listdir(path):
                    raise OSError(errno.ENOTEMPTY, "Directory not empty", path)
                else:
                    self._tf_call(path, lambda g: g.remove(path))
            else:
                self._tf_call(path, lambda g: g.remove(path))
            return

        def _delete(c: Any, p: str) -> None:
            if not recursive and c.get_file_info(p).isdir and next(iter(c.list_status(p)), None) is not None:
                raise OSError(errno.ENOTEMPTY, "Directory not empty", path)
            c.delete(p, recursive)

        self._native_call(path, _delete)

    def rename(self, src: str, dst: str, overwrite: bool = False) -> None:
        """Rename ``src`` to ``dst`` on the same file system (atomic for files on HDFS and POSIX)."""
        kind = self.backend_for(src)
        if split_url(src)[:2] != split_url(dst)[:2] and not (kind == "local" and self.backend_for(dst) == "local"):
            raise ValueError(f"rename across file systems is not supported: {src} -> {dst} (use copy)")
        if kind == "local":
            ls, ld = _local_path(src), _local_path(dst)
            if not os.path.lexists(ls):
                raise _not_found(src)
            if os.path.lexists(ld) and not overwrite:
                raise FileExistsError(errno.EEXIST, "File exists", dst)
            os.makedirs(os.path.dirname(os.path.abspath(ld)), exist_ok=True)
            os.replace(ls, ld) if overwrite else os.rename(ls, ld)
            return
        if kind == "tf":
            if not self._tf_call(src, lambda g: g.exists(src)):
                raise _not_found(src)
            self._tf_call(dst, lambda g: g.rename(src, dst, overwrite))
            return
        dst_path = split_url(dst)[2]

        def _rename(c: Any, p: str) -> None:
            if not _native_exists(c, p):
                raise _not_found(src)
            if not overwrite and _native_exists(c, dst_path):
                raise FileExistsError(errno.EEXIST, "File exists", dst)
            parent = dst_path.rstrip("/").rsplit("/", 1)[0]
            if parent and not _native_exists(c, parent):
                c.mkdirs(parent, create_parent=True)
            c.rename(p, dst_path, overwrite)

        try:
            self._native_call(src, _rename)
        except FileExistsError as exc:
            raise FileExistsError(errno.EEXIST, "File exists", dst) from exc

    def open(self, path: str, mode: str = "rb", encoding: str | None = None) -> IO[Any]:
        """Open ``path``: ``rb``/``r``, ``wb``/``w`` (truncate), ``xb``/``x`` (must not exist), ``ab``/``a``.

        Parent directories are created for writes. Remote writers become visible on close.
        """
        if mode not in ("r", "rb", "w", "wb", "x", "xb", "a", "ab", "rt", "wt", "xt", "at"):
            raise ValueError(f"unsupported mode {mode!r}")
        text = "b" not in mode
        base = mode[0]
        kind = self.backend_for(path)
        if kind == "local":
            lp = _local_path(path)
            if base != "r":
                os.makedirs(os.path.dirname(os.path.abspath(lp)), exist_ok=True)
            try:
                f: IO[Any] = open(lp, base + "b")  # noqa: SIM115 - returned to the caller
            except FileNotFoundError as exc:
                raise _not_found(path) from exc
            except FileExistsError as exc:
                raise FileExistsError(errno.EEXIST, "File exists", path) from exc
        elif kind == "tf":
            if base == "r" and not self._tf_call(path, lambda g: g.exists(path)):
                raise _not_found(path)
            if base == "x" and self._tf_call(path, lambda g: g.exists(path)):
                raise FileExistsError(errno.EEXIST, "File exists", path)
            if base != "r":
                parent = path.rstrip("/").rsplit("/", 1)[0]
                self._tf_call(parent, lambda g: g.makedirs(parent))
            f = self._tf_call(path, lambda g: g.GFile(path, {"x": "w"}.get(base, base) + "b"))
        else:
            f = self._native_open(path, base)
        if text:
            return io.TextIOWrapper(f, encoding=encoding or "utf-8")
        return f

    def _native_open(self, path: str, base: str) -> IO[bytes]:
        import hdfs_native

        if base == "r":
            def read(c: Any, p: str) -> Any:
                return _native_read(c, p, path)

            reader = self._native_call(path, read)
            return io.BufferedReader(_NativeReader(reader, path, lambda: self._native_call(path, read)),
                                     buffer_size=1 << 20)
        if base == "a":
            def _append(c: Any, p: str) -> Any:
                if not _native_exists(c, p):
                    return c.create(p, hdfs_native.WriteOptions(create_parent=True))
                return c.append(p)

            writer = self._native_call(path, _append)
        else:
            opts = hdfs_native.WriteOptions(overwrite=(base == "w"), create_parent=True)
            writer = self._native_call(path, lambda c, p: c.create(p, opts))
        return io.BufferedWriter(_NativeWriter(writer, path), buffer_size=1 << 20)

    def read_bytes(self, path: str) -> bytes:
        """Whole content of a file."""
        with self.open(path, "rb") as f:
            return f.read()

    def write_bytes(self, path: str, data: bytes, atomic: bool = True) -> None:
        """Write ``data`` to ``path`` (via a hidden temporary name and a rename when ``atomic``)."""
        with self.atomic_writer(path) if atomic else self.open(path, "wb") as f:
            f.write(data)

    @contextlib.contextmanager
    def atomic_writer(self, path: str) -> Iterator[IO[bytes]]:
        """Context manager: write to a hidden temporary sibling, rename over ``path`` on success.

        On an exception the temporary file is deleted and ``path`` is left untouched; a killed
        process leaves only a hidden ``.<name>.<id>.tmp`` file that readers skip.
        """
        tmp = temp_sibling(path)
        f = self.open(tmp, "wb")
        try:
            yield f
            f.close()
            self.rename(tmp, path, overwrite=True)
        except BaseException:
            with contextlib.suppress(Exception):
                f.close()
            with contextlib.suppress(Exception):
                self.delete(tmp, missing_ok=True)
            raise

    def copy(self, src: str, dst: str, overwrite: bool = True, atomic: bool = True) -> None:
        """Copy one file between any two supported file systems (local <-> hdfs, hdfs <-> hdfs)."""
        if not overwrite and self.exists(dst):
            raise FileExistsError(errno.EEXIST, "File exists", dst)
        if self.isdir(src):
            raise IsADirectoryError(errno.EISDIR, "Is a directory (use copytree)", src)
        with self.open(src, "rb") as fin:
            with self.atomic_writer(dst) if atomic else self.open(dst, "wb") as fout:
                shutil.copyfileobj(fin, fout, _COPY_CHUNK)

    def copytree(self, src: str, dst: str, overwrite: bool = True, atomic: bool = True) -> list[str]:
        """Copy every file below directory ``src`` to the same relative path below ``dst``.

        ``atomic`` makes each file appear complete or not at all (not the tree as a whole).
        """
        if not self.isdir(src):
            raise _not_found(src) if not self.exists(src) else NotADirectoryError(
                errno.ENOTDIR, "Not a directory", src)
        self.makedirs(dst)
        copied = []
        for name in self.listdir(src):
            s, d = join(src, name), join(dst, name)
            if self.isdir(s):
                copied += self.copytree(s, d, overwrite, atomic)
            else:
                self.copy(s, d, overwrite=overwrite, atomic=atomic)
                copied.append(d)
        return copied


def temp_sibling(path: str) -> str:
    """A hidden temporary name next to ``path`` (Hadoop and tfos readers skip ``.``/``_`` names)."""
    if "://" in path or path.startswith("file:"):
        parent, _, name = path.rstrip("/").rpartition("/")
        return f"{parent}/.{name}.{uuid.uuid4().hex[:12]}.tmp"
    parent, name = os.path.split(path.rstrip("/"))
    return os.path.join(parent, f".{name}.{uuid.uuid4().hex[:12]}.tmp")


def _native_exists(client: Any, p: str) -> bool:
    try:
        client.get_file_info(p)
    except FileNotFoundError:
        return False
    return True


def _native_read(client: Any, p: str, url: str) -> Any:
    if client.get_file_info(p).isdir:
        raise IsADirectoryError(errno.EISDIR, "Is a directory", url)
    return client.read(p).inner


def _short(exc: BaseException) -> str:
    """First line of a (Java stack trace carrying) error message."""
    text = str(exc)
    for sep in ("\\n\\tat ", "\n\tat "):
        text = text.split(sep, 1)[0]
    return text.strip()
