"""Wire format of the reservation control plane.

A frame is ``MAGIC (4 bytes) | length (u32, big endian) | HMAC-SHA256 (32 bytes) | payload``,
framed by the shared codec :mod:`tfos.reservation.frames` (this channel: magic ``TFOS``, at
most ``MAX_PAYLOAD_BYTES``). The payload is a UTF-8 JSON object
``{"v": 2, "type": ..., "body": {...}, "s": ..., "n": ...}``. The HMAC covers the header and
the payload and is keyed with the per-cluster secret, so a frame from anyone who does not hold
the secret is rejected before its payload is decoded.
Nothing received from the network is ever unpickled.

``s`` (session) and ``n`` (sequence number) make every request unique: each client picks a
random session id and numbers its frames 1, 2, 3, ...; the server refuses a frame whose
number is not above the last one it accepted from that session (a replay), and its reply
echoes ``s`` and ``n`` so that a client can tell its reply from a replayed one.
"""

from __future__ import annotations

import json
import secrets
import socket
from dataclasses import dataclass
from typing import Any

from tfos.reservation import frames

MAGIC = b"TFOS"
PROTOCOL_VERSION = 2  # 2: requests carry a session id and a sequence number
MAX_PAYLOAD_BYTES = 1 << 20  # 1 MiB: a cluster spec of thousands of nodes fits easily
MAX_SESSION_CHARS = 64
MAX_SEQ = (1 << 63) - 1
CODEC = frames.FrameCodec(MAGIC, MAX_PAYLOAD_BYTES, "tfos reservation")

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
BAD_MAGIC = frames.BAD_MAGIC
OVERSIZED = frames.OVERSIZED
TRUNCATED = frames.TRUNCATED
STALLED = "stalled"
BAD_SIGNATURE = frames.BAD_SIGNATURE
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
    return CODEC.encode(secret, payload)


def read_raw(sock: frames.Readable, timeout: float | None) -> frames.RawFrame:
    """One reservation frame's bytes, not yet authenticated; ``timeout`` bounds the whole frame.

    Raises as :func:`read_frame` does, except that the signature is the caller's to check.
    """
    try:
        return CODEC.read_unverified(sock, timeout)
    except frames.FrameError as exc:
        raise ProtocolError(str(exc), exc.reason) from None


def bad_signature() -> ProtocolError:
    """The error for a frame signed with none of the keys its reader accepts."""
    return ProtocolError("bad signature: frame not signed with this cluster's secret", BAD_SIGNATURE)


def read_frame(sock: frames.Readable, secret: bytes, timeout: float | None) -> Message:
    """Read, authenticate and decode one frame; ``timeout`` bounds the whole frame.

    Raises ``EOFError`` on a clean close, ``TimeoutError`` when the peer stalls and
    ``ProtocolError`` for anything that is not a valid signed message.
    """
    frame = read_raw(sock, timeout)
    if not frame.signed_with(secret):
        raise bad_signature()
    return decode_payload(frame.payload)


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
