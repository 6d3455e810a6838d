"""``tfos.run(..., plot=...)`` on the real standalone cluster: a PNG of every node's curves at shutdown."""

from __future__ import annotations

import logging

from tests import cluster_mains, relay_mains
from tfos.cluster.progress_plot import progress_figure


def test_shutdown_writes_a_png_with_one_series_per_node(sc, tmp_path, start, caplog):
    caplog.set_level(logging.INFO, logger="tfos.cluster.cluster")
    path = tmp_path / "model" / "progress.png"  # its directory does not exist yet
    cluster = start(sc, relay_mains.keras_progress, {"out": str(tmp_path), "epochs": 2, "sleep": 0.01}, 2,
                    plot=str(path))
    cluster.shutdown(timeout=120)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(str(path)).shape
    assert width >= 400 and height >= 300
    history = cluster.progress_history()
    assert sorted(history) == ["worker:0", "worker:1"]
    assert all(points[-1]["step"] == 2 * 20 for points in history.values())  # 640 rows / 32, 2 epochs
    figure = progress_figure(history)
    loss_axes = figure.axes[0]
    assert sorted(line.get_label() for line in loss_axes.get_lines()) == ["worker:0", "worker:1"]
    assert f"progress plot of 2 node(s) written to {path}" in caplog.text


def test_keras_progress_under_multiworker_mirrored_is_not_summed_over_replicas(sc, tmp_path, start):
    """tf-keras sums per-batch logs over replicas under MultiWorkerMirroredStrategy; the callback undoes it."""
    cluster = start(sc, cluster_mains.mwms_fit, {"out": str(tmp_path), "progress": True, "steps": 40}, 2)
    cluster.shutdown(timeout=300)
    history = cluster.progress_history()
    assert sorted(history) == ["worker:0", "worker:1"]
    for points in history.values():
        accuracy = [p["accuracy"] for p in points if "accuracy" in p]
        assert accuracy and max(accuracy) <= 1.0, accuracy
        assert points[-1]["loss"] < 1.0  # 2 epochs of a 64-unit MLP on MNIST: about 0.3-0.5, not twice that
