"""``tf.train.Example`` encode/decode without TensorFlow (hand-written protobuf wire format).

The messages (tensorflow/core/example/{example,feature}.proto)::

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }
    Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

:func:`encode_example` writes features in sorted key order, giving exactly the bytes of
``tf.train.Example.SerializeToString(deterministic=True)``; :func:`decode_example` accepts any
valid encoding (packed or not, any order, unknown fields skipped).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = ["BYTES", "FLOAT", "INT64", "Feature", "bytes_feature", "decode_example", "encode_example",
           "float_feature", "int64_feature"]

BYTES = "bytes"
FLOAT = "float"
INT64 = "int64"
_KIND_FIELD = {BYTES: 1, FLOAT: 2, INT64: 3}
_FIELD_KIND = {v: k for k, v in _KIND_FIELD.items()}
_VECTORIZE_MIN = 32  # numpy varint coding pays off from about this many values


class Feature(NamedTuple):
    """One feature: ``kind`` is ``"bytes"``, ``"float"``, ``"int64"`` (``None``: no list set)."""

    kind: str | None
    values: list[Any]


def bytes_feature(values: Any) -> Feature:
    """A BytesList feature from bytes/str or a sequence of them (str is UTF-8 encoded)."""
    seq = [values] if isinstance(values, (bytes, bytearray, memoryview, str)) else list(values)
    return Feature(BYTES, [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in seq])


def float_feature(values: Any) -> Feature:
    """A FloatList feature (values are stored as float32)."""
    return Feature(FLOAT, _as_list(values))


def int64_feature(values: Any) -> Feature:
    """An Int64List feature (bools become 0/1)."""
    return Feature(INT64, _as_list(values))


def _as_list(values: Any) -> Any:
    if isinstance(values, np.ndarray):
        return values.ravel()
    if isinstance(values, (list, tuple)):
        return values
    if isinstance(values, Iterable) and not isinstance(values, (bytes, str)):
        return list(values)
    return [values]


# ---------------------------------------------------------------------------- encoding
def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _varints_np(values: np.ndarray) -> bytes:
    """Vectorized varint encoding of int64 values (negative ones take 10 bytes, as protobuf)."""
    v = values.astype(np.int64, copy=False).view(np.uint64)
    nbytes = np.ones(v.shape, dtype=np.int64)
    for k in range(1, 10):
        nbytes += (v >> np.uint64(7 * k)) > 0
    groups = np.arange(10, dtype=np.uint64)
    chunks = ((v[:, None] >> (groups * np.uint64(7))[None, :]) & np.uint64(0x7F)).astype(np.uint8)
    cont = groups[None, :].astype(np.int64) < (nbytes[:, None] - 1)
    chunks |= cont.astype(np.uint8) << 7
    keep = groups[None, :].astype(np.int64) < nbytes[:, None]
    return chunks[keep].tobytes()


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _infer(name: str, value: Any) -> Feature:
    if isinstance(value, Feature):
        return value
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return bytes_feature(value)
    if isinstance(value, (bool, int, np.integer, np.bool_)):
        return Feature(INT64, [value])
    if isinstance(value, (float, np.floating)):
        return Feature(FLOAT, [value])
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iub":
            return Feature(INT64, value.ravel())
        if value.dtype.kind == "f":
            return Feature(FLOAT, value.ravel())
        return bytes_feature(value.ravel().tolist())
    if isinstance(value, Iterable):
        seq = list(value)
        if not seq:
            raise ValueError(f"feature {name!r} is an empty list: its type is unknown; "
                             "use bytes_feature/float_feature/int64_feature")
        if all(isinstance(v, (bytes, bytearray, memoryview, str)) for v in seq):
            return bytes_feature(seq)
        if all(isinstance(v, (bool, int, np.integer, np.bool_)) for v in seq):
            return Feature(INT64, seq)
        if all(isinstance(v, (bool, int, float, np.integer, np.floating, np.bool_)) for v in seq):
            return Feature(FLOAT, seq)
    raise TypeError(f"feature {name!r}: cannot encode {type(value).__name__} as a tf.train.Feature")


def _encode_feature(name: str, feature: Feature) -> bytes:
    kind, values = feature
    if kind is None:
        return b""
    if kind == BYTES:
        body = b"".join(_len_field(1, v if isinstance(v, bytes) else bytes(v)) for v in values)
    elif kind == FLOAT:
        n = len(values)
        if n == 0:
            body = b""
        else:
            packed = (values.astype("<f4").tobytes() if isinstance(values, np.ndarray)
                      else struct.pack(f"<{n}f", *values))
            body = _len_field(1, packed)
    elif kind == INT64:
        n = len(values)
        if n == 0:
            body = b""
        else:
            if n >= _VECTORIZE_MIN or isinstance(values, np.ndarray):
                packed = _varints_np(np.asarray(values, dtype=np.int64))
            else:
                packed = b"".join(_varint(int(v)) for v in values)
            body = _len_field(1, packed)
    else:
        raise ValueError(f"feature {name!r}: unknown kind {kind!r}")
    return _len_field(_KIND_FIELD[kind], body)


def encode_example(features: Mapping[str, Any]) -> bytes:
    """Serialize ``{name: value}`` as a ``tf.train.Example`` (keys sorted; ``None`` values omitted).

    A value is a :class:`Feature` or is typed by what it holds: bytes/str -> BytesList,
    int/bool -> Int64List, float -> FloatList; lists and numpy arrays of those likewise.
    """
    entries = []
    for name in sorted(features):
        value = features[name]
        if value is None:
            continue
        feature = _encode_feature(name, _infer(name, value))
        entry = _len_field(1, name.encode("utf-8")) + _len_field(2, feature)
        entries.append(_len_field(1, entry))
    body = b"".join(entries)
    return _len_field(1, body) if body else b"\x0a\x00"


# ---------------------------------------------------------------------------- decoding
class _Malformed(ValueError):
    pass


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint too long")


def _skip(buf: bytes, pos: int, end: int, wire: int) -> int:
    if wire == 0:
        return _read_varint(buf, pos, end)[1]
    if wire == 1:
        pos += 8
    elif wire == 2:
        n, pos = _read_varint(buf, pos, end)
        pos += n
    elif wire == 5:
        pos += 4
    else:
        raise _Malformed(f"unsupported wire type {wire}")
    if pos > end:
        raise _Malformed("field runs past the end of its message")
    return pos


def _fields(buf: bytes, pos: int, end: int) -> Iterable[tuple[int, int, int, int]]:
    """(field number, wire type, start, end-or-value) for each field of buf[pos:end]."""
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 2:
            n, pos = _read_varint(buf, pos, end)
            if pos + n > end:
                raise _Malformed(f"field {field} runs past the end of its message")
            yield field, wire, pos, pos + n
            pos += n
        elif wire == 0:
            value, pos = _read_varint(buf, pos, end)
            yield field, wire, value, pos
        else:
            start = pos
            pos = _skip(buf, pos, end, wire)
            yield field, wire, start, pos


def _signed64(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def _packed_varints(buf: bytes, start: int, end: int) -> list[int]:
    if end - start >= _VECTORIZE_MIN:
        b = np.frombuffer(buf, dtype=np.uint8, count=end - start, offset=start)
        ends = b < 0x80
        if not ends[-1]:
            raise _Malformed("truncated packed varint")
        group = np.concatenate(([0], np.cumsum(ends)[:-1]))
        starts = np.flatnonzero(np.concatenate(([True], ends[:-1])))
        pos_in_group = np.arange(b.size) - starts[group]
        if pos_in_group.max() >= 10:
            raise _Malformed("varint too long")
        parts = (b & 0x7F).astype(np.uint64) << (pos_in_group.astype(np.uint64) * np.uint64(7))
        return np.bitwise_or.reduceat(parts, starts).view(np.int64).tolist()
    out = []
    pos = start
    while pos < end:
        v, pos = _read_varint(buf, pos, end)
        out.append(_signed64(v & 0xFFFFFFFFFFFFFFFF))
    return out


def _decode_list(kind: str, buf: bytes, start: int, end: int) -> list[Any]:
    values: list[Any] = []
    for field, wire, a, b in _fields(buf, start, end):
        if field != 1:
            continue
        if kind == BYTES:
            if wire != 2:
                raise _Malformed("BytesList value is not length-delimited")
            values.append(buf[a:b])
        elif kind == FLOAT:
            if wire == 2:  # packed
                if (b - a) % 4:
                    raise _Malformed("packed FloatList length is not a multiple of 4")
                values.extend(np.frombuffer(buf, dtype="<f4", count=(b - a) // 4, offset=a).tolist())
            elif wire == 5:
                values.append(struct.unpack_from("<f", buf, a)[0])
            else:
                raise _Malformed(f"FloatList value has wire type {wire}")
        else:
            if wire == 2:
                values.extend(_packed_varints(buf, a, b))
            elif wire == 0:
                values.append(_signed64(a & 0xFFFFFFFFFFFFFFFF))
            else:
                raise _Malformed(f"Int64List value has wire type {wire}")
    return values


def _decode_feature(buf: bytes, start: int, end: int) -> Feature:
    feature = Feature(None, [])
    for field, wire, a, b in _fields(buf, start, end):
        kind = _FIELD_KIND.get(field)
        if kind is None or wire != 2:
            continue
        feature = Feature(kind, _decode_list(kind, buf, a, b))  # last one wins, as in protobuf
    return feature


def decode_example(data: bytes | bytearray | memoryview) -> dict[str, Feature]:
    """Parse a serialized ``tf.train.Example`` into ``{name: Feature(kind, values)}``.

    bytes values come back as ``bytes``, floats as Python floats (float32 precision), ints as
    Python ints. Raises ``ValueError`` for malformed input.
    """
    buf = bytes(data)
    out: dict[str, Feature] = {}
    try:
        for field, wire, a, b in _fields(buf, 0, len(buf)):
            if field != 1 or wire != 2:
                continue
            for f2, w2, ea, eb in _fields(buf, a, b):  # Features.feature map entries
                if f2 != 1 or w2 != 2:
                    continue
                key = b""
                feature = Feature(None, [])
                for f3, w3, c, d in _fields(buf, ea, eb):
                    if f3 == 1 and w3 == 2:
                        key = buf[c:d]
                    elif f3 == 2 and w3 == 2:
                        feature = _decode_feature(buf, c, d)
                out[key.decode("utf-8")] = feature
    except (_Malformed, UnicodeDecodeError, struct.error) as exc:
        raise ValueError(f"malformed tf.train.Example ({len(buf)} bytes): {exc}") from exc
    return out
