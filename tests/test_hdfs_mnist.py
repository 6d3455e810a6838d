"""MNIST end to end on the real test HDFS, on both I/O paths, with resume (and TensorFlowIO on its own).

``mnist_data_setup.py`` writes TFRecords to HDFS from the Spark executors (tfos.io, hdfs-native);
``mnist_tf.py`` (InputMode.TENSORFLOW, Spark ``local[2]``, two TF workers) reads them from HDFS,
checkpoints to HDFS, exports the SavedModel to HDFS, and the driver evaluates the export reading
the HDFS test records. A second run with the same ``--model_dir`` must log that it resumes after
the first run's epoch. Once with tensorflow-io (libhdfs environment of ``scripts/hdfs.sh env``),
once without it (no libhdfs environment: tfos's hdfs-native layer does all HDFS I/O).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest

from tfos.io.filesystem import FileSystem
from tfos.io.tf_dataset import TensorFlowIO
from tfos.io.tfrecord import write_tfrecords

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(ROOT, "examples", "mnist")
LIBHDFS_VARS = ("CLASSPATH", "LD_LIBRARY_PATH", "HADOOP_HOME", "HADOOP_PREFIX", "HADOOP_COMMON_HOME",
                "HADOOP_HDFS_HOME", "HADOOP_CONF_DIR", "ARROW_LIBHDFS_DIR")
ACCURACY = re.compile(r"^test accuracy: (0\.\d{4})$", re.MULTILINE)


def run(script: str, *args: str, env: dict[str, str], cwd: str, timeout: float = 420,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run an MNIST example as its own Spark driver (local[2]); fails with its output tail."""
    env = dict(env, PYSPARK_PYTHON=sys.executable, PYTHONUNBUFFERED="1",
               PYSPARK_SUBMIT_ARGS="--master local[2] pyspark-shell")
    proc = subprocess.run([sys.executable, os.path.join(MNIST, script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited with {proc.returncode}\n--- stdout ---\n"
                             f"{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-8000:]}")
    return proc


def without_libhdfs() -> dict[str, str]:
    """This process's environment minus everything libhdfs (and so tensorflow-io's hdfs://) needs."""
    return {k: v for k, v in os.environ.items() if k not in LIBHDFS_VARS}


@pytest.fixture(scope="module")
def hdfs_base(hdfs_url):
    base = f"{hdfs_url}/tmp/tfos-mnist-{uuid.uuid4().hex[:8]}"
    yield base
    FileSystem().delete(base, recursive=True, missing_ok=True)


@pytest.fixture(scope="module")
def mnist_on_hdfs(hdfs_base, tmp_path_factory):
    out = run("mnist_data_setup.py", "--output", f"{hdfs_base}/mnist", "--format", "tfr",
              env=without_libhdfs(), cwd=str(tmp_path_factory.mktemp("setup"))).stdout
    assert f"wrote 22699 train records as tfr to {hdfs_base}/mnist/train" in out
    assert f"wrote 10000 test records as tfr to {hdfs_base}/mnist/test" in out
    fs = FileSystem()
    assert len(fs.glob(f"{hdfs_base}/mnist/train/part-*")) == 4
    assert fs.exists(f"{hdfs_base}/mnist/train/_SUCCESS")
    return f"{hdfs_base}/mnist"


def train_twice(data: str, out: str, env: dict[str, str], first_io: str, expect_io: str, cwd: str) -> None:
    """A 1-epoch run from scratch with ``--hdfs_io first_io``, then a resumed run with ``auto``."""
    common = ["--cluster_size", "2", "--epochs", "1", "--images_labels", f"{data}/train",
              "--test_images_labels", f"{data}/test", "--model_dir", f"{out}/model", "--export_dir", f"{out}/export"]
    first = run("mnist_tf.py", *common, "--hdfs_io", first_io, env=env, cwd=cwd)
    log = first.stdout + first.stderr
    assert f"reading 4 TFRecord files from {data}/train through {expect_io}" in log
    assert f"no checkpoint in {out}/model: starting from scratch" in log
    assert "starting at epoch 0 (step 0) of 1 epochs" in log
    assert float(ACCURACY.findall(first.stdout)[-1]) >= 0.9
    fs = FileSystem()
    assert fs.exists(f"{out}/model/checkpoint") and fs.exists(f"{out}/model/ckpt-1.index")
    assert fs.exists(f"{out}/export/saved_model.pb")
    assert not [n for n in fs.listdir(out) if n.startswith(".")], "a temporary export directory was left behind"

    # Same --model_dir: resumes after epoch 1 (nothing left to train), exports and evaluates again.
    second = run("mnist_tf.py", *common, "--hdfs_io", "auto", env=env, cwd=cwd)
    log = second.stdout + second.stderr
    assert f"through {expect_io}" in log  # auto picks the same path in the same environment
    assert re.search(r"restored \S*ckpt-1.*: resuming after epoch 1", log)
    assert re.search(r"starting at epoch 1 \(step [1-9]\d*\) of 1 epochs", log)
    assert float(ACCURACY.findall(second.stdout)[-1]) >= 0.9  # the restored weights were exported


@pytest.mark.slow
def test_mnist_on_hdfs_with_tensorflow_io(mnist_on_hdfs, hdfs_base, hdfs_env, tmp_path):
    pytest.importorskip("tensorflow_io")
    train_twice(mnist_on_hdfs, f"{hdfs_base}/tensorflow_io", hdfs_env, "tensorflow_io", "tensorflow_io",
                str(tmp_path))


@pytest.mark.slow
def test_mnist_on_hdfs_with_tfos_io(mnist_on_hdfs, hdfs_base, tmp_path):
    train_twice(mnist_on_hdfs, f"{hdfs_base}/tfos", without_libhdfs(), "tfos", "tfos", str(tmp_path))


def test_missing_training_data_names_the_path(hdfs_url, tmp_path):
    missing = f"{hdfs_url}/tmp/no-such-mnist-{uuid.uuid4().hex[:8]}/train"
    proc = run("mnist_tf.py", "--images_labels", missing, "--test_images_labels", missing, "--hdfs_io", "tfos",
               env=without_libhdfs(), cwd=str(tmp_path), check=False, timeout=180)
    assert proc.returncode != 0
    assert f"--images_labels {missing}: no such directory" in proc.stderr


def test_tfos_path_streams_hdfs_tfrecords_into_tf_data(hdfs_url, tmp_path):
    """The tfos I/O path in-process: glob through hdfs-native, records via Dataset.from_generator."""
    tf = pytest.importorskip("tensorflow")
    base = f"{hdfs_url}/tmp/tfos-tfio-{uuid.uuid4().hex[:8]}"
    fs = FileSystem()
    expected = set()
    for i in range(3):
        records = [f"file{i}-rec{j}".encode() for j in range(300 + i)]  # more than one 256-record chunk
        write_tfrecords(f"{base}/part-{i:05d}" + (".gz" if i == 2 else ""), records, "GZIP" if i == 2 else None,
                        fs=fs)
        expected.update(records)
    fs.write_bytes(f"{base}/_SUCCESS", b"")
    try:
        tio = TensorFlowIO("tfos", probe=base)
        assert tio.mode == "tfos" and not tio.tf_can_open(base) and tio.tf_can_open(str(tmp_path))
        files = tio.glob(f"{base}/part-*")
        assert [f.rsplit("/", 1)[1] for f in files] == ["part-00000", "part-00001", "part-00002.gz"]
        ds = tio.tfrecord_dataset(files, compression="auto", num_parallel_reads=2)
        assert ds.element_spec == tf.TensorSpec((), tf.string)
        got = [r.numpy() for r in ds]
        assert len(got) == len(expected) and set(got) == expected

        # an export-like directory comes down to a local temporary copy TensorFlow can open
        fs.write_bytes(f"{base}/export/saved_model.pb", b"pb")
        fs.write_bytes(f"{base}/export/variables/variables.index", b"ix")
        with tio.local_copy(f"{base}/export") as local:
            assert open(os.path.join(local, "variables", "variables.index"), "rb").read() == b"ix"
        assert not os.path.exists(local)
        with pytest.raises(FileNotFoundError, match="no-such-export"):
            with tio.local_copy(f"{base}/no-such-export"):
                pass
    finally:
        fs.delete(base, recursive=True, missing_ok=True)


def test_tensorflow_io_path_requested_without_libhdfs_says_what_is_missing():
    with pytest.raises(RuntimeError, match="CLASSPATH is not set|tensorflow-io is not installed"):
        TensorFlowIO("tensorflow_io", environ={"PATH": "/nonexistent"})
    with pytest.raises(ValueError, match="hdfs_io must be one of"):
        TensorFlowIO("libhdfs")
