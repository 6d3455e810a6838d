"""Output relay: what a TF process writes reaches the driver's log, each line tagged with its node.

Node side (:class:`OutputRelay`, inside the TF process): file descriptors 1 and 2 become pipes.
A reader thread per stream tees every chunk to the original descriptor (the executor's stdout
and stderr logs stay whole, native TF output included) and queues each complete line; Python
logging records are queued with their level by :class:`RelayHandler`. The queue is bounded
(``MAX_QUEUED_LINES`` lines, ``MAX_QUEUED_CHARS`` characters): when it is full, lines from the
middle of the burst are dropped and counted (its start and its latest lines stay), so a writer
never waits on the network. A sender thread ships the
queue in batches as ``LOG`` messages over the reservation control plane (HMAC-signed JSON, never
pickle), at most ``LINES_PER_SEC`` lines a second (bursts of ``BURST_LINES``), and the dropped
count with them.

Driver side (:class:`DriverRelay`): each line is logged on logger ``tfos.node`` as
``[worker:1] text`` (stdout at INFO, stderr at WARNING unless it is a native INFO/ERROR line,
logging records at their own level; ``record.tfos_node`` and ``record.tfos_stream`` name the
source), and a dropped count as a warning.

Levels, ``tfos.run(..., relay=...)`` or else the driver's ``TFOS_RELAY``: ``"all"`` (default),
``"warnings"`` (records and lines at WARNING and above: no stdout, no INFO logging or native INFO
lines), ``"off"`` (nothing is captured; output stays in the executors' logs only).
"""

from __future__ import annotations

import collections
import logging
import os
import re
import select
import sys
import threading
import time
from typing import Any

from tfos.reservation.client import ReservationClient, ReservationError

RELAY_ENV = "TFOS_RELAY"
LEVELS = ("all", "warnings", "off")
NODE_LOGGER = "tfos.node"
MAX_QUEUED_LINES = 2000
MAX_QUEUED_CHARS = 1 << 20
MAX_LINE_CHARS = 4000
LINES_PER_SEC = 500.0
BURST_LINES = 2000
BATCH_LINES = 500
BATCH_CHARS = 100_000  # JSON escapes at most 6x: a batch stays far under the frame cap
SEND_INTERVAL = 0.25
FLUSH_SECS = 5.0
# glog/absl lines (``I0000 00:00:1733.1  42 cpu_feature_guard.cc:210] ...``) and TF's own
# (``2026-12-02 03:51:05.260402: I external/.../cudart_stub.cc:32] ...``): their level letter
_NATIVE = re.compile(r"^(?:([IWEF])\d{4} [\d:.]+(?:\s+\d+)?\s+\S+:\d+\]"
                     r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) \S+:\d+\])")
_NATIVE_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}

Line = tuple[str, int, str]  # (stream: "out" | "err" | "log", level, text)


def resolve_level(relay: str | None) -> str:
    """The relay level for ``tfos.run(relay=...)``: the argument, else ``TFOS_RELAY``, else ``"all"``."""
    level = (relay if relay is not None else os.environ.get(RELAY_ENV, "all")).strip().lower()
    if level not in LEVELS:
        raise ValueError(f"relay must be one of {', '.join(LEVELS)}; got {level!r}")
    return level


def line_level(stream: str, text: str) -> int:
    """The log level a relayed line gets: stdout INFO, stderr WARNING unless it is native glog-style output."""
    if stream == "out":
        return logging.INFO
    m = _NATIVE.match(text)
    return _NATIVE_LEVELS[m.group(1) or m.group(2)] if m else logging.WARNING


