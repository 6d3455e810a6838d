"""Feed progress: shard feed tasks report rows fed; the driver logs rows and rows/s.

The same channel carries a failing task's error to the driver at once, so that ``train``
cancels the feed job and raises that error instead of waiting for Spark's retries.

It also exchanges the feed tasks' shard sizes (:func:`exchange_sizes`): each task sends its
own and the server answers, on the same connection, with every shard's once all have
arrived, and hands them to ``on_plan`` on the driver. (Spark's ``BarrierTaskContext.allGather`` does the same but polls once a second,
which cost a whole second per ``train`` call.)

The driver's :class:`ProgressServer` listens on the driver host; each feed task's
:class:`ProgressReporter` sends a cumulative report about once a second. Frames are the
shared signed frames of :mod:`tfos.reservation.frames` (magic ``TFFP``, at most ``MAX_FRAME``
bytes of JSON) with a fresh random key per feed (shipped to the tasks in the job closure);
the server never unpickles, drops any frame that is too long, unauthenticated or malformed,
and keeps serving. Progress is best effort: a
reporter that cannot reach the driver stays silent and the feed goes on.
"""

from __future__ import annotations

import json
import logging
import secrets
import select
import socket
import sys
import threading
import time
from typing import Any

from tfos.reservation import frames

logger = logging.getLogger("tfos.feed")

MAX_FRAME = 64 * 1024
CODEC = frames.FrameCodec(b"TFFP", MAX_FRAME, "tfos feed progress")
REPORT_EVERY = 1.0


