"""A warm launcher for TF processes: one long-lived process per executor that has already
imported TensorFlow and forks a TF process per node on request.

Importing TensorFlow takes seconds; a cluster started again on the same executors (a
notebook, a hyper-parameter sweep, a test suite) should not pay it every time. The launcher
listens on a Unix socket in a private (0700) directory, takes ``{payload, env, cwd}`` as
JSON, forks (before any TF runtime is initialised, so the child starts clean: TF reads
``TF_CONFIG`` and ``CUDA_VISIBLE_DEVICES`` at first use), and reports the child's pid and
then its exit status on the same connection. It exits after ``IDLE_SECS`` without work, and
with its executor: one launcher per executor JVM (the socket is keyed by its pid), started in
the executor's process group (no ``setsid``), watching the JVM (``tfos.cluster.lifetime``) and
ending its TF processes when the JVM is gone; each TF process it forks gets a parent-death
signal, so it cannot outlive the launcher either. The launcher freezes its objects out of
the garbage collector's reach before each fork (``gc.freeze``), so the TF processes share its
memory instead of copying it at their first full collection.
Set ``TFOS_PREFORK=0`` to start every TF process from scratch instead.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import logging
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tfos.cluster import lifetime

logger = logging.getLogger(__name__)

IDLE_SECS = 300.0
START_TIMEOUT_SECS = 180.0


def enabled() -> bool:
    return os.environ.get("TFOS_PREFORK", "1") != "0"


def socket_path(owner: int) -> str:
    """Where the launcher of executor JVM ``owner`` listens: keyed by that pid, the interpreter, the
    import path and tfos's code (so another executor or an upgrade gets a launcher of its own)."""
    import tfos

    pkg = Path(tfos.__file__).parent
    stamp = [str(owner), _start_time(owner), sys.executable, os.pathsep.join(sys.path)]
    stamp += [f"{p}:{p.stat().st_mtime_ns}" for p in sorted(pkg.rglob("*.py"))]
    key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"tfos-prefork-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    os.chmod(base, 0o700)
    return str(base / f"{key}.sock")


def _start_time(pid: int) -> str:
    """The start time of ``pid`` in clock ticks: a recycled pid gets another key."""
    fields = lifetime.stat_fields(pid)
    return fields[19].decode() if len(fields) > 19 else ""


class LaunchedProcess:
    """A TF process forked by the launcher; ``wait()`` returns its exit status like ``Popen.wait``."""

    def __init__(self, conn: socket.socket, pid: int):
        self._conn = conn
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            self._conn.settimeout(None)
            data = b""
            while not data.endswith(b"\n"):
                chunk = self._conn.recv(4096)
                if not chunk:
                    raise RuntimeError(f"the TF process launcher went away while pid {self.pid} was running")
                data += chunk
            self.returncode = int(json.loads(data)["exit"])
            self._conn.close()
        return self.returncode


def _connect(path: str) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        return conn
    except OSError:
        conn.close()
        return None


def _start_launcher(path: str, env: dict[str, str], cwd: str) -> socket.socket:
    """Start the launcher for ``path`` and connect to it. Nodes starting at once on one host take
    turns (a lock file), so only the first starts a launcher and the others connect to it."""
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held at most START_TIMEOUT_SECS by the node that starts it
        conn = _connect(path)
        if conn is not None:
            return conn
        # Same process group and session as the executor's Python workers: a kill of the
        # executor's group (YARN, Spark's daemon) reaches it; it also watches the JVM itself.
        subprocess.Popen([sys.executable, "-m", "tfos.cluster.prefork", path], stdin=subprocess.DEVNULL,
                         cwd=cwd, env=dict(env))
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while conn is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the TF process launcher did not listen on {path} within {START_TIMEOUT_SECS}s")
            time.sleep(0.05)  # the launcher binds once TensorFlow is imported
            conn = _connect(path)
        return conn


