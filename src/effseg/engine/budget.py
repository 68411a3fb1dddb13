"""Training by the clock: the time budget, its learning-rate schedule and its stop rule.

:class:`TrainClock` counts *training* seconds on a monotonic clock: validation runs
inside :meth:`TrainClock.paused` and is counted apart (``val_s``), so a budget of 40
minutes means 40 minutes of optimisation steps (data loading and checkpoint writes
included) however often the run validates. The count survives ``--resume``: a
checkpoint stores ``train_time_s`` / ``val_time_s`` and the resumed run starts its
clock from there, so a killed and resumed run stops at the same budget.

The clock is read exactly once per step (:meth:`TrainClock.tick`) and twice per
validation, so a fake clock injected by a test gives a deterministic run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["TrainClock", "poly_lr_factor", "budget_lr_factor"]


def poly_lr_factor(
    it: int, max_iters: int, power: float, warmup_iters: int = 0, warmup_ratio: float = 0.1
) -> float:
    """LR multiplier at 0-based iteration ``it``: ``(1 - it/max_iters)^power``, times a linear
    warm-up from ``warmup_ratio`` to 1 over the first ``warmup_iters`` iterations."""
    factor = (1.0 - min(it, max_iters) / max_iters) ** power
    if it < warmup_iters:
        factor *= warmup_ratio + (1.0 - warmup_ratio) * it / warmup_iters
    return factor


def budget_lr_factor(
    fraction: float, power: float, warmup_fraction: float = 0.0, warmup_ratio: float = 0.1
) -> float:
    """LR multiplier when ``fraction`` (0..1) of the time budget is spent: ``(1 - fraction)^power``,
    times a linear warm-up from ``warmup_ratio`` to 1 over the first ``warmup_fraction``."""
    fraction = min(max(fraction, 0.0), 1.0)
    factor = (1.0 - fraction) ** power
    if fraction < warmup_fraction:
        factor *= warmup_ratio + (1.0 - warmup_ratio) * fraction / warmup_fraction
    return factor


class TrainClock:
    """Seconds of training (validation excluded) against an optional budget.

    Args:
        budget_s: the budget in seconds, or None (count only, never exhausted).
        clock: a monotonic clock in seconds (``time.perf_counter``; tests pass a fake one).
        spent_s: training seconds already spent (from a checkpoint when resuming).
        val_s: validation seconds already spent.
    """

    def __init__(
        self,
        budget_s: float | None,
        clock: Callable[[], float] = time.perf_counter,
        spent_s: float = 0.0,
        val_s: float = 0.0,
    ):
        self.budget_s, self.clock = budget_s, clock
        self.spent_s, self.val_s = float(spent_s), float(val_s)
        self._mark: float | None = None
        self.last_pause_s = 0.0  # length of the last paused block (s)

    def start(self) -> None:
        """Start (or restart after a resume) counting from now."""
        self._mark = self.clock()

    def tick(self) -> float:
        """Read the clock once (after a step); returns the training seconds spent so far."""
        if self._mark is not None:
            now = self.clock()
            self.spent_s += now - self._mark
            self._mark = now
        return self.spent_s

    def set_spent(self, spent_s: float) -> None:
        """Adopt another process's count (rank 0's, under torchrun) so every rank stops together."""
        self.spent_s = float(spent_s)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Count the time spent inside the block as validation, not training."""
        self.tick()
        start = self.clock()
        try:
            yield
        finally:
            now = self.clock()
            self.val_s += now - start
            self.last_pause_s = now - start
            if self._mark is not None:
                self._mark = now

    @property
    def fraction(self) -> float:
        """Share of the budget spent (0..1); 0 without a budget."""
        if not self.budget_s:
            return 0.0
        return min(self.spent_s / self.budget_s, 1.0)

    @property
    def exhausted(self) -> bool:
        return self.budget_s is not None and self.spent_s >= self.budget_s
