"""The one signed-frame codec of every tfos socket channel (reservation control plane, feed progress).

A frame is ``magic (4 bytes) | length (u32, big endian) | HMAC-SHA256 (32 bytes) | payload``.
The HMAC is keyed with the channel's secret and covers the header (magic and length) and the
payload, so a frame is authenticated before its payload is looked at, and a frame signed for
one channel (its magic) is never valid on another. Each channel is one :class:`FrameCodec`:
its magic, its payload cap and its name (for error messages). Reads are bounded: the length is
checked against the cap before the payload is read, and an optional deadline bounds the whole
frame. This module knows nothing about payloads (JSON, message types, sessions): the channels do.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
import time
from dataclasses import dataclass
from typing import Protocol

HEADER = struct.Struct(">4sI")
MAC_LEN = hashlib.sha256().digest_size

# Why a frame was refused (``FrameError.reason``).
BAD_MAGIC = "bad_magic"
OVERSIZED = "oversized"
TRUNCATED = "truncated"
BAD_SIGNATURE = "bad_signature"


class FrameError(Exception):
    """A frame that is not this channel's, over its cap, cut short or not signed with the key.

    ``reason`` is one of ``BAD_MAGIC``, ``OVERSIZED``, ``TRUNCATED``, ``BAD_SIGNATURE``.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class Readable(Protocol):
    """What a frame is read from: a socket, or anything with its ``recv`` and ``settimeout``."""

    def recv(self, n: int, /) -> bytes: ...

    def settimeout(self, timeout: float | None, /) -> None: ...


def recv_exact(sock: Readable, n: int, deadline: float | None, frame_start: bool = True,
               what: str = "a frame") -> bytes:
    """Exactly ``n`` bytes from ``sock``, before ``deadline`` (``time.monotonic()``; None: no bound).

    Raises ``EOFError`` if the peer closed before the first byte and ``frame_start`` is set
    (a clean close between frames), ``FrameError(TRUNCATED)`` if it closed later, and
    ``TimeoutError`` once the deadline passes.
    """
    chunks = []
    remaining = n
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out reading {what} ({n - remaining} of {n} bytes received)")
            sock.settimeout(left)
        try:
            chunk = sock.recv(min(remaining, 65536))
        except TimeoutError:
            if deadline is None:
                raise  # the socket's own timeout
            raise TimeoutError(f"timed out reading {what} ({n - remaining} of {n} bytes received)") from None
        if not chunk:
            if remaining == n and frame_start:
                raise EOFError("connection closed")
            raise FrameError(f"connection closed mid-frame ({n - remaining} of {n} bytes received)", TRUNCATED)
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class RawFrame:
    """One frame as read, not yet authenticated (see :meth:`FrameCodec.read_unverified`)."""

    header: bytes
    mac: bytes
    payload: bytes

    def signed_with(self, key: bytes) -> bool:
        """Whether the frame carries ``key``'s HMAC over its header and payload (constant time)."""
        return hmac.compare_digest(self.mac, _mac(key, self.header, self.payload))


def _mac(key: bytes, header: bytes, payload: bytes) -> bytes:
    return hmac.new(key, header + payload, hashlib.sha256).digest()


@dataclass(frozen=True)
class FrameCodec:
    """One channel's framing: its 4-byte ``magic``, its ``max_payload`` cap in bytes, its ``name``."""

    magic: bytes
    max_payload: int
    name: str

    def __post_init__(self) -> None:
        if len(self.magic) != 4:
            raise ValueError(f"a frame magic is 4 bytes, got {self.magic!r}")
        if not 0 < self.max_payload < 1 << 32:
            raise ValueError(f"max_payload must be in [1, 2**32), got {self.max_payload}")

    def encode(self, key: bytes, payload: bytes) -> bytes:
        """``payload`` framed and signed with ``key``; ``FrameError(OVERSIZED)`` if over the cap."""
        if len(payload) > self.max_payload:
            raise FrameError(f"a {self.name} frame of {len(payload)} bytes is over the {self.max_payload}-byte cap",
                             OVERSIZED)
        header = HEADER.pack(self.magic, len(payload))
        return header + _mac(key, header, payload) + payload

    def send(self, sock: socket.socket, key: bytes, payload: bytes) -> None:
        """Frame, sign and send ``payload`` (see :meth:`encode`)."""
        sock.sendall(self.encode(key, payload))

    def read_unverified(self, sock: Readable, timeout: float | None) -> RawFrame:
        """One frame's bytes, magic and length checked but not the signature (for a reader that tries
        more than one key); ``timeout`` bounds the whole frame. Raises as :meth:`read` does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        header = recv_exact(sock, HEADER.size, deadline, what=f"a {self.name} frame")
        magic, length = HEADER.unpack(header)
        if magic != self.magic:
            raise FrameError(f"bad magic {magic!r}: not a {self.name} frame (expected {self.magic!r})", BAD_MAGIC)
        if length > self.max_payload:
            raise FrameError(f"frame length {length} exceeds the {self.max_payload}-byte cap of a {self.name} frame",
                             OVERSIZED)
        rest = recv_exact(sock, MAC_LEN + length, deadline, frame_start=False, what=f"a {self.name} frame")
        return RawFrame(header, rest[:MAC_LEN], rest[MAC_LEN:])

    def read(self, sock: Readable, key: bytes, timeout: float | None) -> bytes:
        """The payload of the next frame, authenticated with ``key``; ``timeout`` bounds the whole frame.

        Raises ``EOFError`` on a clean close before the frame, ``TimeoutError`` when the peer
        stalls, and ``FrameError`` (with its ``reason``) for a frame that is not this channel's,
        too long, cut short or not signed with ``key``.
        """
        frame = self.read_unverified(sock, timeout)
        if not frame.signed_with(key):
            raise FrameError(f"bad signature: {self.name} frame not signed with this channel's key", BAD_SIGNATURE)
        return frame.payload
