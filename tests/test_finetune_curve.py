"""benchmarks/camvid/finetune_curve.py: its arguments, the commands it plans and its table (the
long trainings are the lead's; one real tiny run was checked by hand)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from effseg.engine.checkpoint import save_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "camvid" / "finetune_curve.py"


@pytest.fixture(scope="module")
def curve():
    spec = importlib.util.spec_from_file_location("finetune_curve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["finetune_curve"] = module
    spec.loader.exec_module(module)
    return module


def _camvid(root: Path, drives: dict[str, int]) -> Path:
    import numpy as np
    from PIL import Image

    for sub in ("train", "trainannot", "val", "valannot"):
        (root / sub).mkdir(parents=True)
    for drive, n in drives.items():
        for i in range(n):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / f"{drive}_{i:05d}.png")
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "trainannot" / f"{drive}_{i:05d}.png")
    return root


def test_arguments_are_checked(curve, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        curve.parse_args(["--out", str(tmp_path), "--frames", "5,x"])
    assert "--frames '5,x': expected comma-separated integers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        curve.parse_args(["--out", str(tmp_path), "--base", "b.pt"])
    assert "--data is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        curve.parse_args(["--out", str(tmp_path), "--base", "b.pt", "--data", str(tmp_path)])
    assert "no train/ folder" in capsys.readouterr().err
    assert curve.parse_args(["--out", str(tmp_path), "--table", "--frames", "30,5,10"]).frames == [5, 10, 30]


def test_dry_run_plans_the_rows_on_the_held_out_drive(curve, tmp_path: Path, capsys) -> None:
    data = _camvid(tmp_path / "camvid", {"0001TP": 12, "0006R0": 3, "0016E5": 3})
    config = {
        "data": {"dataset": "camvid", "train_drives": ["0006R0", "0016E5"]},
        "model": {"name": "regseg"},
    }
    config["train"] = {"batch_size": 8}
    save_checkpoint(tmp_path / "base" / "last.pt", {"model": {"w": torch.zeros(1)}, "config": config})
    out = tmp_path / "out"
    argv = ["--data", str(data), "--base", str(tmp_path / "base"), "--minutes", "2", "--frames", "2,5"]
    assert curve.main([*argv, "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 2 * 2 * 2  # the base's eval, then train + eval per (N, kind)
    assert lines[0].startswith(f"effseg eval {tmp_path / 'base' / 'last.pt'}")
    finetune = next(line for line in lines if "--run-dir" in line and "finetune_2" in line)
    scratch = next(line for line in lines if "--run-dir" in line and "scratch_2" in line)
    for line in (finetune, scratch):
        assert "'data.train_drives=[0001TP]'" in line and "data.train_frames=2" in line
        assert (
            "data.val_frames=after:5" in line
            and "train.time_budget=2" in line
            and "train.batch_size=2" in line
        )
    assert f"--init {tmp_path / 'base' / 'last.pt'}" in finetune and "train.loaded_lr_mult=0.1" in finetune
    assert "--init" not in scratch and "loaded_lr_mult" not in scratch
    meta = json.loads((out / "finetune_curve_meta.json").read_text())
    assert meta["drive"] == "0001TP" and meta["scored_frames"] == 7
    with pytest.raises(SystemExit, match="has 12 frames; the largest N must leave some"):
        curve.main([*argv[:-2], "--frames", "12", "--out", str(out), "--dry-run"])


def test_table_and_plot_of_finished_rows(curve, tmp_path: Path) -> None:
    for row, miou, its in (
        ("no_finetune", 0.40, 4000),
        ("finetune_10", 0.55, 120),
        ("scratch_10", 0.20, 118),
    ):
        (tmp_path / row / "eval").mkdir(parents=True)
        ev = {"miou": miou, "training": {"iterations": its}}
        (tmp_path / row / "eval" / "eval.json").write_text(json.dumps(ev))
    (tmp_path / "finetune_curve_meta.json").write_text(
        json.dumps({"drive": "0001TP", "minutes": 5, "scored_after": 10})
    )
    assert curve.main(["--out", str(tmp_path), "--table"]) == 0
    table = (tmp_path / "finetune_curve.md").read_text()
    assert "| 10 | 40.00 (4000 it) | 20.00 (118 it) | 55.00 (120 it) |" in table
    assert (tmp_path / "finetune_curve.png").stat().st_size > 1000
