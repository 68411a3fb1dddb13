"""The accuracy / latency Pareto front and its plot (used by ``effseg bench`` and the demo report)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (lower ``x``, higher ``y``), sorted by ``x``.

    ``x`` is a cost (latency in ms), ``y`` a score (mIoU in %): a point is on the front when no
    other point is at least as cheap and strictly better.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_figure(
    points: Sequence[tuple[float, float, str]],
    *,
    xlabel: str = "latency, median (ms, batch 1)",
    ylabel: str = "mIoU (%)",
    title: str | None = None,
    front: bool = True,
    markers: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
) -> Any:
    """The matplotlib figure of :func:`plot_pareto` (``None`` when there is nothing to plot); the
    caller saves and closes it (e.g. :meth:`effseg.fileio.AtomicFiles.savefig`)."""
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for i, (x, y, label) in enumerate(points):
        ax.scatter(
            x, y, s=40, zorder=3, marker=markers[i] if markers else "o", color=colors[i] if colors else None
        )
        if label:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if front:
        idx = pareto_front([(x, y) for x, y, _ in points])
        ax.step(
            [points[i][0] for i in idx],
            [points[i][1] for i in idx],
            where="post",
            color="tab:red",
            alpha=0.6,
            label="Pareto front",
        )
        ax.legend(loc="lower right", fontsize=8)
    ax.margins(x=0.3, y=0.2)  # room for the labels
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_pareto(points: Sequence[tuple[float, float, str]], path: str | Path, **style: Any) -> Path | None:
    """Scatter ``(x, y, label)`` points, labelled, with the Pareto front as a step line.

    ``style``: :func:`pareto_figure`'s keywords (``xlabel``, ``ylabel``, ``title``, ``front``,
    ``markers``, ``colors``). ``front=False`` draws the points only (e.g. GFLOPs vs latency,
    where higher is not better);
    ``markers``: one matplotlib marker per point (default circles); ``colors``: one matplotlib
    colour per point (default: the colour cycle); an empty label draws no text.  Writes a PNG to
    ``path`` atomically (:func:`effseg.fileio.atomic_savefig`: a full or read-only disk is one
    line and leaves an earlier plot intact); returns it, or ``None`` when there is nothing to plot.
    """
    from effseg.fileio import atomic_savefig

    fig = pareto_figure(points, **style)
    if fig is None:
        return None
    return atomic_savefig(fig, path, "the Pareto plot")


__all__ = ["pareto_figure", "pareto_front", "plot_pareto"]
