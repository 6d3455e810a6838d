"""The driver's bounded progress history and its PNG (a real server and client on localhost, no Spark)."""

from __future__ import annotations

import pytest

from tfos.cluster.progress_plot import ProgressPlotError, progress_figure, write_progress_plot
from tfos.reservation import protocol
from tfos.reservation.client import ReservationClient
from tfos.reservation.protocol import Message
from tfos.reservation.server import ProgressHistory, ReservationServer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def register(client: ReservationClient, eid: int) -> None:
    client.register({"executor_id": eid, "host": "127.0.0.1", "port": 5000 + eid, "job_name": "worker",
                     "task_index": eid})


@pytest.fixture
def server():
    srv = ReservationServer(expected=2, secret=protocol.new_secret(), host="127.0.0.1", read_timeout=5.0)
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def history(server):
    """Two nodes' reports sent as PROGRESS frames through real clients; worker:0 also reports ``lr``."""
    clients = [ReservationClient(server.address, server.secret, timeout=10.0) for _ in range(2)]
    try:
        for eid, client in enumerate(clients):
            register(client, eid)
        for step in range(1, 41):
            for eid, client in enumerate(clients):
                metrics = {"accuracy": step / 40 - 0.1 * eid, "note": "text is not plotted"}
                if eid == 0:
                    metrics["lr"] = 0.01
                client.progress(eid, {"step": step * 10, "loss": 2.0 / step + eid, "metrics": metrics})
    finally:
        for client in clients:
            client.close()
    return server.progress_history()


def test_the_server_keeps_every_nodes_reports_by_name(history):
    assert list(history) == ["worker:0", "worker:1"]
    assert [p["step"] for p in history["worker:1"]] == [10 * s for s in range(1, 41)]
    last = history["worker:0"][-1]
    assert (last["loss"], last["accuracy"], last["lr"]) == (2.0 / 40, 1.0, 0.01)
    assert "note" not in last and last["time"] >= 0
    history["worker:0"].clear()  # a copy


def test_a_png_with_one_subplot_per_metric_and_one_line_per_node(history, tmp_path):
    from matplotlib.image import imread

    fig = progress_figure(history, title="test run")
    lines = {ax.get_title(): len(ax.get_lines()) for ax in fig.axes}
    assert lines == {"loss": 2, "accuracy": 2, "lr": 1}
    assert fig.axes[0].get_title() == "loss"
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["worker:0", "worker:1"]
    assert list(fig.axes[0].get_lines()[1].get_xdata()) == [10 * s for s in range(1, 41)]

    path = str(tmp_path / "progress.png")
    assert write_progress_plot(history, path, title="test run") == path
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    width, height = (int(round(x * 100)) for x in fig.get_size_inches())
    image = imread(path)
    assert image.shape[:2] == (height, width) and image.shape[2] in (3, 4)


def test_an_unwritable_path_is_named(history, tmp_path):
    path = str(tmp_path / "no such dir" / "progress.png")
    with pytest.raises(ProgressPlotError, match="no such dir") as err:
        write_progress_plot(history, path)
    assert err.value.path == path and isinstance(err.value, OSError)


def test_no_reports_still_make_a_png(server, tmp_path):
    assert server.progress_history() == {}
    path = write_progress_plot(server.progress_history(), str(tmp_path / "empty.png"))
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_the_history_stays_bounded_after_ten_thousand_reports():
    srv = ReservationServer(expected=1, secret=protocol.new_secret(), progress_history_points=500)
    srv.dispatch(Message(protocol.REGISTER, {"executor_id": 0, "host": "h", "port": 1, "job_name": "worker",
                                             "task_index": 0}))
    for step in range(10_000):
        srv.dispatch(Message(protocol.PROGRESS, {"executor_id": 0, "step": step, "loss": 1.0 / (step + 1)}))
    points = srv.progress_history()["worker:0"]
    assert 250 <= len(points) <= 500
    steps = [p["step"] for p in points]
    assert steps[0] == 0 and steps[-1] == 9_999  # the start and the latest report are kept
    gaps = {b - a for a, b in zip(steps[:-2], steps[1:-1], strict=True)}
    assert len(gaps) == 1  # thinned evenly: one stride between kept points


def test_history_thinning_keeps_a_bound_and_an_even_spread():
    history = ProgressHistory(limit=10)
    for i in range(1, 1001):
        history.add({"step": i})
        assert len(history) <= 10
        assert history.points()[-1] == {"step": i}
    steps = [p["step"] for p in history.points()]
    assert steps[0] == 1 and len({b - a for a, b in zip(steps[:-2], steps[1:-1], strict=True)}) == 1
    with pytest.raises(ValueError, match="at least 2"):
        ProgressHistory(limit=1)


def test_values_that_cannot_be_plotted_are_left_out_of_the_history():
    srv = ReservationServer(expected=1, secret=protocol.new_secret())
    srv.dispatch(Message(protocol.REGISTER, {"executor_id": 0, "host": "h", "port": 1, "job_name": "chief",
                                             "task_index": 0}))
    srv.dispatch(Message(protocol.PROGRESS, {"executor_id": 0, "step": 10 ** 400, "loss": float("nan"),
                                             "metrics": {"big": 10 ** 400, "inf": float("inf"), "ok": 3,
                                                         "flag": True, "step": 5}}))
    [point] = srv.progress_history()["chief:0"]
    assert set(point) == {"time", "ok"}
