"""The training curves as a PNG: one subplot per metric against step, one line per node.

``write_progress_plot(server.progress_history(), path)`` draws what the nodes reported with
``ctx.report(step=..., loss=..., **metrics)`` or :class:`tfos.ProgressCallback` (see
:meth:`tfos.reservation.server.ReservationServer.progress_history`). It uses matplotlib's Agg
canvas directly (no pyplot, no display, the process's matplotlib backend untouched) and needs
the ``plot`` extra: ``pip install 'tfos[plot]'``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PLOTTED_METRICS = 12  # subplots; further metrics are named in the title, not drawn
_NOT_METRICS = frozenset({"step", "time"})


class ProgressPlotError(OSError):
    """The progress plot could not be written (``path`` names where)."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


def _matplotlib() -> Any:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"the progress plot needs matplotlib ({exc}): pip install 'tfos[plot]'") from exc
    return Figure, FigureCanvasAgg


def metric_names(history: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """The metrics in ``history`` that have a step: ``loss`` first, then the others by name."""
    names: set[str] = set()
    for points in history.values():
        for point in points:
            if _number(point.get("step")) is not None:
                names.update(k for k, v in point.items() if k not in _NOT_METRICS and _number(v) is not None)
    return sorted(names, key=lambda n: (n != "loss", n))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def progress_figure(history: Mapping[str, Sequence[Mapping[str, Any]]], title: str = "") -> Figure:
    """The figure :func:`write_progress_plot` saves: one axes per metric (``loss`` first, at most
    ``MAX_PLOTTED_METRICS``), x = step, one line per node that reported the metric, labelled with
    the node's name. ``history`` maps node names to points as ``progress_history()`` returns them;
    points without a step are left out. With no metric at all, one empty axes says so."""
    figure_cls, canvas_cls = _matplotlib()
    names = metric_names(history)
    shown, hidden = names[:MAX_PLOTTED_METRICS], names[MAX_PLOTTED_METRICS:]
    cols = 1 if len(shown) <= 2 else 2
    rows = max(1, math.ceil(len(shown) / cols))
    fig = figure_cls(figsize=(6.4 * cols, 1.0 + 2.8 * rows), layout="constrained")
    canvas_cls(fig)
    if title or hidden:
        more = f" ({len(hidden)} more metrics not drawn: {', '.join(hidden[:5])}{'...' if len(hidden) > 5 else ''})"
        fig.suptitle((title or "training progress") + (more if hidden else ""))
    if not shown:
        ax = fig.add_subplot(1, 1, 1)
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no node reported a step with a numeric metric", ha="center", va="center")
        return fig
    for i, name in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        for node, points in history.items():
            xy = [(_number(p.get("step")), _number(p.get(name))) for p in points]
            xy = [(x, y) for x, y in xy if x is not None and y is not None]
            if xy:
                ax.plot([x for x, _ in xy], [y for _, y in xy], label=str(node), linewidth=1.2,
                        marker="." if len(xy) < 50 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    return fig


def write_progress_plot(history: Mapping[str, Sequence[Mapping[str, Any]]], path: str, title: str = "") -> str:
    """Write the progress plot of ``history`` (``ReservationServer.progress_history()``) as a PNG at
    ``path`` and return ``path``. Raises :class:`ProgressPlotError` (an ``OSError``) naming ``path``
    when it cannot be written, ``ImportError`` without matplotlib."""
    fig = progress_figure(history, title)
    try:
        fig.savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise ProgressPlotError(f"cannot write the progress plot to {path!r}: {exc.strerror or exc}; pass a "
                                "path in an existing, writable directory", path) from exc
    return path
