"""The MNIST main job end to end, run as a user runs it: data set-up, then training, in local mode and with
spark-submit on a Spark standalone cluster, with tfos's and TensorFlowOnSpark's command lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.example_runner import checkpoint_step, submit_example

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(ROOT, "examples", "mnist")


def run_script(script: str, *args: str, cwd: str, timeout: int = 900) -> tuple[str, str]:
    """Run an example; returns (stdout, stdout + stderr)."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, os.path.join(MNIST, script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script} failed with {proc.returncode}:\n{output[-5000:]}"
    return proc.stdout, output


@pytest.fixture(scope="module")
def mnist_tfr(tmp_path_factory):
    work = tmp_path_factory.mktemp("mnist")
    # TensorFlowOnSpark's HDFS-era layout: mnist/tfr/train, mnist/tfr/test
    out, _ = run_script("mnist_data_setup.py", "--output", "mnist/tfr", "--format", "tfr", cwd=str(work))
    assert "wrote 22699 train records as tfr" in out
    assert "wrote 10000 test records as tfr" in out
    return work


@pytest.mark.slow
def test_mnist_tf_trains_checkpoints_resumes_and_reports_accuracy(mnist_tfr):
    common = ["--cluster_size", "2", "--images_labels", "mnist/tfr/train", "--test_images_labels", "mnist/tfr/test",
              "--model_dir", "model", "--export_dir", "export"]
    stdout, first = run_script("mnist_tf.py", *common, "--epochs", "1", cwd=str(mnist_tfr))
    assert "no checkpoint in" in first and "starting at epoch 0 (step 0)" in first
    accuracy = float(re.fullmatch(r"test accuracy: (0\.\d{4})", stdout.strip().splitlines()[-1]).group(1))
    assert accuracy >= 0.90
    # A second run with the same --model_dir resumes after the first run's epoch.
    stdout, second = run_script("mnist_tf.py", *common, "--epochs", "2", cwd=str(mnist_tfr))
    assert re.search(r"starting at epoch 1 \(step \d+\) of 2 epochs", second)
    resumed = float(re.fullmatch(r"test accuracy: (0\.\d{4})", stdout.strip().splitlines()[-1]).group(1))
    assert resumed >= accuracy - 0.01
    assert os.path.exists(os.path.join(mnist_tfr, "export", "saved_model.pb"))


