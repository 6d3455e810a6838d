"""Wire format of the reservation control plane.

A frame is ``MAGIC (4 bytes) | length (u32, big endian) | HMAC-SHA256 (32 bytes) | payload``.
The payload is a UTF-8 JSON object ``{"v": 2, "type": ..., "body": {...}, "s": ..., "n": ...}``.
The HMAC covers the length and the payload and is keyed with the per-cluster secret, so a
frame from anyone who does not hold the secret is rejected before its payload is decoded.
Nothing received from the network is ever unpickled.

``s`` (session) and ``n`` (sequence number) make every request unique: each client picks a
random session id and numbers its frames 1, 2, 3, ...; the server refuses a frame whose
number is not above the last one it accepted from that session (a replay), and its reply
echoes ``s`` and ``n`` so that a client can tell its reply from a replayed one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

MAGIC = b"TFOS"
PROTOCOL_VERSION = 2  # 2: requests carry a session id and a sequence number
MAX_PAYLOAD_BYTES = 1 << 20  # 1 MiB: a cluster spec of thousands of nodes fits easily
MAX_SESSION_CHARS = 64
MAX_SEQ = (1 << 63) - 1
_HEADER = struct.Struct(">4sI")
_MAC_LEN = hashlib.sha256().digest_size

# Message types a client may send, and the server's replies.
REGISTER = "register"
AWAIT_SPEC = "await_spec"
HEARTBEAT = "heartbeat"
REPORT = "report"
AWAIT_STOP = "await_stop"
QUERY = "query"
STOP = "stop"
LOG = "log"  # a batch of a node's output lines (relay); the reply says the relay level
PROGRESS = "progress"  # a node's latest training progress (step, loss, metrics)
STACKS = "stacks"  # a node's Python thread stacks, answering a request carried by heartbeat replies
REQUEST_TYPES = frozenset({REGISTER, AWAIT_SPEC, HEARTBEAT, REPORT, AWAIT_STOP, QUERY, STOP, LOG, PROGRESS, STACKS})
OK = "ok"
ERROR = "error"


# Why a frame was refused: ``ProtocolError.reason``, the keys of the server's ``rejected_by_reason``.
BAD_MAGIC = "bad_magic"
OVERSIZED = "oversized"
TRUNCATED = "truncated"
STALLED = "stalled"
BAD_SIGNATURE = "bad_signature"
BAD_PAYLOAD = "bad_payload"
BAD_VERSION = "bad_version"
NO_SEQUENCE = "no_sequence"
REPLAY = "replay"
WRONG_KEY = "wrong_key"
INVALID_REQUEST = "invalid_request"


class ProtocolError(Exception):
    """A frame that is malformed, oversized, unauthenticated, replayed or of an unknown type.

    ``reason`` names the kind of fault (one of this module's reason constants).
    """

    def __init__(self, message: str, reason: str = INVALID_REQUEST):
        super().__init__(message)
        self.reason = reason


def new_secret() -> bytes:
    """A fresh random key for one cluster."""
    return secrets.token_bytes(32)


@dataclass(frozen=True)
class Message:
    """One decoded control-plane message."""

    type: str
    body: dict[str, Any]
    session: str | None = None  # the sender's session id; every request has one
    seq: int | None = None  # the frame's number within its session


def _mac(secret: bytes, header: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, header + payload, hashlib.sha256).digest()


def encode(secret: bytes, msg_type: str, body: dict[str, Any] | None = None,
           session: str | None = None, seq: int | None = None) -> bytes:
    """Serialise and sign one message; requests name their ``session`` and ``seq``."""
    envelope: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": msg_type, "body": body or {}}
    if session is not None:
        envelope["s"] = session
    if seq is not None:
        envelope["n"] = seq
    payload = json.dumps(envelope, separators=(",", ":")).encode("utf-8")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"message {msg_type!r} is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES} cap",
                            OVERSIZED)
    header = _HEADER.pack(MAGIC, len(payload))
    return header + _mac(secret, header, payload) + payload


def _recv_exact(sock: socket.socket, n: int, deadline: float | None, frame_start: bool = True) -> bytes:
    """``n`` bytes; ``EOFError`` if the peer closed before the first of them and ``frame_start`` is set."""
    chunks = []
    remaining = n
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out reading a frame ({n - remaining} of {n} bytes received)")
            sock.settimeout(left)
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            if remaining == n and frame_start:
                raise EOFError("connection closed")
            raise ProtocolError(f"connection closed mid-frame ({n - remaining} of {n} bytes received)",
                                TRUNCATED)
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, secret: bytes, timeout: float | None) -> Message:
    """Read, authenticate and decode one frame; ``timeout`` bounds the whole frame.

    Raises ``EOFError`` on a clean close, ``TimeoutError`` when the peer stalls and
    ``ProtocolError`` for anything that is not a valid signed message.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    header = _recv_exact(sock, _HEADER.size, deadline)
    magic, length = _HEADER.unpack(header)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}: not a tfos reservation frame", BAD_MAGIC)
    if length > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"frame length {length} exceeds the {MAX_PAYLOAD_BYTES}-byte cap", OVERSIZED)
    mac = _recv_exact(sock, _MAC_LEN, deadline, frame_start=False)
    payload = _recv_exact(sock, length, deadline, frame_start=False)
    if not hmac.compare_digest(mac, _mac(secret, header, payload)):
        raise ProtocolError("bad signature: frame not signed with this cluster's secret", BAD_SIGNATURE)
    return decode_payload(payload)


def decode_payload(payload: bytes) -> Message:
    """Decode an authenticated payload, checking version and shape."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"payload is not UTF-8 JSON: {exc}", BAD_PAYLOAD) from None
    if not isinstance(obj, dict):
        raise ProtocolError("payload is not a JSON object", BAD_PAYLOAD)
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {obj.get('v')!r} (this side speaks "
                            f"{PROTOCOL_VERSION}): run the same tfos version on the driver and the executors",
                            BAD_VERSION)
    msg_type, body = obj.get("type"), obj.get("body", {})
    if not isinstance(msg_type, str) or not isinstance(body, dict):
        raise ProtocolError("message needs a string 'type' and an object 'body'", BAD_PAYLOAD)
    session, seq = obj.get("s"), obj.get("n")
    if session is not None and not (isinstance(session, str) and 0 < len(session) <= MAX_SESSION_CHARS):
        raise ProtocolError(f"session id must be a string of 1 to {MAX_SESSION_CHARS} characters, "
                            f"got {session!r:.80}", BAD_PAYLOAD)
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq <= MAX_SEQ):
        raise ProtocolError(f"sequence number must be an int in [1, 2**63), got {seq!r:.80}", BAD_PAYLOAD)
    return Message(msg_type, body, session, seq)


def send_frame(sock: socket.socket, secret: bytes, msg_type: str, body: dict[str, Any] | None = None,
               session: str | None = None, seq: int | None = None) -> None:
    """Sign and send one message (see :func:`encode`)."""
    sock.sendall(encode(secret, msg_type, body, session, seq))