class ProgressServer:
    """Driver side: collects reports, logs progress every ``log_every`` seconds (tqdm on a terminal)."""

    def __init__(self, host: str, totals: dict[str, int], *, desc: str = "feed", log_every: float = 10.0,
                 use_tqdm: bool | None = None, log: bool = True, on_error: Any = None, on_plan: Any = None):
        self.key = secrets.token_bytes(32)
        self.totals = dict(totals)
        self.desc = desc
        self.log_every = log_every
        self.log = log
        self.on_error = on_error
        self.on_plan = on_plan
        self.errors: list[str] = []
        self._rows: dict[tuple, dict[str, int]] = {}  # (feed, shard) -> qname -> rows (cumulative)
        self._states: dict[tuple, dict[str, str]] = {}
        self._node_of: dict[tuple, str] = {}  # (feed, shard) -> the TF node it feeds ("worker:0"), if told
        self._info: dict[tuple, dict[str, Any]] = {}  # (feed, shard) -> qname -> what a feed hub told of it
        self._lock = threading.Lock()
        self._sizes: dict[str, dict[int, tuple]] = {}  # feed -> shard -> (its sizes, its connection): this round
        self._sizes_changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._sock = socket.create_server((host, 0))
        self._sock.settimeout(0.5)
        self.address = (host, self._sock.getsockname()[1], self.key.hex())
        self._bar = None
        if use_tqdm is None:
            use_tqdm = log and sys.stderr.isatty()
        if use_tqdm:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=sum(self.totals.values()) or None, desc=desc, unit="rows", unit_scale=True)
            except ImportError:
                self._bar = None
        self._shown = 0
        self._threads = [threading.Thread(target=self._accept_loop, name="tfos-progress-accept", daemon=True),
                         threading.Thread(target=self._log_loop, name="tfos-progress-log", daemon=True)]
        for t in self._threads:
            t.start()

    # -- collecting ----------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="tfos-progress-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(60.0)
        try:
            with conn:
                while not self._stop.is_set():
                    try:
                        body = _read_frame(conn, self.key)
                    except ConnectionError as exc:
                        logger.warning("dropped a progress connection: %s", exc)
                        return
                    if body is None:
                        return
                    report = json.loads(body)
                    if "sizes" in report:
                        self._answer_sizes(conn, report)
                        return
                    self._update(report)
        except frames.FrameError as exc:  # an answer over the cap: the task sees its connection close
            logger.warning("feed progress: could not answer a feed task: %s", exc)
        except (OSError, ValueError, TypeError, KeyError):
            return

    def _update(self, report: dict) -> None:
        if report.get("error"):
            message = str(report["error"])
            with self._lock:
                self.errors.append(message)
            if self.on_error is not None:
                try:
                    self.on_error(message)
                except Exception:  # noqa: BLE001 - the error is kept in self.errors anyway
                    logger.exception("progress error callback failed")
            return
        ident = (str(report["feed"]), int(report["shard"]))
        rows = {str(k): int(v) for k, v in dict(report.get("rows", {})).items()}
        states = {str(k): str(v) for k, v in dict(report.get("states", {})).items()}
        node = report.get("node")
        info = report.get("info")
        with self._lock:
            self._rows[ident] = rows
            self._states[ident] = states
            if isinstance(info, dict):
                self._info[ident] = {str(k): v for k, v in info.items() if isinstance(v, dict)}
            if isinstance(node, str) and node:
                self._node_of[ident] = node[:100]

    def _answer_sizes(self, conn: socket.socket, report: dict) -> None:
        """One feed task's shard sizes in; every shard's out, once all ``shards`` have sent theirs.

        Each task waits on its open connection, so a task that died (its stage failed) is seen
        by its closed connection and dropped from the round; a shard that reports again while
        its earlier report still waits starts a new round (a retried barrier stage).
        """
        feed = str(report["feed"])
        shard, shards = int(report["shard"]), int(report["shards"])
        timeout = float(report.get("timeout", 600))
        deadline = time.monotonic() + timeout
        with self._sizes_changed:
            got = self._sizes.get(feed)
            if got is None or len(got) >= shards or shard in got:  # first, complete (answered) or retried
                got = self._sizes[feed] = {}
            else:
                _drop_closed(got)
            got[shard] = ([int(x) for x in report["sizes"]], conn)
            completed = len(got) == shards  # this task completed the round: it tells on_plan
            self._sizes_changed.notify_all()
            while len(got) < shards and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or _closed(conn):
                    break
                self._sizes_changed.wait(min(left, 0.5))
                if len(got) < shards:  # a complete round is never changed again: its waiters answer from it
                    _drop_closed(got)
            answer = {"sizes": [got[k][0] if k in got else None for k in range(shards)]}
        conn.settimeout(10.0)
        conn.sendall(_frame(self.key, json.dumps(answer).encode()))
        if completed and self.on_plan is not None:
            try:
                self.on_plan(answer["sizes"])
            except Exception:  # noqa: BLE001 - the plan is informational
                logger.exception("progress plan callback failed")

    def set_totals(self, totals: dict[str, int]) -> None:
        """The rows the feed will deliver per input (known once the feed tasks agreed their shards)."""
        with self._lock:
            self.totals = dict(totals)
        if self._bar is not None:
            self._bar.total = sum(totals.values()) or None
            self._bar.refresh()

    # -- reading -------------------------------------------------------------------------------
    def rows(self) -> dict[str, int]:
        """Rows fed so far per input."""
        out: dict[str, int] = {}
        with self._lock:
            for rows in self._rows.values():
                for q, n in rows.items():
                    out[q] = out.get(q, 0) + n
        return out

    def rows_by_node(self) -> dict[str, dict[str, int]]:
        """Rows fed so far per TF node (``"worker:0"``) and input, from the reports that named their node."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for ident, rows in self._rows.items():
                node = self._node_of.get(ident)
                if node is None:
                    continue
                mine = out.setdefault(node, {})
                for q, n in rows.items():
                    mine[q] = mine.get(q, 0) + n
        return out

    def infos(self) -> dict[tuple, dict[str, dict]]:
        """What each feed hub told of its inputs (``(feed, shard) -> qname -> {...}``): its plan, its end."""
        with self._lock:
            return {k: dict(v) for k, v in self._info.items()}

    def states(self) -> dict[tuple, dict[str, str]]:
        with self._lock:
            return {k: dict(v) for k, v in self._states.items()}

    def line(self) -> str:
        rows = self.rows()
        elapsed = max(1e-6, time.monotonic() - self._started)
        parts = []
        for q, total in self.totals.items():
            n = rows.get(q, 0)
            pct = f" ({100.0 * n / total:.1f}%)" if total else ""
            parts.append(f"{q}: {n}/{total} rows{pct}")
        return f"{self.desc}: " + ", ".join(parts) + f", {sum(rows.values()) / elapsed:.0f} rows/s"

    def _log_loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.5):
            fed = sum(self.rows().values())
            if self._bar is not None and fed > self._shown:
                self._bar.update(fed - self._shown)
                self._shown = fed
            if self._bar is None and self.log and self.totals and time.monotonic() - last >= self.log_every:
                last = time.monotonic()
                logger.info(self.line())

    def close(self) -> None:
        self._stop.set()
        try:
            self._sock.close()
        except OSError:
            pass
        if self._bar is not None:
            fed = sum(self.rows().values())
            if fed > self._shown:
                self._bar.update(fed - self._shown)
            self._bar.close()


def _closed(conn: socket.socket) -> bool:
    """Whether the peer closed ``conn`` (a waiting task that sent its request sends nothing more)."""
    try:
        poller = select.poll()  # not select(): no limit on the descriptor's number
        poller.register(conn, select.POLLIN)
        if not poller.poll(0):
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (ValueError, OSError):  # already closed here, or reset by the peer
        return True


def _drop_closed(got: dict[int, tuple]) -> None:
    """Leave out of an incomplete round the shards whose task closed its connection (it died)."""
    for k in [k for k, (_, conn) in got.items() if _closed(conn)]:
        del got[k]


def _frame(key: bytes, body: bytes) -> bytes:
    """``body`` framed and signed with ``key``; ``frames.FrameError`` if it is over ``MAX_FRAME``."""
    return CODEC.encode(key, body)


def _read_frame(conn: socket.socket, key: bytes) -> bytes | None:
    """The next frame's body; None at end of stream; ConnectionError for a frame that is too long,
    cut short, not a feed progress frame or not signed with ``key``. The socket's timeout applies."""
    try:
        return CODEC.read(conn, key, None)
    except EOFError:
        return None
    except frames.FrameError as exc:
        if exc.reason == frames.BAD_MAGIC:
            raise ConnectionError(f"{exc}; the driver and the executors may run different tfos versions") from None
        raise ConnectionError(str(exc)) from None