@pytest.mark.slow
def test_mnist_tf_survives_a_killed_worker_and_still_reaches_98_percent(mnist_tfr, tmp_path):
    """kill -9 of worker:1's TF process after the first checkpoint: with --max_restarts 1 the job restarts from
    it, ends at its target epoch, and its accuracy is the unfaulted job's."""
    import signal
    import time

    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    model = tmp_path / "model"
    cmd = [sys.executable, os.path.join(MNIST, "mnist_tf.py"), "--cluster_size", "2", "--images_labels",
           "mnist/tfr/train", "--test_images_labels", "mnist/tfr/test", "--model_dir", str(model), "--export_dir",
           str(tmp_path / "export"), "--epochs", "4", "--max_restarts", "1"]
    with open(tmp_path / "out.log", "a+") as log:  # O_APPEND: reading here never moves where it writes
        proc = subprocess.Popen(cmd, cwd=str(mnist_tfr), env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 600
            while not (model / "checkpoint").exists():
                assert proc.poll() is None and time.monotonic() < deadline, "no first checkpoint"
                time.sleep(0.2)
            log.seek(0)
            started = re.search(r"\[worker:1\] .*TF process pid (\d+) runs main_fun", log.read())
            assert started, "worker:1's TF process pid is not in the output"
            os.kill(int(started.group(1)), signal.SIGKILL)
            assert proc.wait(timeout=900) == 0, log.seek(0) or log.read()[-5000:]
        finally:
            if proc.poll() is None:
                proc.kill()
        log.seek(0)
        output = log.read()
    assert "running -> restarting" in output and "restart 1 of max_restarts=1" in output
    resumed = re.findall(r"starting at epoch (\d+) \(step (\d+)\) of 4 epochs", output)
    assert len(resumed) >= 2 and int(resumed[-1][1]) > 0, resumed  # the second generation, from its checkpoint
    accuracy = float(re.search(r"test accuracy: (0\.\d{4})", output).group(1))
    assert accuracy >= 0.98, accuracy


@pytest.mark.slow
def test_mnist_tf_tfos_command_line_trains_exact_steps_and_resumes(mnist_tfr):
    """TensorFlowOnSpark's HDFS-era line, no test-set flag: --steps is the global step target; the test set is
    found next to the training data; a rerun with a higher --steps trains only the difference."""
    tfos_line = ["--images", "mnist/tfr/train", "--format", "tfr", "--mode", "train", "--model", "tfos_model"]
    stdout, output = run_script("mnist_tf.py", *tfos_line, "--steps", "30", "--export_dir", "tfos_export",
                                cwd=str(mnist_tfr))
    assert re.search(r"no --test_images_labels given: evaluating on \S+/mnist/tfr/test \(next to the training data\)",
                     output)
    assert "starting at step 0 of 30 steps: 30 to train" in output
    assert "[worker:0] mnist: trained 30 steps in this run: global step 30" in output
    assert checkpoint_step(str(mnist_tfr / "tfos_model")) == 30
    assert re.fullmatch(r"test accuracy: 0\.\d{4}", stdout.strip().splitlines()[-1])

    stdout, output = run_script("mnist_tf.py", *tfos_line, "--steps", "40", "--export_dir", "tfos_export",
                                cwd=str(mnist_tfr))
    assert "starting at step 30 of 40 steps: 10 to train" in output
    assert "[worker:0] mnist: trained 10 steps in this run: global step 40" in output
    assert checkpoint_step(str(mnist_tfr / "tfos_model")) == 40
    assert re.fullmatch(r"test accuracy: 0\.\d{4}", stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mnist_tf_on_standalone_without_a_test_set_skips_evaluation(mnist_tfr, submit_cluster, tmp_path):
    """spark-submit on a standalone cluster, --cluster_size from --total-executor-cores, no test set anywhere:
    the job trains, says evaluation is skipped and exits 0."""
    (tmp_path / "only").mkdir()
    os.symlink(mnist_tfr / "mnist" / "tfr" / "train", tmp_path / "only" / "train")
    stdout, stderr = submit_example("mnist/mnist_tf.py", "--images", "only/train", "--format", "tfr", "--mode",
                                    "train", "--model", "model", "--steps", "12", cwd=tmp_path,
                                    master_url=submit_cluster.master_url, executors=2)
    output = stdout + stderr  # spark-submit sends the Python driver's stderr to its stdout
    assert f"Spark master {submit_cluster.master_url}: 2 TF nodes" in output
    assert re.search(r"no --test_images_labels given and no test set next to the training data "
                     r"\(\S+/only/test does not exist\): evaluation skipped", output)
    assert checkpoint_step(str(tmp_path / "model")) == 12  # node logs stay in the executors' logs here
    assert "evaluation skipped: no test set (give --test_images_labels)" in stdout
    assert "test accuracy" not in output


def test_mnist_data_setup_rejects_mismatched_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        os.symlink(os.path.join(MNIST, "data", name), data / name)
    os.symlink(os.path.join(MNIST, "data", "t10k-labels-idx1-ubyte.gz"), data / "train-labels-idx1-ubyte.gz")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    proc = subprocess.run([sys.executable, os.path.join(MNIST, "mnist_data_setup.py"), "--data_dir", str(data),
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert "has 22699 images but" in proc.stderr and "has 10000 labels" in proc.stderr


@pytest.mark.slow
def test_mnist_spark_feeds_train_and_validation_inputs_then_inference(mnist_tfr):
    # Without an export, mnist_inference.py fails before the cluster starts, naming the path.
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    proc = subprocess.run([sys.executable, os.path.join(MNIST, "mnist_inference.py"), "--images_labels",
                           "mnist/tfr/test", "--export_dir", "no_such_export"], cwd=str(mnist_tfr), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert re.search(r"--export_dir \S+/no_such_export: no such directory", proc.stderr), proc.stderr[-3000:]
    assert "starting TF cluster" not in proc.stderr

    # TensorFlowOnSpark 2.x's mnist_spark.py line: no --format (detected), no test flag (found next to train)
    stdout, output = run_script("mnist_spark.py", "--cluster_size", "2", "--images_labels", "mnist/tfr/train",
                                "--model_dir", "spark_model", "--export_dir", "spark_export", "--epochs", "1",
                                cwd=str(mnist_tfr))
    assert re.search(r"no --test_images_labels given: evaluating on \S+/mnist/tfr/test", output)
    # Exact epochs: both inputs split evenly over the 2 workers (the smallest shard's rows each),
    # the remainder logged; shards differ by at most one row per input partition.
    for name, rows in (("train", 22699), ("validation", 2000)):
        m = re.search(rf"input '{name}': {rows} rows over 2 workers -> (\d+) rows per worker per epoch"
                      rf"(?:; (\d+) remainder rows are left out of each epoch \(shards of (\d+)-(\d+) rows)?", output)
        assert m, f"no plan logged for input {name!r}"
        per_worker = int(m.group(1))
        left = int(m.group(2) or 0)
        assert 2 * per_worker + left == rows and left <= 16
        if left:
            assert int(m.group(3)) == per_worker and int(m.group(3)) + int(m.group(4)) == rows
    assert "val_accuracy" in output
    accuracy = float(re.fullmatch(r"test accuracy: (0\.\d{4})", stdout.strip().splitlines()[-1]).group(1))
    assert accuracy >= 0.90
    # Batch inference in InputMode.SPARK with the export: one output per test image.
    stdout, output = run_script("mnist_inference.py", "--cluster_size", "2", "--images_labels", "mnist/tfr/test",
                                "--export_dir", "spark_export", "--output", "predictions", cwd=str(mnist_tfr))
    lines = stdout.strip().splitlines()
    assert re.match(r"inferred 10000 rows in [\d.]+s \(\d+ rows/s\)$", lines[-2]), lines[-2]
    inferred = float(re.fullmatch(r"inference accuracy: (0\.\d{4})", lines[-1]).group(1))
    assert inferred >= 0.90
    assert abs(inferred - accuracy) <= 0.001  # the same model on the same 10,000 images
    assert "saved 10000 predictions to" in output
    saved = [line for part in (mnist_tfr / "predictions").glob("part-*.csv")
             for line in part.read_text().splitlines()[1:]]  # each part has a header line
    assert len(saved) == 10000


@pytest.mark.slow
def test_mnist_pipeline_fits_then_transforms_the_test_images(mnist_tfr):
    # TensorFlowOnSpark 2.x's mnist_pipeline.py train line; the test set is found next to the training data
    stdout, output = run_script("mnist_pipeline.py", "--cluster_size", "2", "--images_labels", "mnist/tfr/train",
                                "--format", "tfr", "--mode", "train", "--model_dir", "pipeline_model",
                                "--export_dir", "pipeline_export", "--epochs", "1", cwd=str(mnist_tfr))
    assert re.search(r"no --test_images_labels given: evaluating on \S+/mnist/tfr/test", output)
    assert re.search(r"input 'input': 22699 rows over 2 workers -> \d+ rows per worker per epoch", output)
    assert re.search(r"transform of 10000 test images took [\d.]+s", output)
    accuracy = float(re.fullmatch(r"test accuracy: (0\.\d{4})", stdout.strip().splitlines()[-1]).group(1))
    assert accuracy >= 0.90
    # TFModel.transform agrees with running the same export here on the same 10,000 images.
    import numpy as np
    import tensorflow as tf

    from tests.cluster_mains import load_mnist

    serve = tf.saved_model.load(str(mnist_tfr / "pipeline_export")).signatures["serving_default"]
    images, labels = load_mnist("test")
    x = (images.reshape(-1, 28, 28, 1) / 255.0).astype("float32")
    predicted = np.concatenate([serve(conv2d_input=tf.constant(x[i:i + 1000]))["dense_1"].numpy().argmax(axis=1)
                                for i in range(0, len(x), 1000)])
    assert abs(float(np.mean(predicted == labels)) - accuracy) <= 0.0001


def test_tensorflowonspark_flags_and_path_rules(tmp_path):
    """No cluster: TFoS's flag names parse to tfos's, the test-set and export look-ups, executor counts."""
    from types import SimpleNamespace

    from tests.example_runner import load_module
    from tfos.io.tfrecord import write_tfrecords

    mnist_tf = load_module(os.path.join(MNIST, "mnist_tf.py"))
    args = mnist_tf.parse_args(["--images", "hdfs://nn/user/me/mnist/tfr/train", "--format", "tfr", "--mode",
                                "train", "--model", "mnist_model", "--steps", "100"])
    assert (args.images_labels, args.model_dir, args.steps) == ("hdfs://nn/user/me/mnist/tfr/train", "mnist_model", 100)
    assert args.test_images_labels is None and args.cluster_size is None
    short = mnist_tf.parse_args(["-i", "a/train", "-f", "tfr", "-X", "train", "-m", "m", "-s", "5", "-n", "3",
                                 "-e", "2", "-b", "8", "-r", "1", "-o", "p", "-tb"])
    assert (short.images_labels, short.model_dir, short.steps, short.cluster_size, short.epochs) == ("a/train", "m", 5,
                                                                                                     3, 2)
    assert mnist_tf.next_to("hdfs://nn/user/me/mnist/tfr/train") == "hdfs://nn/user/me/mnist/tfr/test"
    assert mnist_tf.next_to("file:///d/mnist_train/") == "file:///d/mnist_test"
    assert mnist_tf.next_to("file:///d/images") is None
    (tmp_path / "d" / "train").mkdir(parents=True)
    fs = "file://"
    assert mnist_tf.find_test_set(None, str(tmp_path / "d" / "train"), fs) is None
    (tmp_path / "d" / "test").mkdir()
    assert mnist_tf.find_test_set(None, str(tmp_path / "d" / "train"), fs) == f"file://{tmp_path}/d/test"

    def context(master: str, **conf: str) -> SimpleNamespace:
        return SimpleNamespace(master=master, getConf=lambda: SimpleNamespace(get=lambda k, d=None: conf.get(k, d)))

    assert mnist_tf.executor_count(context("yarn", **{"spark.executor.instances": "3"}), 2) == 3
    assert mnist_tf.executor_count(context("spark://m:7077", **{"spark.cores.max": "4",
                                                                "spark.executor.cores": "2"}), 2) == 2
    assert mnist_tf.executor_count(context("local[3]"), 2) == 3
    assert mnist_tf.executor_count(context("local[*]"), 2) == 2

    mnist_spark = load_module(os.path.join(MNIST, "mnist_spark.py"))
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "part-00000").write_text("7,0,0,255\n")
    write_tfrecords(str(tmp_path / "tfr" / "part-r-00000"), [b"\x08\x01"])
    assert mnist_spark.detect_format(str(tmp_path / "csv")) == "csv"
    assert mnist_spark.detect_format(str(tmp_path / "tfr")) == "tfr"

    setup = load_module(os.path.join(MNIST, "mnist_data_setup.py"))
    args = setup.parse_args(["--output", "mnist/tfr", "-f", "tf", "--num-partitions", "3"])
    assert (args.output, args.format, args.num_partitions) == ("mnist/tfr", "tfr", 3)
    assert setup.parse_args([]).format is None  # both formats, TensorFlowOnSpark 2.x's layout

    inference = load_module(os.path.join(MNIST, "mnist_inference.py"))
    from tfos.io.filesystem import FileSystem

    for version in ("1600000000", "1700000000"):
        (tmp_path / "export" / version).mkdir(parents=True)
        (tmp_path / "export" / version / "saved_model.pb").write_bytes(b"")
    assert inference.find_export(FileSystem(), str(tmp_path / "export")) == f"{tmp_path}/export/1700000000"
    assert inference.find_export(FileSystem(), str(tmp_path / "nothing")) is None
