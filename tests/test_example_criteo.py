"""The Criteo example end to end on the shipped samples: loader, Spark SQL EDA, 1 ps + 2 workers
training and inference in both input modes. The validation loss must beat the base rate."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from tests.example_runner import EXAMPLES, last_line, load_module, metric, run_example, submit_example

CRITEO = EXAMPLES / "criteo"
DATA = CRITEO / "data"
VALIDATION = f"{DATA / 'sample_a.tsv'},{DATA / 'sample_b.tsv'}"


@pytest.fixture(scope="module")
def criteo_data():
    return load_module(CRITEO / "criteo_data.py")


def test_loader_treats_empty_and_missing_trailing_fields_as_missing(criteo_data):
    with open(DATA / "sample_b.tsv") as f:
        lines = f.readlines()
    short = [i for i, line in enumerate(lines) if len(line.rstrip("\n").split("\t")) < 40]
    assert short, "sample_b.tsv should hold rows with stripped trailing fields"
    batch = criteo_data.parse_lines(lines)
    assert len(batch) == 100 and batch.ints.shape == (100, 13) and batch.cats.shape == (100, 26)
    row = short[0]
    fields = lines[row].rstrip("\n").split("\t")
    assert all(batch.cats[row, k] == "" for k in range(len(fields) - 14, 26))  # stripped -> missing
    assert batch.label[row] == float(fields[0])
    for k in range(13):
        expected = fields[1 + k]
        assert (math.isnan(batch.ints[row, k]) if expected == "" else batch.ints[row, k] == float(expected))
    train = criteo_data.parse_lines(open(DATA / "train_head1000.tsv"))
    assert len(train) == 1000 and int(train.label.sum()) == 205
    with pytest.raises(ValueError, match="at most 40"):
        criteo_data.split_line("\t".join(["1"] * 41))


def test_base_rate_loss(criteo_data):
    labels = np.array([1, 0, 0, 0], np.float32)
    assert criteo_data.base_rate_loss(0.25, labels) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))


@pytest.mark.slow
def test_eda(tmp_path):
    out = run_example("criteo/criteo_eda.py", "--top", "3", cwd=tmp_path, timeout=240)
    assert re.search(r"^rows: 1000$", out, re.MULTILINE)
    assert metric(out, "CTR") == pytest.approx(0.205)
    assert re.search(r"^\s+C9\s+2\s+0\.0%$", out, re.MULTILINE)  # distinct values, missing share
    assert re.search(r"^\s+missing\s+41\s+0\.1707$", out, re.MULTILINE)  # I5 histogram
    assert "C5=25c83c98 & C9=a73ee510       619" in out  # the most frequent pair


def _train_and_score(tmp_path, input_mode: str, steps: int) -> None:
    out = run_example("criteo/criteo_spark.py", "--mode", "train", "--input_mode", input_mode, "--model", "model",
                      "--steps", str(steps), "--validation_every", "50", "--cluster_size", "3",
                      "--validation", VALIDATION, cwd=tmp_path, timeout=400)
    assert last_line(out).startswith("validation loss: ")
    loss, base = metric(out, "validation loss"), metric(out, "base-rate loss")
    assert 0 < loss < base, f"validation loss {loss} does not beat the base rate {base}"
    oracle = float(re.search(r"would score (\d\.\d+)", out).group(1))
    assert loss < oracle  # better than even the validation rows' own constant CTR
    out = run_example("criteo/criteo_spark.py", "--mode", "inference", "--input_mode", input_mode, "--model",
                      "model", "--data", VALIDATION, "--output", "predictions", "--cluster_size", "2",
                      cwd=tmp_path, timeout=300)
    assert "wrote 200 click probabilities" in out
    rows = [line.split("\t") for p in sorted((tmp_path / "predictions").glob("part-*"))
            for line in p.read_text().splitlines()]
    assert len(rows) == 200
    labels = np.array([float(r[0]) for r in rows])
    probs = np.array([float(r[1]) for r in rows])
    assert labels.sum() == 65 and ((probs > 0) & (probs < 1)).all()
    assert -np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)) < base


@pytest.mark.slow
def test_train_and_inference_tensorflow_input_mode(tmp_path):
    _train_and_score(tmp_path, "tf", steps=200)


@pytest.mark.slow
def test_train_and_inference_spark_input_mode(tmp_path):
    _train_and_score(tmp_path, "spark", steps=200)


@pytest.mark.slow
def test_tensorflowonspark_train_line_on_standalone(tmp_path, submit_cluster):
    """TensorFlowOnSpark's criteo_spark.py train line (short flags, no --cluster_size: 1 ps + 2 workers from the
    3 executors) with spark-submit on a standalone cluster."""
    out, err = submit_example("criteo/criteo_spark.py", "-X", "train", "-i", str(DATA / "train_head1000.tsv"),
                              "-v", VALIDATION, "-s", "60", "-b", "32", "-m", "model", cwd=tmp_path,
                              master_url=submit_cluster.master_url, executors=3,
                              py_files=("criteo/criteo_data.py", "criteo/criteo_model.py"))
    output = out + err  # spark-submit sends the Python driver's stderr to its stdout
    assert f"Spark master {submit_cluster.master_url}: 3 TF nodes" in output
    assert "executor 0=ps:0, executor 1=worker:0, executor 2=worker:1" in output
    assert 0 < metric(out, "validation loss") < metric(out, "base-rate loss")


def test_missing_validation_path_fails_before_the_cluster_starts(tmp_path):
    missing = str(tmp_path / "no_such.tsv")
    with pytest.raises(AssertionError, match=r"--validation \S*no_such.tsv: no such file or directory"):
        run_example("criteo/criteo_spark.py", "--mode", "train", "--validation", missing, "--steps", "1",
                    cwd=tmp_path, timeout=240)


def test_tensorflowonspark_short_flags(monkeypatch):
    monkeypatch.syspath_prepend(str(CRITEO))
    spark = load_module(CRITEO / "criteo_spark.py")
    args = spark.parse_args(["-X", "train", "-i", "d", "-v", "v", "-m", "m", "-s", "9", "-b", "4", "-e", "2", "-n",
                             "5", "-o", "o", "-tb", "-tbld", "logs", "-r", "2", "-c", "True"])
    assert (args.mode, args.data, args.validation, args.model, args.steps, args.batch_size, args.epochs,
            args.cluster_size, args.output, args.tensorboard, args.tensorboardlogdir) == (
        "train", "d", "v", "m", 9, 4, 2, 5, "o", True, "logs")
