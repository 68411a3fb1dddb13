"""effseg's one progress bar look (rich): ``what  bar  M/N  [rate] [stats]  elapsed  ETA left``.

Every bar effseg draws -- the data generators' process pool, training, evaluation, ``effseg
bench`` and the ``effseg predict`` pipeline -- is built by :func:`progress_bar`, so they read
alike and rich's progress module is imported in this one place. Import this module inside the
function that draws (as the callers do) where ``effseg --help`` must stay light.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """The speed rich measures from the advances, ``12.3 fps`` (``- fps`` before it has one)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}" if speed else f"- {self.unit}", style="progress.data.speed")


def progress_bar(
    *,
    count: str | None = None,
    rate: str | None = None,
    stats: str | None = None,
    eta: str | None = None,
    transient: bool = False,
    disable: bool = False,
    console: Console | None = None,
) -> Progress:
    """A rich ``Progress`` with effseg's columns; use it as a context manager, ``add_task(what,
    total=...)`` and ``advance``.

    The columns, left to right: the task's description (bold), the bar, ``M/N`` done (or the
    ``count`` template instead, e.g. ``"{task.completed} frames"`` when the total is unknown),
    the measured speed in ``rate`` units if given (``"fps"``), the ``stats`` template over the
    task's own fields if given (``"loss {task.fields[loss]}"``), the time elapsed, and
    ``ETA <time left>`` (or the ``eta`` template instead, for a caller that computes its own, such
    as a training time budget). ``transient`` removes the bar when it stops; ``disable`` draws
    nothing (another rank, ``progress=False``); ``console`` is where it draws (default: rich's).
    """
    columns: list[ProgressColumn] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if count is None else TextColumn(count),
    ]
    if rate is not None:
        columns.append(RateColumn(rate))
    if stats is not None:
        columns.append(TextColumn(stats))
    columns.append(TimeElapsedColumn())
    columns += [TextColumn("ETA"), TimeRemainingColumn()] if eta is None else [TextColumn(eta)]
    return Progress(*columns, transient=transient, disable=disable, console=console)
