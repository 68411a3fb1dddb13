"""The shared helpers of issue 26's clean-up: effseg's one progress bar look (`effseg.progress`,
drawn by the data pools, training, eval, bench and predict), the one dataset-root check
(`effseg.data.base.dataset_root`) and the one wording of a state dict that does not fit a model
(`effseg.models.pretrained.Misfit`, used by `load_pretrained` and `model.init`)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console
from rich.progress import Progress
from torch import nn

from effseg.data.base import dataset_root, run_parallel
from effseg.engine.init_weights import InitError, InitSource, plan_init
from effseg.engine.runlog import TrainProgress
from effseg.errors import DataError
from effseg.models.pretrained import Misfit
from effseg.progress import progress_bar


def _shown(bar: Progress) -> str:
    """The bar's line(s) as plain text, as a 160-column terminal would show them."""
    out = Console(file=io.StringIO(), width=160, color_system=None)
    out.print(bar.make_tasks_table(bar.tasks))
    return out.file.getvalue()  # type: ignore[attr-defined]


def test_the_house_columns_are_what_bar_count_elapsed_eta() -> None:
    bar = progress_bar(disable=True)
    task = bar.add_task("eval", total=10)
    bar.advance(task, 3)
    line = _shown(bar)
    assert line.split()[0] == "eval" and "3/10" in line and "ETA" in line
    assert line.index("3/10") < line.index("0:00:00") < line.index("ETA")  # elapsed, then the ETA


def test_a_stream_shows_frames_and_their_rate_without_a_total() -> None:
    bar = progress_bar(count="{task.completed} frames", rate="fps", disable=True)
    task = bar.add_task("predict", total=None)
    assert "- fps" in _shown(bar)  # no speed before the first frames
    bar.advance(task, 2)
    line = _shown(bar)
    assert "2 frames" in line and "/" not in line.split("frames")[0]


def _drawn(**options) -> str:
    """What a bar counting 4 of 4 writes on a terminal."""
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system=None)
    with progress_bar(console=console, **options) as bar:
        bar.advance(bar.add_task("bench", total=4), 4)
    return out.getvalue()


def test_disabled_bars_draw_nothing_and_transient_ones_are_erased() -> None:
    assert _drawn(disable=True) == ""
    lasting, transient = _drawn(), _drawn(transient=True)
    assert "bench" in lasting and "4/4" in lasting and "4/4" in transient
    erase = "\x1b[1A\x1b[2K"  # cursor up one line, clear it
    assert transient.endswith(erase) and not lasting.endswith(erase)


def test_training_by_steps_shows_count_stats_and_eta() -> None:
    progress = TrainProgress(True, max_iters=100, iteration=5)
    progress.stats(loss=0.5, lr=1e-3, ips=7.25)
    progress.position(6, spent_s=3.0)
    line = _shown(progress.bar)
    assert line.split()[0] == "train" and "6/100" in line
    assert "loss 0.5000  lr 1.00e-03  7.2 img/s" in line and "ETA" in line and "budget" not in line
    assert TrainProgress(False, max_iters=100, iteration=0).bar.disable  # the other ranks


def test_training_by_the_clock_shows_minutes_of_the_budget_and_its_eta() -> None:
    progress = TrainProgress(True, max_iters=None, iteration=3, budget_s=600.0, spent_s=100.0)
    progress.position(4, spent_s=120.0)
    line = _shown(progress.bar)
    assert "it 4  2.0/10 min" in line and "budget ETA 8:00" in line
    assert "/600" not in line  # no M/N of seconds
    assert progress.bar.tasks[0].completed == 120.0


def test_run_parallel_keeps_the_order_with_or_without_a_bar() -> None:
    assert run_parallel(abs, [-3, 1, -2], workers=1) == [3, 1, 2]
    assert run_parallel(abs, [-3, 1, -2], workers=1, description="abs") == [3, 1, 2]


def test_dataset_root_names_the_problem_and_the_layout(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    assert dataset_root("~/data", "CamVid", "hint") == tmp_path / "data"
    with pytest.raises(DataError) as err:
        dataset_root(tmp_path / "none", "CamVid", "expected train/ and trainannot/")
    assert (
        str(err.value) == f"CamVid root {tmp_path / 'none'} does not exist; expected train/ and trainannot/"
    )
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="^folder dataset root .* is a file, not a directory; h$"):
        dataset_root(tmp_path / "file", "folder dataset", "h")


def test_misfit_lists_missing_unexpected_and_shapes_in_one_line() -> None:
    own = {"conv.weight": torch.zeros(4, 3, 1, 1), "bn.weight": torch.zeros(4), "head.bias": torch.zeros(2)}
    theirs = {
        "conv.weight": torch.zeros(8, 3, 1, 1),
        "bn.weight": torch.zeros(4),
        "extra.weight": torch.zeros(1),
    }
    misfit = Misfit.of(own, theirs)
    assert misfit.missing == ["head.bias"] and misfit.unexpected == ["extra.weight"]
    assert misfit.mismatched == ["conv.weight (8, 3, 1, 1) vs (4, 3, 1, 1)"]
    assert misfit.text("source") == (
        "missing 1 key in head; unexpected 1 key in extra; "
        "shape mismatches (source vs model): conv.weight (8, 3, 1, 1) vs (4, 3, 1, 1)"
    )
    assert not Misfit.of(own, dict(own)) and Misfit.of(own, dict(own)).text() == ""


def test_model_init_reports_what_no_rule_explains_with_the_same_words() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["0.weight"] = torch.zeros(6, 3, 1, 1)
    del state["1.bias"]
    state["2.weight"] = torch.zeros(1)
    source = InitSource("run.pt", Path("run.pt"), "effseg", "tiny", state, model_config={"name": "tiny"})
    with pytest.raises(InitError) as err:
        plan_init(model, source)
    assert str(err.value) == (
        "model.init=run.pt: architecture mismatch: the source is tiny(), the model is None(): "
        "missing 1 key in 1; unexpected 1 key in 2; "
        "shape mismatches (source vs model): 0.weight (6, 3, 1, 1) vs (4, 3, 1, 1)"
    )
    report = plan_init(model, InitSource("run.pt", Path("run.pt"), "effseg", "tiny", model.state_dict()))
    assert report.loaded == list(model.state_dict())
