"""Wire format of the reservation control plane.

A frame is ``MAGIC (4 bytes) | length (u32, big endian) | HMAC-SHA256 (32 bytes) | payload``.
The payload is a UTF-8 JSON object ``{"v": 1, "type": ..., "body": {...}}``. The HMAC
covers the length and the payload and is keyed with the per-cluster secret, so a frame
from anyone who does not hold the secret is rejected before its payload is decoded.
Nothing received from the network is ever unpickled.
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
PROTOCOL_VERSION = 1
MAX_PAYLOAD_BYTES = 1 << 20  # 1 MiB: a cluster spec of thousands of nodes fits easily
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


class ProtocolError(Exception):
    """A frame that is malformed, oversized, unauthenticated or of an unknown type."""


def new_secret() -> bytes:
    """A fresh random key for one cluster."""
    return secrets.token_bytes(32)


@dataclass(frozen=True)
class Message:
    """One decoded control-plane message."""

    type: str
    body: dict[str, Any]


def _mac(secret: bytes, header: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, header + payload, hashlib.sha256).digest()


def encode(secret: bytes, msg_type: str, body: dict[str, Any] | None = None) -> bytes:
    """Serialise and sign one message."""
    payload = json.dumps(
        {"v": PROTOCOL_VERSION, "type": msg_type, "body": body or {}}, separators=(",", ":")
    ).encode("utf-8")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"message {msg_type!r} is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES} cap")
    header = _HEADER.pack(MAGIC, len(payload))
    return header + _mac(secret, header, payload) + payload


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
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
            if remaining == n and not chunks:
                raise EOFError("connection closed")
            raise ProtocolError(f"connection closed mid-frame ({n - remaining} of {n} bytes received)")
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
        raise ProtocolError(f"bad magic {magic!r}: not a tfos reservation frame")
    if length > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"frame length {length} exceeds the {MAX_PAYLOAD_BYTES}-byte cap")
    mac = _recv_exact(sock, _MAC_LEN, deadline)
    payload = _recv_exact(sock, length, deadline)
    if not hmac.compare_digest(mac, _mac(secret, header, payload)):
        raise ProtocolError("bad signature: frame not signed with this cluster's secret")
    return decode_payload(payload)


def decode_payload(payload: bytes) -> Message:
    """Decode an authenticated payload, checking version and shape."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"payload is not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("payload is not a JSON object")
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {obj.get('v')!r} (this side speaks {PROTOCOL_VERSION})")
    msg_type, body = obj.get("type"), obj.get("body", {})
    if not isinstance(msg_type, str) or not isinstance(body, dict):
        raise ProtocolError("message needs a string 'type' and an object 'body'")
    return Message(msg_type, body)


def send_frame(sock: socket.socket, secret: bytes, msg_type: str, body: dict[str, Any] | None = None) -> None:
    """Sign and send one message."""
    sock.sendall(encode(secret, msg_type, body))
