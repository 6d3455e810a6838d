"""TFRecord reader/writer of tfos.io.tfrecord against TensorFlow's own, plus corruption handling."""

from __future__ import annotations

import gzip
import os
import random
import struct

import pytest

from tfos.io.filesystem import FileSystem
from tfos.io.tfrecord import (
    TFRecordCorruptError,
    TFRecordWriter,
    masked_crc32c,
    read_tfrecords,
    write_tfrecords,
)

tf = pytest.importorskip("tensorflow")


def _records(n: int = 50, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, 7, 100, 5000, 70000]
    return [bytes(rng.getrandbits(8) for _ in range(rng.choice(sizes) if i % 5 else i)) for i in range(n)]


def _tf_write(path: str, records: list[bytes], compression: str = "") -> None:
    with tf.io.TFRecordWriter(path, options=tf.io.TFRecordOptions(compression_type=compression)) as w:
        for r in records:
            w.write(r)


def _tf_read(path: str, compression: str = "") -> list[bytes]:
    return [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type=compression)]


def test_masked_crc_known_vectors():
    def mask(c: int) -> int:
        return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF

    # CRC-32C check values: "123456789" (the standard check string) and 32 zero bytes (RFC 3720)
    assert masked_crc32c(b"123456789") == mask(0xE3069283)
    assert masked_crc32c(b"\0" * 32) == mask(0x8A9136AA)


@pytest.mark.parametrize("compression", ["", "GZIP", "ZLIB"])
def test_tfos_writes_tf_reads(tmp_path, compression):
    records = _records()
    path = str(tmp_path / f"data-{compression or 'none'}.tfrecord")
    assert write_tfrecords(path, records, compression) == len(records)
    assert _tf_read(path, compression) == records


@pytest.mark.parametrize("compression", ["", "GZIP", "ZLIB"])
def test_tf_writes_tfos_reads(tmp_path, compression):
    records = _records(seed=1)
    path = str(tmp_path / "tf.tfrecord")
    _tf_write(path, records, compression)
    assert list(read_tfrecords(path, compression)) == records
    # compression="auto" recognises the stream from its first bytes
    assert list(read_tfrecords(path)) == records


def test_uncompressed_bytes_identical_to_tf(tmp_path):
    records = _records(20, seed=2)
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    write_tfrecords(ours, records)
    _tf_write(theirs, records)
    with open(ours, "rb") as a, open(theirs, "rb") as b:
        assert a.read() == b.read()


def test_gzip_suffix_and_file_url(tmp_path):
    path = f"file://{tmp_path}/x.tfrecord.gz"
    write_tfrecords(path, [b"a", b"bc"], "auto")
    with open(tmp_path / "x.tfrecord.gz", "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
    assert list(read_tfrecords(path)) == [b"a", b"bc"]
    assert _tf_read(str(tmp_path / "x.tfrecord.gz"), "GZIP") == [b"a", b"bc"]


def test_empty_file(tmp_path):
    path = str(tmp_path / "empty")
    assert write_tfrecords(path, []) == 0
    assert os.path.getsize(path) == 0
    assert list(read_tfrecords(path)) == []
    assert _tf_read(path) == []


def _write_three(tmp_path) -> tuple[str, bytes]:
    path = str(tmp_path / "three.tfrecord")
    write_tfrecords(path, [b"x" * 10, b"y" * 20, b"z" * 30])
    with open(path, "rb") as f:
        return path, f.read()


@pytest.mark.parametrize(("flip_at", "offset", "what"), [
    (26 + 3, 26, "bad length CRC"),          # inside the 2nd record's length
    (26 + 8, 26, "bad length CRC"),          # its length CRC
    (26 + 12 + 5, 26, "bad data CRC"),       # its data
    (26 + 12 + 20 + 1, 26, "bad data CRC"),  # its data CRC
])
def test_flipped_byte_names_file_and_offset(tmp_path, flip_at, offset, what):
    path, data = _write_three(tmp_path)
    damaged = bytearray(data)
    damaged[flip_at] ^= 0x40
    with open(path, "wb") as f:
        f.write(damaged)
    it = read_tfrecords(path)
    assert next(it) == b"x" * 10
    with pytest.raises(TFRecordCorruptError) as info:
        next(it)
    msg = str(info.value)
    assert path in msg and f"byte offset {offset}" in msg and what in msg
    assert info.value.offset == offset and info.value.path == path
    # TF agrees that the file is damaged
    with pytest.raises(tf.errors.DataLossError):
        _tf_read(path)


@pytest.mark.parametrize(("cut", "offset", "what"), [
    (26 + 5, 26, "truncated record header"),
    (26 + 12 + 7, 26, "truncated record"),
    (26 + 12 + 20 + 2, 26, "truncated record"),   # inside the data CRC
    (62 + 12 + 29, 62, "truncated record"),       # the third record (sizes 26, 36, 46)
])
def test_truncated_file_names_file_and_offset(tmp_path, cut, offset, what):
    path, data = _write_three(tmp_path)
    with open(path, "wb") as f:
        f.write(data[:cut])
    with pytest.raises(TFRecordCorruptError, match=f"{path}.*byte offset {offset}.*{what}"):
        list(read_tfrecords(path))


def test_truncated_gzip_is_reported(tmp_path):
    path = str(tmp_path / "t.gz")
    write_tfrecords(path, [os.urandom(1000) for _ in range(50)], "GZIP")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(TFRecordCorruptError, match=f"{path}.*decompressed stream"):
        list(read_tfrecords(path))


def test_not_a_tfrecord_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("hello, this is certainly not a TFRecord file\n")
    with pytest.raises(TFRecordCorruptError, match="byte offset 0.*bad length CRC"):
        list(read_tfrecords(str(path)))


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "out.tfrecord"
    writer = TFRecordWriter(str(path))
    writer.write(b"one")
    # while writing: only a hidden temporary file exists
    assert not path.exists()
    assert [p.name.startswith(".out.tfrecord.") for p in tmp_path.iterdir()] == [True]
    writer.close()
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == ["out.tfrecord"]

    # an exception inside the with-block leaves neither a file nor a temporary file
    target = tmp_path / "failed.tfrecord"
    with pytest.raises(RuntimeError):
        with TFRecordWriter(str(target), "GZIP") as w:
            w.write(b"partial")
            raise RuntimeError("boom")
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tfrecord"]


def test_overwrites_existing_file(tmp_path):
    path = str(tmp_path / "f")
    write_tfrecords(path, [b"old"])
    write_tfrecords(path, [b"new", b"er"])
    assert list(read_tfrecords(path)) == [b"new", b"er"]


def test_record_header_layout(tmp_path):
    path = str(tmp_path / "one")
    write_tfrecords(path, [b"abc"])
    data = open(path, "rb").read()
    assert struct.unpack("<Q", data[:8])[0] == 3
    assert struct.unpack("<I", data[8:12])[0] == masked_crc32c(data[:8])
    assert data[12:15] == b"abc"
    assert struct.unpack("<I", data[15:19])[0] == masked_crc32c(b"abc")


def test_gzip_output_is_plain_gzip(tmp_path):
    path = str(tmp_path / "g.gz")
    write_tfrecords(path, [b"hello"], "GZIP")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    assert raw[12:17] == b"hello"


def test_shared_filesystem_instance(tmp_path):
    fs = FileSystem()
    path = str(tmp_path / "sub" / "dir" / "r.tfrecord")
    write_tfrecords(path, [b"1", b"2"], fs=fs)
    assert list(read_tfrecords(path, fs=fs)) == [b"1", b"2"]
