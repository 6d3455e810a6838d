"""tfos.io.filesystem on local paths and on the real single-node HDFS (hdfs_url fixture)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tfos.io.filesystem import FileSystem, HdfsConnectionError, split_url


def _exercise(fs: FileSystem, base: str) -> None:
    """The same operations on any file system; ``base`` must not exist yet."""
    assert not fs.exists(base)
    fs.makedirs(f"{base}/a/b")
    assert fs.isdir(f"{base}/a/b") and fs.exists(f"{base}/a")
    with fs.open(f"{base}/a/b/one.bin", "wb") as f:
        f.write(b"\x00" * 10 + os.urandom(3 << 20))  # > one 1 MiB buffer
    info = fs.stat(f"{base}/a/b/one.bin")
    assert info.size == 10 + (3 << 20) and not info.is_dir and info.mtime > time.time() - 3600
    with fs.open(f"{base}/a/b/one.bin", "rb") as f:
        assert f.read(10) == b"\x00" * 10
        f.seek(-5, os.SEEK_END)
        assert len(f.read()) == 5
        f.seek(0)
        assert len(f.read()) == 10 + (3 << 20)
    with fs.open(f"{base}/text.txt", "w") as f:
        f.write("héllo\nworld\n")
    with fs.open(f"{base}/text.txt", "r") as f:
        assert f.read().splitlines() == ["héllo", "world"]
    with fs.open(f"{base}/text.txt", "ab") as f:
        f.write(b"more\n")
    assert fs.read_bytes(f"{base}/text.txt").endswith(b"world\nmore\n")
    with pytest.raises(FileExistsError):
        fs.open(f"{base}/text.txt", "xb")

    assert fs.listdir(base) == ["a", "text.txt"]
    fs.write_bytes(f"{base}/a/x1.rec", b"1")
    fs.write_bytes(f"{base}/a/x2.rec", b"22")
    fs.write_bytes(f"{base}/a/y.txt", b"3")
    assert [p.rsplit("/", 1)[1] for p in fs.glob(f"{base}/a/x*.rec")] == ["x1.rec", "x2.rec"]
    assert fs.glob(f"{base}/a/x*.rec")[0].startswith(base.split("://")[0] if "://" in base else "/")
    assert fs.glob(f"{base}/nothere/*") == []
    assert [i.size for i in fs.walk_files(f"{base}/a")] == [10 + (3 << 20), 1, 2, 1]

    # rename: refuses to clobber unless asked; atomic replace with overwrite=True
    with pytest.raises(FileExistsError):
        fs.rename(f"{base}/a/x1.rec", f"{base}/a/x2.rec")
    fs.rename(f"{base}/a/x1.rec", f"{base}/a/x2.rec", overwrite=True)
    assert fs.read_bytes(f"{base}/a/x2.rec") == b"1" and not fs.exists(f"{base}/a/x1.rec")
    fs.rename(f"{base}/a/y.txt", f"{base}/new/dir/y.txt")  # parents are created
    fs.rename(f"{base}/new/dir/y.txt", f"{base}/y.txt")
    assert fs.read_bytes(f"{base}/y.txt") == b"3"

    # copy within the file system, and a whole tree
    fs.copy(f"{base}/y.txt", f"{base}/copies/y2.txt")
    assert fs.read_bytes(f"{base}/copies/y2.txt") == b"3"
    with pytest.raises(FileExistsError):
        fs.copy(f"{base}/y.txt", f"{base}/copies/y2.txt", overwrite=False)
    copied = fs.copytree(f"{base}/a", f"{base}/a2")
    assert len(copied) == 2 and fs.stat(f"{base}/a2/b/one.bin").size == 10 + (3 << 20)

    # missing paths are named in the error
    missing = f"{base}/no/such/file"
    for op in (fs.stat, fs.listdir, fs.read_bytes, lambda p: fs.open(p, "rb"),
               lambda p: fs.rename(p, f"{base}/zzz"), fs.delete):
        with pytest.raises(FileNotFoundError) as info:
            op(missing)
        assert missing in str(info.value)
    fs.delete(missing, missing_ok=True)

    # atomic writer: nothing visible until success, nothing left on failure
    with pytest.raises(RuntimeError):
        with fs.atomic_writer(f"{base}/atomic.bin") as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert not fs.exists(f"{base}/atomic.bin")
    assert not [n for n in fs.listdir(base) if n.startswith(".")]

    # delete: non-empty directories need recursive=True
    with pytest.raises(OSError):
        fs.delete(f"{base}/a")
    fs.delete(f"{base}/a/x2.rec")
    fs.delete(base, recursive=True)
    assert not fs.exists(base)


def test_local_plain_paths(tmp_path):
    _exercise(FileSystem(), str(tmp_path / "base"))


def test_local_file_urls(tmp_path):
    fs = FileSystem()
    _exercise(fs, f"file://{tmp_path}/base")
    assert fs.backend_for(f"file://{tmp_path}") == "local"


def test_unsupported_scheme():
    with pytest.raises(ValueError, match="unsupported file system scheme"):
        FileSystem().exists("s3x://bucket/key")


def test_hdfs_operations(hdfs_url):
    fs = FileSystem()
    assert fs.backend_for(hdfs_url + "/x") == "native"
    _exercise(fs, f"{hdfs_url}/tmp/tfos-fs-{uuid.uuid4().hex[:8]}")


def test_copy_between_local_and_hdfs(hdfs_url, tmp_path):
    fs = FileSystem()
    base = f"{hdfs_url}/tmp/tfos-copy-{uuid.uuid4().hex[:8]}"
    payload = os.urandom(2 << 20)
    (tmp_path / "src.bin").write_bytes(payload)
    fs.copy(str(tmp_path / "src.bin"), f"{base}/up.bin")              # local -> hdfs
    fs.copy(f"{base}/up.bin", f"{base}/sub/again.bin")                 # hdfs -> hdfs
    fs.copy(f"{base}/sub/again.bin", f"file://{tmp_path}/down.bin")    # hdfs -> file://
    assert (tmp_path / "down.bin").read_bytes() == payload
    (tmp_path / "tree" / "d").mkdir(parents=True)
    (tmp_path / "tree" / "d" / "f.txt").write_text("x")
    fs.copytree(str(tmp_path / "tree"), f"{base}/tree")
    assert fs.read_bytes(f"{base}/tree/d/f.txt") == b"x"
    with pytest.raises(ValueError, match="across file systems"):
        fs.rename(f"{base}/up.bin", str(tmp_path / "nope"))
    fs.delete(base, recursive=True)


class _FailingReads:
    """An hdfs-native reader whose next ``failures`` reads raise what a flaky DataNode gives."""

    def __init__(self, inner, failures: int):
        self.inner, self.failures = inner, failures

    def read(self, n):
        if self.failures:
            self.failures -= 1
            raise RuntimeError('DataTransferError("All DataNodes failed: [DatanodeInfoProto { ... }]")')
        return self.inner.read(n)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_hdfs_read_retries_a_transient_datanode_failure_at_the_same_offset(hdfs_url, caplog):
    fs = FileSystem()
    path = f"{hdfs_url}/tmp/tfos-retry-{uuid.uuid4().hex[:8]}.bin"
    payload = os.urandom(3 << 20)
    fs.write_bytes(path, payload)
    with fs.open(path, "rb") as f:
        head = f.read(1 << 20)
        f.raw._inner = _FailingReads(f.raw._inner, failures=1)  # the next block read fails once
        rest = f.read()
    assert head + rest == payload
    retried = [r.getMessage() for r in caplog.records if "retrying on a new reader" in r.getMessage()]
    assert len(retried) == 1 and f"reading {path} at offset {1 << 20} failed (attempt 1 of 4)" in retried[0]

    with fs.open(path, "rb") as f:
        f.read(1000)
        raw = f.raw
        raw.RETRY_DELAY = 0.01
        raw._inner = _FailingReads(raw._inner, failures=1)
        reopen = raw._reopen
        raw._reopen = lambda: _FailingReads(reopen(), failures=1)  # every new reader fails too
        at = raw.tell()  # the buffered reader's next raw read starts there
        with pytest.raises(OSError, match=rf"reading {path} at offset {at} failed after 4 attempt\(s\): "
                                          r"DataTransferError\(\"All DataNodes failed"):
            f.read()
    fs.delete(path)


def test_hdfs_missing_path_names_path(hdfs_url):
    fs = FileSystem()
    missing = f"{hdfs_url}/tmp/definitely/not/here-{uuid.uuid4().hex}"
    assert not fs.exists(missing)
    with pytest.raises(FileNotFoundError, match=missing):
        fs.read_bytes(missing)


@pytest.mark.parametrize("url", ["hdfs://127.0.0.1:1/some/file", "hdfs://no-such-namenode.invalid:8020/f"])
def test_unreachable_namenode_fails_fast(url):
    """Connection refused and an unknown host both fail within seconds, naming the address."""
    fs = FileSystem(connect_timeout=2.0)
    host_port = split_url(url)[1]
    t0 = time.monotonic()
    with pytest.raises(HdfsConnectionError) as info:
        fs.exists(url)
    assert time.monotonic() - t0 < 5.0
    assert host_port in str(info.value)
    with pytest.raises(HdfsConnectionError, match=host_port):
        fs.open(url, "wb")


def test_silent_namenode_fails_in_bounded_time():
    """A port that accepts connections but never answers (hung or wrong service) fails in rpc_timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.extend(server.accept() for _ in range(4)), daemon=True).start()
    url = f"hdfs://127.0.0.1:{server.getsockname()[1]}/x"
    fs = FileSystem(connect_timeout=2.0, rpc_timeout=2.0)
    t0 = time.monotonic()
    with pytest.raises(HdfsConnectionError, match=f"127.0.0.1:{server.getsockname()[1]}.*did not answer"):
        fs.exists(url)
    assert time.monotonic() - t0 < 6.0
    server.close()


def test_io_modules_do_not_import_tensorflow():
    """Spark tasks use tfos.io without paying for (or needing) a TensorFlow import."""
    code = ("import sys, tfos.io, tfos.io.filesystem, tfos.io.tfrecord, tfos.io.example_codec, "
            "tfos.io.checkpoint, tfos.io.dataframe_tfrecord, tfos.dfutil; "
            "print(sorted(m for m in ('tensorflow', 'tensorflow_io') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
