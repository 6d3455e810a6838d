"""Executor-local transport between a Spark feed task and a TF process.

One Unix domain stream socket per named input (``qname``) of a TF process, bound by the TF
side (:class:`Listener`, created by ``DataFeed``) in the node's private ``feed_dir`` (mode
0700); feed tasks on the same executor :func:`connect` to it. Both ends check with
``SO_PEERCRED`` that the peer runs as the same user.

Framing: every message is a 16-byte header ``magic(4) type(1) pad(3) length(8, little endian)``
followed by ``length`` bytes. Control messages carry a msgpack map; ``DATA`` carries one Arrow
IPC stream (schema + record batches); ``RESULTS`` carries pickled inference outputs from the TF
process back to its feed task (same user, same host, private directory: trusted, and the
control plane proper never unpickles).

Conversation of one connection::

    feeder -> HELLO {qname, mode, partition, epochs, feed_timeout, ...}
    TF     -> WELCOME {pid, node}  |  REJECT {reason, terminated}
    feeder -> DATA* END_PARTITION            (inference: one partition per connection)
              (DATA* END_EPOCH)* [END_FEED]  (train: one connection per worker and call)
    TF     -> RESULTS*                       (inference: outputs, in input order)
    TF     -> TERMINATE | ERROR {traceback}  (at any time: stop feeding / the TF side failed)

Buffering is bounded: the TF side reads a message only when its consumer needs more rows,
so a slow consumer fills the socket buffers and blocks the feeder (back-pressure); memory on
both sides stays at about one chunk. Every blocking wait takes a timeout and raises
:class:`FeedTimeout` saying what it waited for; a closed or dead peer raises :class:`PeerGone`
at once (``EPIPE``/EOF, plus a liveness check of the peer pid every second).

:class:`FeedDir` names the files in ``feed_dir``: sockets, their address files, and the
markers for "terminated", "feed ended" and the TF process's exit state.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import struct
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from tfos.feed.errors import FeedError, FeedTimeout, PeerGone

PROTOCOL_VERSION = 1
MAGIC = b"TFF1"
HEADER = struct.Struct("<4sB3xQ")
MAX_CONTROL_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 1 << 36
POLL_SLICE = 0.5  # seconds between liveness checks during a blocking wait
SOCKET_BUFFER = 1 << 21
MAX_SUN_PATH = 100  # AF_UNIX limit is 108 bytes including the NUL; keep a margin

# message types
HELLO = 1
WELCOME = 2
REJECT = 3
DATA = 4
END_PARTITION = 5
END_EPOCH = 6
END_FEED = 7
TERMINATE = 8
ERROR = 9
RESULTS = 10

TYPE_NAMES = {HELLO: "HELLO", WELCOME: "WELCOME", REJECT: "REJECT", DATA: "DATA", END_PARTITION: "END_PARTITION",
              END_EPOCH: "END_EPOCH", END_FEED: "END_FEED", TERMINATE: "TERMINATE", ERROR: "ERROR",
              RESULTS: "RESULTS"}
CONTROL_TYPES = {HELLO, WELCOME, REJECT, END_PARTITION, END_EPOCH, END_FEED, TERMINATE, ERROR}
INTERRUPTS = {TERMINATE, ERROR}


def pack_control(obj: dict) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack_control(payload: Any) -> dict:
    if not payload:
        return {}
    obj = msgpack.unpackb(bytes(payload), raw=False)
    if not isinstance(obj, dict):
        raise FeedError(f"malformed control message on the feed channel: {type(obj).__name__}")
    return obj


@dataclass
class Message:
    type: int
    payload: Any  # bytearray / bytes / memoryview

    @property
    def name(self) -> str:
        return TYPE_NAMES.get(self.type, str(self.type))

    def control(self) -> dict:
        return unpack_control(self.payload)


class Interrupted(FeedError):
    """The peer sent TERMINATE or ERROR while we were sending or waiting."""

    def __init__(self, message: Message, peer: str):
        info = message.control()
        self.message = message
        self.info = info
        if message.type == ERROR:
            text = f"{peer} reported an error: {info.get('error', '')}"
        else:
            text = f"{peer} asked to stop feeding ({info.get('reason', 'terminate()')})"
        super().__init__(text)


# ---------------------------------------------------------------------------------------------
# the feed directory
# ---------------------------------------------------------------------------------------------
class FeedDir:
    """The files of one TF process's ``feed_dir`` (a private, executor-local directory)."""

    EXIT_FILE = "_tf_exit.json"
    END_ALL = "_end_feed"

    def __init__(self, path: str):
        self.path = path

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def socket_path(self, qname: str) -> str:
        return self._file(f"{qname}.sock")

    def addr_path(self, qname: str) -> str:
        return self._file(f"{qname}.addr")

    def _touch(self, name: str, text: str = "") -> None:
        _atomic_write(self._file(name), text)

    # terminate(): no more data wanted for this input
    def mark_terminated(self, qname: str, reason: str = "terminate()") -> None:
        self._touch(f"{qname}.terminated", reason)

    def terminated(self, qname: str) -> bool:
        return os.path.exists(self._file(f"{qname}.terminated"))

    # end of feed: no more data will come (cluster shutdown); qname=None: every input
    def mark_ended(self, qname: str | None = None) -> None:
        self._touch(self.END_ALL if qname is None else f"{qname}.end")

    def ended(self, qname: str) -> bool:
        return os.path.exists(self._file(self.END_ALL)) or os.path.exists(self._file(f"{qname}.end"))

    # exit state of the TF process
    def write_exit(self, state: str, error: str) -> None:
        _atomic_write(self._file(self.EXIT_FILE), json.dumps({"state": state, "error": error, "time": time.time()}))

    def read_exit(self) -> dict | None:
        try:
            with open(self._file(self.EXIT_FILE)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None


def _atomic_write(path: str, text: str) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# peer credentials
# ---------------------------------------------------------------------------------------------
_CRED = struct.Struct("3i")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of a Unix socket, where the OS tells."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    try:
        return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, opt, _CRED.size))
    except OSError:
        return None


