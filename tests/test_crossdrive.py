"""Leave-one-drive-out (`effseg crossdrive`) on a folder dataset of three drives, written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import effseg.app.crossdrive as cd
from effseg.cli import main
from effseg.config import load_config
from effseg.errors import ConfigError, DataError

DRIVES = {"aaa": 2, "bbb": 3, "ccc": 4}  # drive -> frames
H, W = 32, 48


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``images/`` + ``masks/`` named ``<drive>_<frame>``; each drive has its own colour scheme."""
    root = tmp_path_factory.mktemp("drives")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    (root / "classes.yaml").write_text("names: [ground, sky, thing]\n")
    rng = np.random.default_rng(0)
    for d, (name, n) in enumerate(DRIVES.items()):
        for i in range(n):
            mask = np.zeros((H, W), np.uint8)
            mask[: H // 3] = 1
            mask[H // 2 : H // 2 + 6, 8 + 2 * i : 20 + 2 * i] = 2
            image = (np.array([[60, 60, 60], [120, 160, 240], [200, 40, 40]])[mask] + 20 * d).astype(np.uint8)
            image = np.clip(image + rng.integers(-10, 10, image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / f"{name}_{i:05d}.png")
            Image.fromarray(mask).save(root / "masks" / f"{name}_{i:05d}.png")
    return root


def _config(tmp_path: Path, data: Path) -> Path:
    cfg = {
        "model": {"head": "fcn", "backbone": "mobilenetv2", "num_classes": 3, "aux": False},
        "data": {
            "dataset": "folder",
            "root": str(data),
            "crop_size": "48x32",
            "scale_range": [1.0, 1.0],
            "num_workers": 0,
            "options": {"cache": True},
        },
        "train": {
            "iterations": 2,
            "batch_size": 2,
            "log_interval": 1,
            "tensorboard": False,
            "device": "cpu",
            "warmup_iters": 1,
        },
        "eval": {"num_workers": 0},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_plan_holds_each_drive_out_and_never_validates_on_a_training_drive(
    data: Path, tmp_path: Path
) -> None:
    cfg = load_config(_config(tmp_path, data))
    plan, counts, split = cd.plan_folds(cfg, tmp_path / "out", iterations=6)
    assert split == "all" and counts == DRIVES
    assert [f.held_out for f in plan] == ["aaa", "bbb", "ccc"]
    for f in plan:
        assert f.cfg.data.val_drives == [f.held_out]
        assert f.held_out not in f.cfg.data.train_drives and len(f.cfg.data.train_drives) == 2
        assert f.frames == DRIVES[f.held_out] and f.train_frames == sum(DRIVES.values()) - f.frames
        assert f.cfg.train.iterations == 6 and f.cfg.train.warmup_iters == 3  # 1 of 2 steps -> 3 of 6
    plan, counts, _ = cd.plan_folds(cfg, tmp_path / "out", drives="aaa,ccc", folds="ccc", minutes=0.5)
    assert counts == {"aaa": 2, "ccc": 4} and len(plan) == 1
    f = plan[0]
    assert f.cfg.data.train_drives == ["aaa"] and f.cfg.train.time_budget == 0.5
    assert f.cfg.train.iterations is None and f.cfg.train.warmup_fraction == 0.5
    # the datasets the trainer builds from a fold's config hold exactly its drives
    from effseg.data.base import drive_counts
    from effseg.data.from_config import build_datasets

    train_set, val_set = build_datasets(f.cfg)
    assert drive_counts(train_set) == {"aaa": 2} and drive_counts(val_set) == {"ccc": 4}


def test_bad_selections_are_one_line_errors(data: Path, tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, data))
    with pytest.raises(DataError, match=r"no drive 'zzz'.*aaa \(2\), bbb \(3\), ccc \(4\)"):
        cd.plan_folds(cfg, tmp_path, drives="aaa,zzz")
    with pytest.raises(DataError, match="at least 2 drives"):
        cd.plan_folds(cfg, tmp_path, drives="aaa")
    with pytest.raises(ConfigError, match="--folds: 'ccc' is not one of the drives aaa, bbb"):
        cd.plan_folds(cfg, tmp_path, drives="aaa,bbb", folds="ccc")
    with pytest.raises(ConfigError, match="exclude each other"):
        cd.plan_folds(cfg, tmp_path, iterations=3, minutes=1.0)


@pytest.mark.slow
def test_crossdrive_runs_resumes_and_writes_the_table(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe, out = _config(tmp_path, data), tmp_path / "cv"
    base = ["crossdrive", str(recipe), "--out", str(out), "--iterations", "2"]
    assert main([*base, "--folds", "aaa"]) == 0
    summary = json.loads((out / "crossdrive.json").read_text())
    assert summary["folds_done"] == 1 and summary["missing"] == ["bbb", "ccc"]
    # the held-out drive only: 2 frames of aaa scored; the fold trained on bbb + ccc
    fold_eval = json.loads((out / "fold_aaa" / "eval" / "eval.json").read_text())
    assert fold_eval["num_images"] == 2 and fold_eval["train_drives"] == ["bbb", "ccc"]
    assert fold_eval["checkpoint"].endswith("last.pt") and fold_eval["training"]["iterations"] == 2
    assert yaml.safe_load((out / "fold_aaa" / "config.yaml").read_text())["data"]["val_drives"] == ["aaa"]

    # a second call skips the finished fold (no training) and runs the two others
    trained: list[str] = []
    import effseg.engine.train as train_mod  # crossdrive imports the trainer when it runs

    original = train_mod.train

    def spy(cfg, run_dir, **kw):
        trained.append(Path(run_dir).name)
        return original(cfg, run_dir, **kw)

    monkeypatch.setattr(train_mod, "train", spy)
    capsys.readouterr()
    assert main(base) == 0
    assert trained == ["fold_bbb", "fold_ccc"]
    text = capsys.readouterr()
    assert "fold 1/3: hold out aaa (2 frames), train on bbb + ccc (7 frames) of all: done" in text.err
    summary = json.loads((out / "crossdrive.json").read_text())
    rows = {r["held_out"]: r for r in summary["folds"]}
    assert summary["folds_done"] == 3 and set(rows) == set(DRIVES)
    mious = [rows[d]["miou"] for d in DRIVES]
    assert summary["miou_crossdrive"] == pytest.approx(sum(mious) / 3)
    weighted = sum(rows[d]["miou"] * n for d, n in DRIVES.items()) / sum(DRIVES.values())
    assert summary["miou_frame_weighted"] == pytest.approx(weighted)
    assert rows["ccc"]["frames"] == 4 and rows["ccc"]["iterations"] == 2
    assert set(rows["ccc"]["per_class"]) == {"ground", "sky", "thing"}
    md = (out / "crossdrive.md").read_text()
    assert "| held-out drive | frames | iterations | minutes | mIoU | ground | sky | thing |" in md
    assert f"**mean over folds (cross-drive)** | 9 | | | **{summary['miou_crossdrive']:.2f}**" in md
    assert f"| frame-weighted mean | 9 | | | {summary['miou_frame_weighted']:.2f} |" in md
    assert md in text.out
    assert f"Command: `effseg crossdrive {recipe} --iterations 2 --out {out}`" in md

    # TTA: the trained folds are only evaluated again, into their own folder
    trained.clear()
    assert main([*base, "--tta", "flip"]) == 0
    assert trained == []
    flip = json.loads((out / "fold_bbb" / "eval_tta_flip" / "eval.json").read_text())
    assert flip["tta"] == "flip" and flip["tta_passes"] == 2 and flip["ms_per_image"] > 0
    assert json.loads((out / "crossdrive.json").read_text())["tta"] == "flip"

    # another recipe in the same folder is refused, not mixed in
    (out / "fold_aaa" / "eval" / "eval.json").unlink()
    assert main([*base[:-1], "3"]) == 2
    err = capsys.readouterr().err
    assert "fold_aaa holds a fold trained with another recipe (differs in train.iterations" in err


def test_a_killed_fold_resumes_from_its_last_checkpoint(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import effseg.engine.train as train_mod

    cfg = load_config(_config(tmp_path, data), ["train.checkpoint_interval=2", "train.val_interval=2"])
    out = tmp_path / "cv"
    real_step = train_mod._Trainer.train_step
    killed: list[int] = []

    def step(self, images, labels):
        if self.iteration == 3 and not killed:  # killed after the checkpoint of iteration 2
            killed.append(self.iteration)
            raise KeyboardInterrupt
        return real_step(self, images, labels)

    monkeypatch.setattr(train_mod._Trainer, "train_step", step)
    with pytest.raises(KeyboardInterrupt):
        cd.run_crossdrive(cfg, out, folds="aaa", iterations=4, log=lambda m: None)
    run = out / "fold_aaa"
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 2
    assert not (run / "eval").exists()
    notes: list[str] = []
    capsys.readouterr()
    cd.run_crossdrive(cfg, out, folds="aaa", iterations=4, log=notes.append)
    assert notes[0].endswith(f"training in {run}")
    assert f"resuming {run} at iteration 2/4" in capsys.readouterr().out
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 4
    assert json.loads((run / "eval" / "eval.json").read_text())["training"]["iterations"] == 4