class ProgressReporter:
    """Task side: cumulative rows per input, sent about once a second (best effort).

    ``background=False`` sends nothing by itself (for a one-shot :meth:`error`).
    """

    def __init__(self, address: tuple, ident: dict[str, Any], *, background: bool = True):
        host, port, key_hex = address
        self._addr = (host, int(port))
        self._key = bytes.fromhex(key_hex)
        self._ident = dict(ident)
        self._rows: dict[str, int] = {}
        self._states: dict[str, str] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._broken = False
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._loop, name="tfos-progress-report", daemon=True)
            self._thread.start()

    def add(self, qname: str, rows: int) -> None:
        with self._lock:
            self._rows[qname] = self._rows.get(qname, 0) + rows

    def state(self, qname: str, state: str) -> None:
        with self._lock:
            self._states[qname] = state

    def info(self, qname: str, fields: dict[str, Any]) -> None:
        """Facts about ``qname`` for the driver (merged, sent with every report): a hub's plan and end."""
        with self._lock:
            self._info.setdefault(qname, {}).update(fields)

    def _send(self, extra: dict | None = None) -> None:
        if self._broken:
            return
        with self._lock:
            report = dict(self._ident, rows=dict(self._rows), states=dict(self._states))
            if self._info:
                report["info"] = {q: dict(v) for q, v in self._info.items()}
        if extra:
            report.update(extra)
        body = json.dumps(report).encode()
        if len(body) > MAX_FRAME:
            body = json.dumps(dict(report, error=str(report.get("error", ""))[-MAX_FRAME // 2:])).encode()
        try:
            frame = _frame(self._key, body)
        except frames.FrameError as exc:  # a report of too many inputs: skipped, the feed goes on
            logger.debug("feed progress report not sent: %s", exc)
            return
        try:
            if self._sock is None:
                self._sock = socket.create_connection(self._addr, timeout=5.0)
            self._sock.sendall(frame)
        except OSError:
            self._broken = True

    def _loop(self) -> None:
        while not self._stop.wait(REPORT_EVERY):
            self._send()

    def error(self, message: str) -> None:
        """Report ``message`` as this task's failure (synchronously, best effort)."""
        self._broken = False
        self._send({"error": message})

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._send()
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass


def exchange_sizes(address: tuple, feed: str, shard: int, shards: int, sizes: list[int],
                   timeout: float) -> list[list[int] | None]:
    """Send this feed task's shard ``sizes`` to the driver; every shard's sizes once all ``shards``
    sent theirs (``None`` for a shard that did not within ``timeout`` seconds)."""
    host, port, key_hex = address
    key = bytes.fromhex(key_hex)
    body = json.dumps({"feed": feed, "shard": shard, "shards": shards, "sizes": sizes,
                       "timeout": timeout}).encode()
    with socket.create_connection((host, int(port)), timeout=10.0) as conn:
        conn.sendall(_frame(key, body))
        conn.settimeout(timeout + 10.0)
        answer = _read_frame(conn, key)
    if answer is None:
        raise ConnectionError("the driver closed the connection before answering")
    return json.loads(answer)["sizes"]


def report_error(address: tuple | None, ident: dict[str, Any], message: str) -> None:
    """One-shot error report to the driver's ProgressServer at ``address`` (if any)."""
    if not address:
        return
    reporter = ProgressReporter(address, ident, background=False)
    try:
        reporter.error(message)
    finally:
        reporter.close()
