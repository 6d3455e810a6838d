"""TFRecord files without TensorFlow: writer, reader, GZIP/ZLIB, corruption detection.

Format of one record (all little-endian)::

    uint64 length
    uint32 masked_crc32c(length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

with ``masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`` (mod 2**32). ``GZIP`` and ``ZLIB``
compress the whole stream, as TensorFlow's ``compression_type`` does. Files TF writes are read
here and files written here are read by ``tf.data.TFRecordDataset``, byte for byte.

Writers write to a hidden temporary name and rename it into place on ``close()``, so an
interrupted write never leaves a complete-looking file. Readers raise
:class:`TFRecordCorruptError` naming the file and byte offset of a bad or truncated record.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any

import crc32c as _crc32c

from tfos.io.filesystem import FileSystem, temp_sibling

__all__ = ["TFRecordCorruptError", "TFRecordWriter", "iter_records", "masked_crc32c", "read_tfrecords",
           "resolve_compression", "write_tfrecords"]

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
_COMPRESSIONS = {"": "", "NONE": "", "GZIP": "GZIP", "ZLIB": "ZLIB"}


class TFRecordCorruptError(ValueError):
    """A TFRecord file is corrupt or truncated; ``path`` and ``offset`` say where."""

    def __init__(self, path: str, offset: int, reason: str, compressed: bool = False):
        where = f"byte offset {offset}" + (" of the decompressed stream" if compressed else "")
        super().__init__(f"corrupt TFRecord file {path} at {where}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32-C of ``data``, masked as TFRecord (and LevelDB) store it."""
    crc = _crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def resolve_compression(compression: str | None, path: str = "") -> str:
    """Normalize ``None``/``""``/``"GZIP"``/``"ZLIB"``/``"auto"`` (by file suffix) to ``""``/``GZIP``/``ZLIB``."""
    if compression is None:
        return ""
    c = compression.upper()
    if c == "AUTO":
        lower = path.lower()
        if lower.endswith((".gz", ".gzip")):
            return "GZIP"
        if lower.endswith((".zlib", ".zz")):
            return "ZLIB"
        return "AUTO"
    if c not in _COMPRESSIONS:
        raise ValueError(f"compression must be None, '', 'GZIP', 'ZLIB' or 'auto', got {compression!r}")
    return _COMPRESSIONS[c]


# ---------------------------------------------------------------------------- writing
class _ZlibWriter(io.RawIOBase):
    """Write-only zlib (RFC 1950) stream over ``raw``, as TF's ``ZLIB`` compression_type."""

    def __init__(self, raw: IO[bytes], level: int = 6):
        self._raw = raw
        self._z = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS)

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._raw.write(self._z.compress(b))
        return len(b)

    def close(self) -> None:
        if not self.closed:
            self._raw.write(self._z.flush())
            super().close()


class TFRecordWriter:
    """Write records to one TFRecord file on any :class:`FileSystem` path.

    ``compression``: ``None``/``""``, ``"GZIP"``, ``"ZLIB"`` or ``"auto"`` (GZIP for ``.gz`` names).
    With ``atomic`` (default) data goes to a hidden temporary sibling renamed over ``path`` by
    :meth:`close`; leaving a ``with`` block by an exception deletes the temporary file instead.
    """

    def __init__(self, path: str, compression: str | None = None, *, fs: FileSystem | None = None,
                 atomic: bool = True):
        self.path = path
        comp = resolve_compression(compression, path)
        self.compression = "" if comp == "AUTO" else comp
        self._fs = fs or FileSystem()
        self._target = temp_sibling(path) if atomic else path
        self._raw = self._fs.open(self._target, "wb")
        if self.compression == "GZIP":
            self._out: IO[bytes] = gzip.GzipFile(filename="", fileobj=self._raw, mode="wb", mtime=0)
        elif self.compression == "ZLIB":
            self._out = _ZlibWriter(self._raw)
        else:
            self._out = self._raw
        self.records_written = 0
        self.bytes_written = 0
        self._closed = False

    def write(self, record: bytes | bytearray | memoryview) -> None:
        """Append one record."""
        if self._closed:
            raise ValueError(f"write to closed TFRecordWriter for {self.path}")
        n = len(record)
        header = _U64.pack(n)
        self._out.write(header + _U32.pack(masked_crc32c(header)))
        self._out.write(record)
        self._out.write(_U32.pack(masked_crc32c(record)))
        self.records_written += 1
        self.bytes_written += n + 16

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._closed:
            return
        self._closed = True
        if self._out is not self._raw:
            self._out.close()
        self._raw.close()
        if self._target != self.path:
            self._fs.rename(self._target, self.path, overwrite=True)

    def abort(self) -> None:
        """Discard what was written (only the temporary file, when ``atomic``)."""
        if self._closed:
            return
        self._closed = True
        for stream in (self._out, self._raw):
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - best effort on an error path
                pass
        if self._target != self.path:
            self._fs.delete(self._target, missing_ok=True)

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_tfrecords(path: str, records: Iterable[bytes], compression: str | None = None, *,
                    fs: FileSystem | None = None) -> int:
    """Write ``records`` to ``path`` atomically; returns the number of records."""
    with TFRecordWriter(path, compression, fs=fs) as writer:
        for record in records:
            writer.write(record)
    return writer.records_written