def launch(payload_path: str, env: dict[str, str], cwd: str) -> LaunchedProcess:
    """Fork a TF process through this executor's launcher, starting the launcher if needed."""
    owner = int(env.get(lifetime.OWNER_ENV) or lifetime.owner_pid())
    path = socket_path(owner)
    conn = _connect(path)
    if conn is None:
        conn = _start_launcher(path, env, cwd)
    conn.sendall(json.dumps({"payload": payload_path, "env": env, "cwd": cwd}).encode() + b"\n")
    conn.settimeout(30)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise RuntimeError(f"the TF process launcher at {path} closed the connection before forking")
        data += chunk
    reply = json.loads(data)
    if "error" in reply:
        raise RuntimeError(f"the TF process launcher could not start the node: {reply['error']}")
    return LaunchedProcess(conn, int(reply["pid"]))


def _fork_child(conn: socket.socket, listener: socket.socket, request: dict) -> int:
    """Fork the TF process from the launcher's main thread; returns its pid."""
    from tfos.cluster import tf_process

    launcher = os.getpid()
    # What the launcher holds (TensorFlow's hundreds of thousands of objects) goes to the collector's
    # permanent generation: the child's collections skip it instead of writing to every page of it.
    # A full collection in a TF process otherwise took 0.4 s of CPU and copied ~78 MB of shared pages.
    gc.freeze()
    pid = os.fork()
    if pid == 0:  # the TF process: no setsid, it stays in the executor's process group
        try:
            conn.close()
            listener.close()
            lifetime.set_parent_death_signal(launcher)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            tf_process.main(["tf_process", request["payload"]])
        finally:
            os._exit(1)
    return pid


def _report_exit(conn: socket.socket, pid: int, children: set[int]) -> None:
    try:
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    except OSError:
        pass
    _, status = os.waitpid(pid, 0)
    children.discard(pid)
    try:
        conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    except OSError:
        pass
    conn.close()


def _read_request(conn: socket.socket) -> dict:
    conn.settimeout(10)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("client closed before sending a request")
        data += chunk
    return json.loads(data)


def serve(path: str) -> None:
    """Launcher main loop: import TensorFlow once, then fork a TF process per request."""
    for entry in reversed(os.environ.get("TFOS_SYS_PATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow  # noqa: F401 - the point of this process: pay the import once
    from pyspark import cloudpickle  # noqa: F401

    from tfos.cluster import tf_process  # noqa: F401

    gc.collect()  # before the first freeze (see _fork_child): no garbage kept for good

    children: set[int] = set()
    owner = int(os.environ.get(lifetime.OWNER_ENV) or lifetime.owner_pid())
    lifetime.exit_with_owner(owner, on_exit=lambda: lifetime.terminate_children(sorted(children)),
                             what="TF process launcher")
    tmp = f"{path}.{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(tmp)
    os.chmod(tmp, 0o600)
    listener.listen(64)
    os.replace(tmp, path)  # atomically visible only once ready
    inode = os.stat(path).st_ino
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    last_work = time.monotonic()
    active: list[threading.Thread] = []
    while True:
        active = [t for t in active if t.is_alive()]
        if active:
            last_work = time.monotonic()
        if not active and time.monotonic() - last_work > IDLE_SECS:
            break
        if not sel.select(timeout=5.0):
            continue
        conn, _ = listener.accept()
        try:
            request = _read_request(conn)
        except (OSError, ValueError) as exc:
            logger.warning("prefork launcher: bad request: %s", exc)
            conn.close()
            continue
        try:
            pid = _fork_child(conn, listener, request)
        except OSError as exc:
            conn.sendall(json.dumps({"error": f"fork failed: {exc}"}).encode() + b"\n")
            conn.close()
            continue
        children.add(pid)
        thread = threading.Thread(target=_report_exit, args=(conn, pid, children), daemon=True)
        thread.start()
        active.append(thread)
    try:
        if os.stat(path).st_ino == inode:  # not replaced by a newer launcher
            os.unlink(path)
    except OSError:
        pass
    listener.close()


if __name__ == "__main__":
    serve(sys.argv[1])