class LineQueue:
    """Bounded FIFO of lines whose ``put`` never blocks.

    When it is full the lines in the middle go, counted: it keeps the first ``max_lines // 2``
    lines queued since it was last empty (how a burst began) and the latest ones after them (how
    it ended: a traceback), in order. Lines below WARNING go first: a warning or a stderr line
    that arrives in the middle of a flood of prints stays.
    """

    def __init__(self, max_lines: int = MAX_QUEUED_LINES, max_chars: int = MAX_QUEUED_CHARS):
        self.max_lines, self.max_chars = max_lines, max_chars
        self._head: collections.deque[Line] = collections.deque()
        self._tail: collections.deque[Line] = collections.deque()
        self._chars = 0
        self._tail_minor = 0  # lines below WARNING in _tail: dropped before the others
        self._dropped = 0
        self._lock = threading.Lock()

    def put(self, line: Line) -> None:
        self.put_many([line])

    def put_many(self, lines: list[Line]) -> None:
        with self._lock:
            for line in lines:
                if not self._tail and len(self._head) < self.max_lines // 2:
                    self._head.append(line)
                else:
                    self._tail.append(line)
                    self._tail_minor += line[1] < logging.WARNING
                self._chars += len(line[2])
            while len(self._head) + len(self._tail) > self.max_lines or self._chars > self.max_chars:
                gone = self._drop_one()
                self._chars -= len(gone[2])
                self._dropped += 1

    def _drop_one(self) -> Line:
        """Remove the oldest line of the tail below WARNING, else its oldest line, else the head's newest."""
        if not self._tail:
            return self._head.pop()
        if self._tail_minor:
            for i, line in enumerate(self._tail):  # in a flood of prints the first one is it
                if line[1] < logging.WARNING:
                    del self._tail[i]
                    self._tail_minor -= 1
                    return line
        gone = self._tail.popleft()
        self._tail_minor -= gone[1] < logging.WARNING
        return gone

    def take(self, max_lines: int, max_chars: int = BATCH_CHARS) -> tuple[list[Line], int]:
        """Up to ``max_lines`` lines from the front, and the lines dropped since the last take."""
        out: list[Line] = []
        chars = 0
        with self._lock:
            for part in (self._head, self._tail):
                while part and len(out) < max_lines and (not out or chars + len(part[0][2]) <= max_chars):
                    line = part.popleft()
                    if part is self._tail:
                        self._tail_minor -= line[1] < logging.WARNING
                    self._chars -= len(line[2])
                    chars += len(line[2])
                    out.append(line)
            if not self._head and self._tail:
                self._head, self._tail = self._tail, self._head
                self._tail_minor = 0  # the new tail is the old, empty head
            dropped, self._dropped = self._dropped, 0
        return out, dropped

    def give_back(self, dropped: int) -> None:
        """Count ``dropped`` again (a batch that could not be sent)."""
        with self._lock:
            self._dropped += dropped

    def __len__(self) -> int:
        with self._lock:
            return len(self._head) + len(self._tail)


class RelayHandler(logging.Handler):
    """Queues Python logging records (``name: message`` and the traceback) with their level."""

    def __init__(self, relay: OutputRelay):
        super().__init__()
        self.relay = relay

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno < self.relay.min_level:
                return
            own = record.name in ("root", NODE_LOGGER)  # the TF process's own records need no name
            text = record.getMessage() if own else f"{record.name}: {record.getMessage()}"
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                text += "\n" + record.exc_text
            for part in text.split("\n"):
                self.relay.put("log", record.levelno, part)
        except Exception:  # noqa: BLE001 - a logging handler must never raise
            self.handleError(record)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except OSError:
            return  # the original stream is gone; the relay still carries the line


