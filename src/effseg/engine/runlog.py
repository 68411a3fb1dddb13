"""What a run tells: ``log.jsonl`` and TensorBoard (rank 0), and the console progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

__all__ = ["LossWindow", "RunLog", "TrainProgress"]


def _iteration_of(line: str) -> float:
    """The iteration of a log line; a line cut by a kill mid-write counts as after everything."""
    try:
        record = json.loads(line)
    except ValueError:
        return float("inf")
    return record.get("iteration", 0) if isinstance(record, dict) else float("inf")


class RunLog:
    """Rank-0 ``log.jsonl`` + TensorBoard writer (no-op elsewhere).

    With ``resume_iter``, records logged after that iteration by the interrupted run are
    dropped (they are redone) and TensorBoard purges its later steps.
    """

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, resume_iter: int | None):
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self.tb = None
        if not enabled:
            return
        if resume_iter is not None and self.path.exists():
            # Drop entries logged after the checkpoint by the interrupted run: they are redone.
            keep = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if _iteration_of(line) <= resume_iter
            ]
            self.path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_iter)

    def log(self, record: dict[str, Any], prefix: str) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record["iteration"]
            for key, value in record.items():
                if key not in ("iteration", "epoch", "time") and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class TrainProgress:
    """The rich progress bar of rank 0: steps with their ETA, or (by the clock) the minutes
    spent of the time budget with the budget's ETA. Disabled on other ranks."""

    def __init__(
        self,
        enabled: bool,
        max_iters: int | None,
        iteration: int,
        budget_s: float | None = None,
        spent_s: float = 0.0,
    ):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.enabled, self.max_iters, self.budget_s = enabled, max_iters, budget_s
        stats = TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[ips]} img/s")
        if max_iters is not None:
            columns: list[Any] = [
                MofNCompleteColumn(),
                stats,
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            ]
            total, done = float(max_iters), float(iteration)
        else:
            columns = [
                TextColumn("{task.fields[pos]}"),
                stats,
                TimeElapsedColumn(),
                TextColumn("budget ETA {task.fields[eta]}"),
            ]
            total, done = float(budget_s or 0.0), spent_s
        self.bar = Progress(TextColumn("[bold]train[/]"), BarColumn(), *columns, disable=not enabled)
        self.task = self.bar.add_task(
            "train", total=total, completed=done, loss="-", lr="-", ips="-", pos="", eta="-"
        )
        self.interactive = self.bar.console.is_terminal

    def __enter__(self) -> TrainProgress:
        self.bar.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.__exit__(kind, err, tb)

    def stats(self, loss: float, lr: float, ips: float) -> None:
        self.bar.update(self.task, loss=f"{loss:.4f}", lr=f"{lr:.2e}", ips=f"{ips:.1f}")

    def position(self, iteration: int, spent_s: float) -> None:
        """After each step: the iteration, and the training seconds spent (by the clock)."""
        if self.max_iters is not None:
            self.bar.update(self.task, completed=iteration)
            return
        budget = float(self.budget_s or 0.0)
        left = max(budget - spent_s, 0.0)
        self.bar.update(
            self.task,
            completed=min(spent_s, budget),
            pos=f"it {iteration}  {spent_s / 60:.1f}/{budget / 60:g} min",
            eta=f"{int(left // 60)}:{int(left % 60):02d}",
        )

    def print(self, message: str) -> None:
        """A console line (rank 0), above the bar."""
        if self.enabled:
            self.bar.console.print(message)


class LossWindow:
    """Sums of the loss terms (scalar tensors) since the last log line, kept across epochs."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.start, self.iters = time.perf_counter(), 0
        self.loss = torch.zeros((), device=self.device)
        self.parts: dict[str, torch.Tensor] = {}

    def add(self, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        self.iters += 1
        self.loss += loss
        for k, v in parts.items():
            self.parts[k] = self.parts.get(k, 0) + v