def _check_same_user(sock: socket.socket) -> int | None:
    cred = peer_credentials(sock)
    if cred is None:
        return None
    pid, uid, _ = cred
    if uid != os.getuid():
        raise FeedError(f"refusing a feed connection from uid {uid} (pid {pid}); this process runs as "
                        f"uid {os.getuid()}")
    return pid or None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------
# a connection (either side)
# ---------------------------------------------------------------------------------------------
class Connection:
    """One framed, non-blocking stream with timeouts, an inbox and peer liveness checks.

    ``liveness`` is called about every :data:`POLL_SLICE` seconds during a blocking wait; it
    may raise to abandon the wait (the peer's process died, the task was cancelled, ...).

    Reading is bounded: ``recv`` reads one message at a time. ``drain_on_send`` (the feeder
    side, whose incoming traffic is small: control messages and results for rows it sent)
    also reads whatever has arrived before every send, so TERMINATE is seen at once; the TF
    side reads while sending only when the send would block (so neither side can deadlock),
    never pulling data into memory ahead of its consumer.
    """

    def __init__(self, sock: socket.socket, peer: str, *, liveness: Callable[[], None] | None = None,
                 peer_pid: int | None = None, drain_on_send: bool = False):
        sock.setblocking(False)
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:
                pass
        self.sock = sock
        self.peer = peer
        self.peer_pid = peer_pid if peer_pid is not None else _check_same_user(sock)
        self.liveness = liveness
        self.drain_on_send = drain_on_send
        self.inbox: deque[Message] = deque()
        self.eof = False
        self.closed = False
        self._hdr = bytearray(HEADER.size)
        self._hdr_got = 0
        self._body: bytearray | None = None
        self._body_got = 0
        self._type = 0
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)

    # -- reading ----------------------------------------------------------------------------
    def _read_available(self, limit: int | None = None) -> None:
        """Read what the socket has now into the inbox, at most ``limit`` messages (never blocks)."""
        got = 0
        while not self.eof and (limit is None or got < limit):
            try:
                if self._body is None:
                    n = self.sock.recv_into(memoryview(self._hdr)[self._hdr_got:])
                else:
                    n = self.sock.recv_into(memoryview(self._body)[self._body_got:])
            except (BlockingIOError, InterruptedError):
                return
            except (ConnectionResetError, BrokenPipeError):
                self.eof = True
                return
            if n == 0:
                self.eof = True
                return
            if self._body is None:
                self._hdr_got += n
                if self._hdr_got < HEADER.size:
                    continue
                magic, mtype, length = HEADER.unpack(self._hdr)
                if magic != MAGIC or length > MAX_MESSAGE_BYTES or (
                        mtype in CONTROL_TYPES and length > MAX_CONTROL_BYTES):
                    raise FeedError(f"protocol error on the feed channel with {self.peer}: bad header "
                                    f"{bytes(self._hdr)!r}")
                self._hdr_got = 0
                self._type = mtype
                self._body = bytearray(length)
                self._body_got = 0
            else:
                self._body_got += n
            if self._body is not None and self._body_got == len(self._body):
                self.inbox.append(Message(self._type, self._body))
                self._body = None
                got += 1

    def _wait(self, events: int, deadline: float | None, what: str, timeout: float | None) -> int:
        """Block until ``events`` on the socket, with liveness checks; raises FeedTimeout."""
        poll = self._poll
        poll.modify(self.sock.fileno(), events)
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise FeedTimeout(f"timed out after {timeout:g}s waiting for {what}")
            slice_ = POLL_SLICE if left is None else min(POLL_SLICE, left)
            ready = poll.poll(slice_ * 1000)
            if ready:
                return ready[0][1]
            self.check_alive(what)

    def check_alive(self, what: str = "") -> None:
        if self.peer_pid and not pid_alive(self.peer_pid):
            raise PeerGone(f"{self.peer} (pid {self.peer_pid}) is gone" + (f" while waiting for {what}" if what else ""))
        if self.liveness is not None:
            self.liveness()

    def recv(self, *, timeout: float | None, what: str) -> Message:
        """The next message (inbox first); raises PeerGone on EOF, FeedTimeout after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.inbox:
                return self.inbox.popleft()
            if self.eof:
                raise PeerGone(f"{self.peer} closed the feed connection while we waited for {what}")
            self._wait(select.POLLIN, deadline, what, timeout)
            self._read_available(1)

    def poll_message(self) -> Message | None:
        """A message if one has arrived, without blocking."""
        if not self.inbox and not self.eof:
            self._read_available(1)
        return self.inbox.popleft() if self.inbox else None

    def _raise_interrupt(self) -> None:
        for msg in self.inbox:
            if msg.type in INTERRUPTS:
                self.inbox.remove(msg)
                raise Interrupted(msg, self.peer)

    # -- writing ----------------------------------------------------------------------------
    def send(self, mtype: int, payload: Any = b"", *, timeout: float | None, what: str) -> None:
        """Send one message; reads incoming messages meanwhile (so neither side can deadlock).

        Raises :class:`Interrupted` as soon as the peer sent TERMINATE/ERROR, :class:`PeerGone`
        when it closed, :class:`FeedTimeout` when it did not take the bytes within ``timeout``.
        """
        parts: Sequence[Any] = payload if isinstance(payload, list) else [payload]
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        length = sum(len(v) for v in views)
        bufs = [memoryview(HEADER.pack(MAGIC, mtype, length))] + views
        deadline = None if timeout is None else time.monotonic() + timeout
        while bufs:
            if self.drain_on_send:
                self._read_available()
            self._raise_interrupt()
            if self.eof:
                raise PeerGone(f"{self.peer} closed the feed connection while we were sending ({what})")
            try:
                sent = self.sock.sendmsg(bufs)
            except (BlockingIOError, InterruptedError):
                ev = self._wait(select.POLLOUT | select.POLLIN, deadline, what, timeout)
                if ev & select.POLLIN:
                    self._read_available()
                if ev & (select.POLLHUP | select.POLLERR):
                    self._read_available()
                    self._raise_interrupt()
                    raise PeerGone(f"{self.peer} closed the feed connection while we were sending ({what})") from None
                continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                self._read_available()
                self._raise_interrupt()
                raise PeerGone(f"{self.peer} closed the feed connection while we were sending ({what})") from exc
            while sent:
                head = bufs[0]
                if sent >= len(head):
                    sent -= len(head)
                    bufs.pop(0)
                else:
                    bufs[0] = head[sent:]
                    sent = 0

    def send_control(self, mtype: int, obj: dict | None = None, *, timeout: float | None, what: str) -> None:
        self.send(mtype, pack_control(obj or {}), timeout=timeout, what=what)

    # -- closing ----------------------------------------------------------------------------
    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def drain_until_eof(self, timeout: float) -> None:
        """Discard incoming bytes until the peer closes or ``timeout`` passes (a polite close)."""
        deadline = time.monotonic() + timeout
        buf = bytearray(1 << 16)
        self._poll.modify(self.sock.fileno(), select.POLLIN)
        while not self.eof and time.monotonic() < deadline:
            if not self._poll.poll(max(0.0, min(POLL_SLICE, deadline - time.monotonic())) * 1000):
                continue
            try:
                if self.sock.recv_into(buf) == 0:
                    self.eof = True
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                self.eof = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# TF side: listening
# ---------------------------------------------------------------------------------------------
def unix_listener(path: str, backlog: int) -> socket.socket:
    """A listening Unix socket at ``path`` that only this user can connect to; a socket file left
    at ``path`` (by a process that was killed) is replaced."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o077)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    """The TF process's listening socket for one named input, advertised in ``feed_dir``."""

    def __init__(self, feed_dir: str, qname: str, backlog: int = 64):
        self.feed_dir = FeedDir(feed_dir)
        self.qname = qname
        path = self.feed_dir.socket_path(qname)
        self._short_dir = None
        if len(os.fsencode(path)) > MAX_SUN_PATH:
            self._short_dir = tempfile.mkdtemp(prefix="tfos-feed-")  # mode 0700
            path = os.path.join(self._short_dir, f"{qname}.sock")
        self.path = path
        sock = unix_listener(path, backlog)  # replaces a socket left by an earlier or crashed DataFeed
        sock.setblocking(False)
        self.sock = sock
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        _atomic_write(self.feed_dir.addr_path(qname), json.dumps({"path": path, "pid": os.getpid(),
                                                                  "version": PROTOCOL_VERSION}))

    def accept(self, timeout: float) -> socket.socket | None:
        """A new connection, or None after ``timeout`` seconds."""
        if not self._poll.poll(max(0.0, timeout) * 1000):
            return None
        try:
            sock, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        return sock

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        addr = self.feed_dir.addr_path(self.qname)
        try:
            with open(addr) as f:
                mine = json.load(f).get("path") == self.path
        except (OSError, ValueError):
            mine = False
        # a later DataFeed of this process may have taken over the same path: leave it alone
        for path in ([addr, self.path] if mine else [self.path] if self._short_dir else []):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if self._short_dir:
            try:
                os.rmdir(self._short_dir)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# feeder side: connecting
