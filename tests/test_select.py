"""`effseg select`: time the shipped models here (cached), choose by the cross-drive figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import effseg
import effseg.bench.select as sel
from effseg.bench.select import Row, budget_ms, choose, select_models
from effseg.cli import main
from effseg.errors import BenchError
from effseg.zoo import ZOO_ENV

CLASSES = [f"c{i}" for i in range(11)]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two tiny shipped models: ``camvid-a`` with a cross-drive figure, ``camvid-b`` without."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    model = effseg.build_model("fcn", backbone="mobilenetv2", num_classes=11, aux=False)
    ckpt = {
        "model": model.state_dict(),
        "model_config": model.config,
        "classes": CLASSES,
        "palette": [[i, i, i] for i in range(11)],
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "config": {},
    }
    torch.save(ckpt, folder / "a.pt")
    torch.save(ckpt, folder / "b.pt")
    (folder / "models.yaml").write_text(
        "models:\n"
        "  - {name: camvid-a, file: a.pt, dataset: camvid, classes: 11, input_size: 64x48,\n"
        "     role: fast, miou_val: 60.0, miou_crossdrive: 50.0}\n"
        "  - {name: camvid-b, file: b.pt, dataset: camvid, classes: 11, input_size: 64x48, miou_val: 70.0}\n"
    )
    monkeypatch.setenv(ZOO_ENV, str(folder))
    monkeypatch.setenv("EFFSEG_CACHE", str(tmp_path / "cache"))
    return folder


def _row(model: str, runtime: str, ms: float, cross: float | None, val: float | None) -> Row:
    return Row(model, runtime, ms, 1000 / ms, cross, val)


def test_choose_ranks_by_the_cross_drive_figure() -> None:
    rows = [
        _row("small", "eager", 12.0, 48.0, 60.0),
        _row("small", "onnxruntime", 6.0, 48.0, 60.0),
        _row("big", "eager", 40.0, 55.0, 66.0),
        _row("big", "onnxruntime", 18.0, 55.0, 66.0),
        _row("valonly", "onnxruntime", 5.0, None, 80.0),  # a higher val figure does not win
    ]
    best, fastest = choose(rows, 20.0)
    assert (best.model, best.runtime) == ("big", "onnxruntime") and fastest.model == "valonly"
    best, _ = choose(rows, 10.0)
    assert (best.model, best.runtime) == ("small", "onnxruntime")
    best, fastest = choose(rows, 1.0)
    assert best is None and (fastest.model, fastest.median_ms) == ("valonly", 5.0)
    # without any cross-drive figure, the same-drive val figure decides
    best, _ = choose([_row("x", "eager", 5.0, None, 50.0), _row("y", "eager", 6.0, None, 55.0)], 10.0)
    assert best.model == "y"
    # with neither figure (a model trained on val, its folds not run), the faster one
    best, _ = choose([_row("x", "eager", 5.0, None, None), _row("y", "eager", 6.0, None, None)], 10.0)
    assert best.model == "x"


def test_budget() -> None:
    assert budget_ms(20.0, None) == 20.0 and budget_ms(None, 30.0) == pytest.approx(33.333, abs=1e-3)
    with pytest.raises(BenchError, match="one budget"):
        budget_ms(None, None)
    with pytest.raises(BenchError, match="expected a positive number"):
        budget_ms(-1.0, None)


def test_times_each_model_once_then_reads_the_cache(zoo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    real = sel._time_runtimes

    def spy(name, runtimes, *args):
        calls.append([name])
        return real(name, runtimes, *args)

    monkeypatch.setattr(sel, "_time_runtimes", spy)
    first = select_models(max_ms=1e9, input_size="64x48", runtimes="eager", runs=1, warmup=0)
    assert calls == [["camvid-a"], ["camvid-b"]]
    assert [(r["model"], r["cached"]) for r in first["rows"]] == [("camvid-a", False), ("camvid-b", False)]
    assert all(r["median_ms"] > 0 and r["fps"] == pytest.approx(1000 / r["median_ms"]) for r in first["rows"])
    assert first["pick"]["model"] == "camvid-a" and first["ranked_by"] == "cross-drive mIoU"
    files = sorted((zoo.parent / "cache" / "select").glob("*.json"))
    assert [f.name.split(".")[0] for f in files] == ["camvid-a", "camvid-b"]
    record = json.loads(files[0].read_text())
    assert record["size"] == "64x48" and record["runtime"] == "eager" and record["machine"]["threads"] == 1
    second = select_models(max_ms=1e9, input_size="64x48", runtimes="eager")
    assert len(calls) == 2 and all(r["cached"] for r in second["rows"])
    assert [r["median_ms"] for r in second["rows"]] == [r["median_ms"] for r in first["rows"]]
    # another machine (here: another thread count) is timed again
    torch.set_num_threads(2)
    select_models(max_ms=1e9, input_size="64x48", runtimes="eager", runs=1, warmup=0)
    assert len(calls) == 4


def test_cli_names_the_pick_or_the_fastest(
    zoo: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    args = ["select", "--input-size", "64x48", "--runtimes", "eager", "--runs", "1", "--warmup", "0"]
    assert main([*args, "--max-ms", "1e9"]) == 0
    out = capsys.readouterr().out
    assert "pick: camvid-a with --runtime eager" in out and "cross-drive mIoU 50.00" in out
    row_b = next(line for line in out.splitlines() if line.strip().startswith("camvid-b"))
    assert row_b.split()[-2:] == ["-", "70.00"]  # no cross-drive figure: "-", beside its val figure
    assert main([*args, "--min-fps", "1e9"]) == 1
    out = capsys.readouterr().out
    assert "none fits 0.0 ms at 64x48; the fastest is camvid-" in out
    assert main(["select", "--max-ms", "10", "--runtimes", "warp"]) == 2
    assert "unknown runtime" in capsys.readouterr().err
    registry = zoo / "models.yaml"  # one model, trained on val, without a cross-drive figure
    registry.write_text(
        "models:\n  - {name: camvid-a, file: a.pt, dataset: camvid, classes: 11, input_size: 64x48,"
        " train_data: train+val}\n"
    )
    assert main([*args, "--max-ms", "1e9"]) == 0
    out = capsys.readouterr().out
    assert "pick: camvid-a with --runtime eager" in out
    assert "no model here has a cross-drive or val figure: picked by speed alone" in out


def test_installed_runtimes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sel, "_module_installed", lambda name: name != "openvino")
    assert sel.installed_runtimes() == ["eager", "onnxruntime"]
    monkeypatch.setattr(sel, "_module_installed", lambda name: False)
    assert sel.installed_runtimes() == ["eager"]