# ---------------------------------------------------------------------------- reading
def iter_records(stream: IO[bytes], path: str = "<stream>", *, verify: bool = True,
                 compressed: bool = False) -> Iterator[bytes]:
    """Records of an uncompressed TFRecord stream; :class:`TFRecordCorruptError` on damage.

    ``verify=False`` skips the data CRC (the length CRC is always checked).
    """
    offset = 0
    read = stream.read
    while True:
        try:
            header = read(12)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise TFRecordCorruptError(path, offset, f"compressed stream is damaged ({exc})", compressed) from exc
        if not header:
            return
        if len(header) < 12:
            raise TFRecordCorruptError(path, offset, f"truncated record header ({len(header)} of 12 bytes)",
                                       compressed)
        length_bytes = header[:8]
        if _U32.unpack_from(header, 8)[0] != masked_crc32c(length_bytes):
            raise TFRecordCorruptError(path, offset, "bad length CRC (not a TFRecord file, or damaged)",
                                       compressed)
        (length,) = _U64.unpack(length_bytes)
        try:
            body = read(length + 4)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise TFRecordCorruptError(path, offset, f"compressed stream is damaged ({exc})", compressed) from exc
        if len(body) < length + 4:
            raise TFRecordCorruptError(
                path, offset, f"truncated record: {length} data bytes + 4 CRC bytes expected, {len(body)} present",
                compressed)
        data = body[:length]
        if verify and _U32.unpack_from(body, length)[0] != masked_crc32c(data):
            raise TFRecordCorruptError(path, offset, f"bad data CRC for a {length}-byte record", compressed)
        yield data
        offset += 16 + length


class _ZlibReader(io.RawIOBase):
    """Read-only zlib (RFC 1950) stream over ``raw``."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self._z = zlib.decompressobj(zlib.MAX_WBITS)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            if self._z.eof:
                return 0
            chunk = self._raw.read(1 << 16)
            if not chunk:
                if not self._z.eof:
                    raise EOFError("zlib stream ended before the end-of-stream marker")
                return 0
            self._buf = self._z.decompress(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _sniff(raw: IO[bytes]) -> str:
    """Guess the compression of a stream from its first bytes; rewinds it."""
    head = raw.read(12)
    raw.seek(0)
    if len(head) == 12 and _U32.unpack_from(head, 8)[0] == masked_crc32c(head[:8]):
        return ""
    if head[:2] == b"\x1f\x8b":
        return "GZIP"
    if len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0:
        return "ZLIB"
    return ""


def read_tfrecords(path: str, compression: str | None = "auto", *, fs: FileSystem | None = None,
                   verify: bool = True) -> Iterator[bytes]:
    """Records of the TFRecord file ``path`` (local, ``file://``, ``hdfs://``, ...).

    ``compression="auto"`` uses the suffix (``.gz`` GZIP, ``.zlib`` ZLIB) or, failing that, the
    first bytes of the file.
    """
    fs = fs or FileSystem()
    comp = resolve_compression(compression, path)
    with fs.open(path, "rb") as raw:
        if comp == "AUTO":
            comp = _sniff(raw)
        if comp == "GZIP":
            stream: IO[bytes] = gzip.GzipFile(filename=path, fileobj=raw, mode="rb")
        elif comp == "ZLIB":
            stream = io.BufferedReader(_ZlibReader(raw), buffer_size=1 << 16)
        else:
            stream = raw
        try:
            yield from iter_records(stream, path, verify=verify, compressed=bool(comp))
        finally:
            if stream is not raw:
                stream.close()


def is_data_file(name: str) -> bool:
    """False for hidden and marker files (``.x``, ``_SUCCESS``) that TFRecord readers skip."""
    base = os.path.basename(name.rstrip("/"))
    return not base.startswith((".", "_"))