# ---------------------------------------------------------------------------------------------
def connect(feed_dir: str, qname: str, *, peer: str, timeout: float | None,
            check: Callable[[], None] | None = None, liveness: Callable[[], None] | None = None) -> Connection:
    """Connect to the TF process's listener for ``qname``, waiting until it exists.

    ``check`` is called while waiting (about every 0.1 s) and may raise to give up (the TF
    process exited, the input was terminated, ...).
    """
    fdir = FeedDir(feed_dir)
    addr_path = fdir.addr_path(qname)
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.02
    while True:
        if check is not None:
            check()
        path = owner = None
        try:
            with open(addr_path) as f:
                addr = json.load(f)
            path, owner = addr.get("path"), addr.get("pid")
        except (OSError, ValueError, AttributeError):
            pass
        if path and owner and not pid_alive(owner):
            raise PeerGone(f"the TF process of {peer} (pid {owner}) that opened data feed {qname!r} is gone")
        if path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError as exc:
                sock.close()
                if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN):
                    raise PeerGone(f"cannot connect to the data feed {qname!r} of {peer} at {path}: {exc}") from exc
            else:
                return Connection(sock, peer, liveness=liveness, drain_on_send=True)
        if deadline is not None and time.monotonic() >= deadline:
            raise FeedTimeout(
                f"timed out after {timeout:g}s waiting for {peer} to open its data feed {qname!r} in {feed_dir} "
                f"(is main_fun creating ctx.get_data_feed(qname_in={qname!r}) / TFNode.DataFeed?)")
        time.sleep(delay)
        delay = min(0.2, delay * 2)
