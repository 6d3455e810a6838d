"""The CIFAR-10 example end to end on the shipped sample: binary batches -> TFRecords (Spark),
2-worker MultiWorkerMirroredStrategy training, evaluation (precision @ 1), 2-executor inference."""

from __future__ import annotations

import numpy as np
import pytest

from tests.example_runner import (
    EXAMPLES,
    checkpoint_step,
    last_line,
    load_module,
    metric,
    run_example,
    submit_example,
)

CIFAR = EXAMPLES / "cifar10"


def test_reads_the_standard_binary_batches():
    model = load_module(CIFAR / "cifar10_model.py")
    images, labels = model.read_cifar_binary([str(CIFAR / "data" / name) for name in model.TRAIN_FILES])
    assert images.shape == (820, 32, 32, 3) and images.dtype == np.uint8 and labels.shape == (820,)
    raw = (CIFAR / "data" / "data_batch_1.bin").read_bytes()
    assert labels[0] == raw[0]
    assert images[0, 0, 1, 0] == raw[1 + 1] and images[0, 0, 0, 2] == raw[1 + 2048]  # R plane, B plane
    assert model.class_names(str(CIFAR / "data"))[labels[0]] in ("frog", "truck", "automobile", "bird", "cat",
                                                                    "deer", "dog", "horse", "ship", "airplane")
    with pytest.raises(ValueError, match="whole number"):
        bad = CIFAR / "data" / "batches.meta.txt"
        model.read_cifar_binary([str(bad)])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """TFRecords of the sample written by cifar10_data_setup.py (Spark local mode)."""
    work = tmp_path_factory.mktemp("cifar10")
    out = run_example("cifar10/cifar10_data_setup.py", "--output", "data", "--num_partitions", "2", cwd=work,
                      timeout=240)
    assert "wrote 820 train records" in out and "wrote 164 test records" in out
    return work


@pytest.mark.slow
def test_train_on_two_workers_then_evaluate_and_infer(workdir):
    out = run_example("cifar10/cifar10_train.py", "--data_dir", "data", "--train_dir", "train", "--max_steps", "20",
                      "--save_steps", "10", "--batch_size", "32", "--cluster_size", "2", cwd=workdir, timeout=400)
    assert "trained 20 steps on 2 node(s)" in out
    assert sorted(p.name for p in (workdir / "train").glob("ckpt-*.index")) == ["ckpt-1.index", "ckpt-2.index"]

    out = run_example("cifar10/cifar10_eval.py", "--data_dir", "data", "--checkpoint_dir", "train", "--eval_dir",
                      "eval", "--run_once", cwd=workdir, timeout=240)
    assert last_line(out).startswith("precision @ 1: ")
    precision = metric(out, "precision @ 1")
    assert 0.0 <= precision <= 1.0
    assert list((workdir / "eval").glob("events.out.tfevents.*")), "no TensorBoard summary in --eval_dir"

    out = run_example("cifar10/cifar10_inference.py", "--data_dir", "data", "--checkpoint_dir", "train",
                      "--output", "predictions", "--cluster_size", "2", "--batch_size", "32", cwd=workdir,
                      timeout=300)
    assert metric(out, "images/s") > 0
    assert last_line(out).endswith("(2 executors)")
    rows = [line.split("\t") for p in sorted((workdir / "predictions").glob("part-*"))
            for line in p.read_text().splitlines()]
    assert len(rows) == 164
    assert all(0 <= int(r[1]) < 10 and 0 < float(r[2]) <= 1 for r in rows)
    # the same checkpoint on the same images: inference agrees with the evaluation
    assert np.mean([r[0] == r[1] for r in rows]) == pytest.approx(precision, abs=6e-5)  # printed to 4 places


@pytest.mark.slow
def test_tensorflowonspark_command_lines_on_standalone(workdir, submit_cluster):
    """TensorFlowOnSpark's cifar10_train.py / cifar10_eval.py flags, as written: spark-submit on a standalone
    cluster, --cluster_size from the executors, --max_steps the exact global step, TF-style booleans."""
    out, err = submit_example("cifar10/cifar10_train.py", "--data_dir", "data", "--train_dir", "tfos_train",
                              "--max_steps", "15", "--num_gpus", "0", "--batch_size", "16",
                              "--log_device_placement=false", cwd=workdir, master_url=submit_cluster.master_url,
                              executors=2, py_files=("cifar10/cifar10_model.py",))
    output = out + err  # spark-submit sends the Python driver's stderr to its stdout
    assert f"Spark master {submit_cluster.master_url}: 2 TF nodes" in output
    assert "trained 15 steps on 2 node(s)" in out
    assert checkpoint_step(workdir / "tfos_train") == 15  # not rounded up to --save_steps (100)
    out = run_example("cifar10/cifar10_eval.py", "--data_dir", "data", "--checkpoint_dir", "tfos_train",
                      "--eval_dir", "tfos_eval", "--eval_data", "test", "--run_once=True", cwd=workdir, timeout=240)
    assert 0.0 <= metric(out, "precision @ 1") <= 1.0
    assert list((workdir / "tfos_eval").glob("events.out.tfevents.*"))


def test_tensorflow_style_boolean_flags(monkeypatch):
    monkeypatch.syspath_prepend(str(CIFAR))
    train = load_module(CIFAR / "cifar10_train.py")
    assert train.parse_args(["--log_device_placement"]).log_device_placement is True
    assert train.parse_args(["--log_device_placement=false"]).log_device_placement is False
    assert train.parse_args(["--nolog_device_placement"]).log_device_placement is False
    args = train.parse_args(["--data_dir", "d", "--train_dir", "t", "--max_steps", "7", "--num_gpus", "2"])
    assert (args.data_dir, args.train_dir, args.max_steps, args.num_gpus, args.cluster_size) == ("d", "t", 7, 2, None)
    evaluate = load_module(CIFAR / "cifar10_eval.py")
    assert evaluate.parse_args(["--run_once=True", "--eval_data", "train_eval"]).run_once is True
    assert evaluate.parse_args([]).run_once is False
