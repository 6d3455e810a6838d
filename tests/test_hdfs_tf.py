"""TensorFlow + tensorflow-io read and write hdfs:// through libhdfs (env of scripts/hdfs.sh env).

libhdfs needs CLASSPATH/LD_LIBRARY_PATH set before the process starts, so the TF side runs in a
subprocess with the ``hdfs_env`` environment.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import uuid

import pytest

from tfos.io.filesystem import FileSystem
from tfos.io.tfrecord import read_tfrecords, write_tfrecords

if importlib.util.find_spec("tensorflow_io") is None:  # not imported here: it would register hdfs:// in-process
    pytest.skip("tensorflow-io is not installed", allow_module_level=True)

TF_SIDE = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    import tensorflow_io  # noqa: F401 - registers hdfs:// (TF <= 2.17)
    from tfos.io.filesystem import FileSystem
    from tfos.io.tfrecord import write_tfrecords

    base = sys.argv[1]
    out = {"schemes": sorted(tf.io.gfile.get_registered_schemes())}
    # 1. TF reads the file tfos wrote with hdfs-native
    out["tf_read"] = [r.numpy().decode() for r in tf.data.TFRecordDataset(base + "/by_tfos.tfrecord")]
    out["tf_read_gz"] = [r.numpy().decode() for r in
                         tf.data.TFRecordDataset(base + "/by_tfos.tfrecord.gz", compression_type="GZIP")]
    # 2. TF writes a file tfos will read
    with tf.io.TFRecordWriter(base + "/by_tf.tfrecord") as w:
        for i in range(5):
            w.write(f"tf-{i}".encode())
    # 3. with TF imported and hdfs registered, the facade goes through tf.io.gfile
    fs = FileSystem()
    out["backend"] = fs.backend_for(base)
    write_tfrecords(base + "/via_gfile.tfrecord", [b"g1", b"g2"], fs=fs)
    out["listing"] = fs.listdir(base)
    out["missing_error"] = ""
    try:
        fs.read_bytes(base + "/missing")
    except FileNotFoundError as exc:
        out["missing_error"] = str(exc)
    print("RESULT " + json.dumps(out))
""")


def test_tensorflow_io_reads_and_writes_hdfs(hdfs_url, hdfs_env, tmp_path):
    base = f"{hdfs_url}/tmp/tfos-tf-{uuid.uuid4().hex[:8]}"
    fs = FileSystem()
    write_tfrecords(f"{base}/by_tfos.tfrecord", [f"rec-{i}".encode() for i in range(10)], fs=fs)
    write_tfrecords(f"{base}/by_tfos.tfrecord.gz", [b"gz-0", b"gz-1"], "GZIP", fs=fs)

    script = tmp_path / "tf_side.py"
    script.write_text(TF_SIDE)
    proc = subprocess.run([sys.executable, str(script), base], env=hdfs_env, capture_output=True, text=True,
                          timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"TF subprocess failed:\n{proc.stdout}\n{proc.stderr[-5000:]}"
    out = json.loads(lines[-1][len("RESULT "):])

    assert "hdfs" in out["schemes"]
    assert out["tf_read"] == [f"rec-{i}" for i in range(10)]
    assert out["tf_read_gz"] == ["gz-0", "gz-1"]
    assert out["backend"] == "tf"
    assert out["listing"] == ["by_tf.tfrecord", "by_tfos.tfrecord", "by_tfos.tfrecord.gz", "via_gfile.tfrecord"]
    assert f"{base}/missing" in out["missing_error"]
    # what TF wrote (through libhdfs) reads back through hdfs-native
    assert list(read_tfrecords(f"{base}/by_tf.tfrecord", fs=fs)) == [f"tf-{i}".encode() for i in range(5)]
    assert list(read_tfrecords(f"{base}/via_gfile.tfrecord", fs=fs)) == [b"g1", b"g2"]
    fs.delete(base, recursive=True)