class OutputRelay:
    """Captures this process's fds 1 and 2 and its logging records, and ships them to the driver."""

    def __init__(self, client: ReservationClient, executor_id: int, level: str,
                 queue: LineQueue | None = None, lines_per_sec: float = LINES_PER_SEC, burst: int = BURST_LINES):
        self.client = client
        self.executor_id = executor_id
        self.level = level
        self.min_level = logging.WARNING if level == "warnings" else logging.NOTSET
        self.queue = queue or LineQueue()
        self.lines_per_sec, self.burst = lines_per_sec, burst
        self.handler = RelayHandler(self)
        self.original: dict[int, int] = {}  # fd -> a duplicate of what it was before capture
        self._readers: list[threading.Thread] = []
        self._sender: threading.Thread | None = None
        self._closing = threading.Event()
        self._sent_everything = threading.Event()
        self.sent = 0

    @classmethod
    def for_node(cls, address: tuple[str, int], secret: bytes, executor_id: int) -> OutputRelay | None:
        """Ask the driver for the relay level and start relaying; None when the relay is off or unreachable."""
        client = ReservationClient(address, secret, timeout=5.0)
        try:
            level = client.log(executor_id, [])
        except ReservationError:
            client.close()
            return None
        if level not in ("all", "warnings"):
            client.close()
            return None
        return cls(client, executor_id, level).start()

    @property
    def stderr_fd(self) -> int:
        """Where this process's own logging should write so it is not captured twice: the original stderr."""
        return self.original.get(2, 2)

    def put(self, stream: str, level: int, text: str) -> None:
        if level < self.min_level or self._sent_everything.is_set():
            return
        if len(text) > MAX_LINE_CHARS:
            text = f"{text[:MAX_LINE_CHARS]} [... {len(text) - MAX_LINE_CHARS} more characters]"
        self.queue.put((stream, level, text))

    # capture ------------------------------------------------------------------------------------
    def start(self) -> OutputRelay:
        for fd, stream in ((1, "out"), (2, "err")):
            try:
                self.original[fd] = os.dup(fd)
            except OSError:
                continue  # no such stream (closed by the parent): nothing to capture
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            reader = threading.Thread(target=self._read, args=(stream, read_end, self.original[fd]),
                                      name=f"tfos-relay-{stream}", daemon=True)
            reader.start()
            self._readers.append(reader)
        self._sender = threading.Thread(target=self._send_loop, name="tfos-relay-send", daemon=True)
        self._sender.start()
        return self

    def _read(self, stream: str, read_end: int, original: int) -> None:
        try:
            self._pump(stream, read_end, original)
        except Exception:  # noqa: BLE001 - never print from here: stderr is the pipe this thread drains
            for fd in self.original:  # stop capturing rather than let writers fill a pipe nobody reads
                os.dup2(self.original[fd], fd)

    def _pump(self, stream: str, read_end: int, original: int) -> None:
        pending = b""
        while True:
            ready, _, _ = select.select([read_end], [], [], 0.05)
            if not ready:
                if self._closing.is_set():
                    break  # everything written before close() has been read
                continue
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            _write_all(original, chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > MAX_LINE_CHARS * 4:
                lines.append(pending)
                pending = b""
            self._queue_raw(stream, lines)
        if pending:
            self._queue_raw(stream, [pending])
        os.close(read_end)

    def _queue_raw(self, stream: str, raws: list[bytes]) -> None:
        if not raws or self._sent_everything.is_set():
            return
        texts = b"\n".join(raws).decode("utf-8", errors="replace").split("\n")
        lines = []
        for text in texts:
            if "\r" in text:  # a progress bar redrawn in place: its last state
                text = text.rstrip("\r").rsplit("\r", 1)[-1]
            level = line_level(stream, text)
            if level < self.min_level:
                continue
            if len(text) > MAX_LINE_CHARS:
                text = f"{text[:MAX_LINE_CHARS]} [... {len(text) - MAX_LINE_CHARS} more characters]"
            lines.append((stream, level, text))
        self.queue.put_many(lines)

    # sending ------------------------------------------------------------------------------------
    def _send_batch(self, limit: int) -> int:
        lines, dropped = self.queue.take(max(0, limit))
        if not lines and not dropped:
            return 0
        try:
            self.client.log(self.executor_id, lines, dropped)
        except ReservationError:
            self.queue.give_back(dropped + len(lines))  # counted, never silently lost
            return -1
        self.sent += len(lines)
        return len(lines)

    def _send_loop(self) -> None:
        tokens, last = float(self.burst), time.monotonic()
        while not self._closing.wait(SEND_INTERVAL):
            now = time.monotonic()
            tokens, last = min(float(self.burst), tokens + (now - last) * self.lines_per_sec), now
            while tokens >= 1:
                sent = self._send_batch(min(BATCH_LINES, int(tokens)))
                if sent <= 0:
                    break
                tokens -= sent

    def close(self, timeout: float = FLUSH_SECS) -> None:
        """Restore fds 1 and 2, read what is left in the pipes, and ship the queue within ``timeout``."""
        deadline = time.monotonic() + timeout
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd, original in self.original.items():
            os.dup2(original, fd)  # later output goes straight to the executor's log
        self._closing.set()
        for thread in [*self._readers, *([self._sender] if self._sender else [])]:
            thread.join(max(0.0, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            sent = self._send_batch(BATCH_LINES)
            if sent == -1:
                time.sleep(0.2)
            elif sent == 0:
                break
        lines, dropped = self.queue.take(len(self.queue) + 1, max_chars=1 << 62)
        if lines or dropped:
            try:
                self.client.log(self.executor_id, [], dropped + len(lines))
            except ReservationError:
                pass  # the driver is gone: nothing left to tell
        self._sent_everything.set()
        self.client.close()


def ensure_visible(log: logging.Logger, level: int) -> None:
    """Records of ``log`` at ``level`` reach the console: the level set unless the user set one, and a
    stderr handler where no handler would see them (logging never configured)."""
    if log.level == logging.NOTSET:
        log.setLevel(level)
    if not log.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)


class DriverRelay:
    """Driver side: logs each relayed line on ``tfos.node`` as ``[worker:1] text``; counts per node."""

    def __init__(self, level: str, logger: logging.Logger | None = None):
        self.level = level
        self.log = logger or logging.getLogger(NODE_LOGGER)
        self.lines: collections.Counter[str] = collections.Counter()
        self.dropped: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def install(self) -> DriverRelay:
        """Make the lines visible on the driver's console even where logging was never configured."""
        ensure_visible(self.log, logging.INFO if self.level == "all" else logging.WARNING)
        return self

    def deliver(self, node: str, lines: list[tuple[str, int, str]], dropped: int) -> None:
        extra: dict[str, Any] = {"tfos_node": node}
        for stream, level, text in lines:
            extra["tfos_stream"] = stream
            self.log.log(level, "[%s] %s", node, text, extra=extra)
        if dropped:
            extra["tfos_stream"] = "relay"
            extra["tfos_dropped"] = dropped
            self.log.warning("[%s] relay dropped %d lines (output faster than %d lines/s or the driver out of "
                             "reach); the executor's stdout/stderr logs have every line", node, dropped,
                             int(LINES_PER_SEC), extra=extra)
        with self._lock:
            self.lines[node] += len(lines)
            self.dropped[node] += dropped
