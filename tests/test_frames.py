"""The shared signed-frame codec (tfos.reservation.frames) on real socket pairs."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from tfos.feed import progress as feed_progress
from tfos.reservation import frames, protocol

KEY = b"k" * 32
CODEC = frames.FrameCodec(b"TEST", 1024, "test")


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_round_trip(pair):
    a, b = pair
    for payload in (b"", b"hello", bytes(range(256)) * 4):
        CODEC.send(a, KEY, payload)
        assert CODEC.read(b, KEY, timeout=5.0) == payload


def test_bad_mac_rejected(pair):
    a, b = pair
    CODEC.send(a, b"x" * 32, b"signed with another key")
    with pytest.raises(frames.FrameError, match="bad signature") as err:
        CODEC.read(b, KEY, timeout=5.0)
    assert err.value.reason == frames.BAD_SIGNATURE


def test_a_flipped_payload_byte_fails_the_mac(pair):
    a, b = pair
    frame = bytearray(CODEC.encode(KEY, b"payload"))
    frame[-1] ^= 1
    a.sendall(bytes(frame))
    with pytest.raises(frames.FrameError) as err:
        CODEC.read(b, KEY, timeout=5.0)
    assert err.value.reason == frames.BAD_SIGNATURE


def test_oversized_length_rejected_before_reading_the_payload(pair):
    a, b = pair
    a.sendall(struct.pack(">4sI", b"TEST", 1025))  # nothing follows: reading on would stall
    started = time.monotonic()
    with pytest.raises(frames.FrameError, match="exceeds the 1024-byte cap") as err:
        CODEC.read(b, KEY, timeout=5.0)
    assert err.value.reason == frames.OVERSIZED and time.monotonic() - started < 1
    with pytest.raises(frames.FrameError, match="over the 1024-byte cap"):
        CODEC.encode(KEY, b"x" * 1025)


def test_truncated_frame_rejected_and_a_clean_close_is_eof(pair):
    a, b = pair
    a.sendall(CODEC.encode(KEY, b"0123456789")[:-3])
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(frames.FrameError, match="closed mid-frame") as err:
        CODEC.read(b, KEY, timeout=5.0)
    assert err.value.reason == frames.TRUNCATED
    c, d = socket.socketpair()
    with c, d:
        c.close()
        with pytest.raises(EOFError):
            CODEC.read(d, KEY, timeout=5.0)


def test_a_stalled_frame_times_out_at_the_deadline(pair):
    a, b = pair
    a.sendall(CODEC.encode(KEY, b"0123456789")[:-3])
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="timed out reading a test frame"):
        CODEC.read(b, KEY, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 3


def test_another_channels_frame_is_bad_magic(pair):
    a, b = pair
    a.sendall(frames.FrameCodec(b"OTHR", 1024, "other").encode(KEY, b"x"))
    with pytest.raises(frames.FrameError, match="not a test frame") as err:
        CODEC.read(b, KEY, timeout=5.0)
    assert err.value.reason == frames.BAD_MAGIC


def test_both_channels_use_the_codec_with_their_own_magic_and_cap():
    assert (protocol.CODEC.magic, protocol.CODEC.max_payload) == (protocol.MAGIC, protocol.MAX_PAYLOAD_BYTES)
    assert (feed_progress.CODEC.magic, feed_progress.CODEC.max_payload) == (b"TFFP", feed_progress.MAX_FRAME)
    assert protocol.CODEC.magic != feed_progress.CODEC.magic  # a frame of one is never valid on the other


def test_a_codec_needs_a_four_byte_magic_and_a_positive_cap():
    with pytest.raises(ValueError, match="4 bytes"):
        frames.FrameCodec(b"TOOLONG", 10, "x")
    with pytest.raises(ValueError, match="max_payload"):
        frames.FrameCodec(b"ABCD", 0, "x")
