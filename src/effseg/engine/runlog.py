"""What a run tells: ``log.jsonl`` and TensorBoard (rank 0), and the console progress bar.

``log.jsonl`` is append-only, one JSON record per line, each appended in one write
(:func:`effseg.fileio.append_line`): a write that fails (a full disk) is cut back and stops the run
with one line, so the file holds whole lines; only a kill during the write itself can leave a
partial last line. :func:`read_log`, the one reader of the file in effseg, skips such a line, and a
run that opens the log again (``--resume``) removes it before it appends. TensorBoard's event files
are written by TensorBoard's own writer (not atomic; a kill may cut its last event, which
TensorBoard reads past).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from effseg.fileio import append_line, atomic_write_text

__all__ = ["LossWindow", "RunLog", "TrainProgress", "read_log"]


def _records(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``(line, record)`` of every whole JSON-object line of ``text``. A line that is not one (a
    last line cut by a kill mid-write) is skipped."""
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append((line, record))
    return out


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``log.jsonl``, in order; a partial last line (a kill mid-write) and
    any other line that is not a JSON object are skipped, never a traceback. A missing file is an
    empty log."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [record for _, record in _records(text)]


class RunLog:
    """Rank-0 ``log.jsonl`` + TensorBoard writer (no-op elsewhere).

    With ``resume_iter``, records logged after that iteration by the interrupted run are
    dropped (they are redone) and TensorBoard purges its later steps; the log is rewritten
    atomically, without a partial last line a kill may have left.
    """

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, resume_iter: int | None):
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self.tb = None
        if not enabled:
            return
        if self.path.exists():
            text = self.path.read_text(encoding="utf-8", errors="replace")
            limit = float("inf") if resume_iter is None else resume_iter
            # Drop entries logged after the checkpoint by the interrupted run (they are redone)
            # and lines cut by a kill: appending after a partial line would glue two records.
            keep = [line for line, record in _records(text) if record.get("iteration", 0) <= limit]
            new = "".join(line + "\n" for line in keep)
            if new != text:
                atomic_write_text(self.path, new, "the training log")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_iter)

    def log(self, record: dict[str, Any], prefix: str) -> None:
        """Append ``record`` to ``log.jsonl`` (one line, one write; a full disk is one
        :class:`~effseg.fileio.OutputError` line) and its numbers to TensorBoard."""
        if not self.enabled:
            return
        append_line(self.path, json.dumps(record), "the training log")
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
        from effseg.progress import progress_bar

        self.enabled, self.max_iters, self.budget_s = enabled, max_iters, budget_s
        stats = "loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[ips]} img/s"
        if max_iters is not None:  # steps: M/N and rich's ETA
            count, eta, total, done = None, None, float(max_iters), float(iteration)
        else:  # by the clock: the minutes spent of the budget and its ETA
            count, eta = "{task.fields[pos]}", "budget ETA {task.fields[eta]}"
            total, done = float(budget_s or 0.0), spent_s
        self.bar = progress_bar(count=count, stats=stats, eta=eta, disable=not enabled)
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
