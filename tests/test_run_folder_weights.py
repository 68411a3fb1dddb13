"""Which weights a run folder means: last.pt (else best.pt) for every loader, and a figure of the
val-picked best.pt on its val split labelled as such by `effseg eval` / `effseg export`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effseg
from effseg.cli import main as cli_main
from effseg.config import config_from_dict
from effseg.data.from_config import stored_val_split
from effseg.deploy.artifact import (
    figure_note,
    load_artifact,
    picked_on_val,
    run_folder_weights,
    trained_on_note,
    val_pick_note,
)
from effseg.engine.checkpoint import save_checkpoint
from effseg.errors import CheckpointError
from effseg.models import build_model

H, W = 32, 48
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-image ``images/ + masks/`` folder dataset (3 classes) for the CLI's evaluation."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, NUM_CLASSES, (H, W), dtype=np.uint8)).save(
            root / "masks" / f"{i}.png"
        )
    (root / "classes.yaml").write_text("names: [road, car, sky]\n")
    return root


def _save(path: Path, seed: int, data_root: Path) -> torch.nn.Module:
    """A checkpoint of a tiny model whose weights depend on ``seed``; its config names the folder
    dataset, with ``all`` as the val split."""
    torch.manual_seed(seed)
    model = build_model("fcn", backbone="mobilenetv3_small", num_classes=NUM_CLASSES, aux=False)
    cfg = config_from_dict(
        {
            "model": {"name": "fcn", "backbone": "mobilenetv3_small", "num_classes": NUM_CLASSES},
            "data": {"dataset": "folder", "root": str(data_root), "train_split": "all", "val_split": "all"},
            "eval": {"num_workers": 0},
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "model_config": model.config,
            "classes": ["road", "car", "sky"],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "config": cfg.to_dict(),
        },
    )
    return model.eval()


def test_a_run_folder_means_last_pt_in_every_loader(tmp_path: Path, data_root: Path) -> None:
    run = tmp_path / "run"
    best = _save(run / "best.pt", 1, data_root)
    last = _save(run / "last.pt", 2, data_root)
    x = torch.randn(1, 3, H, W)
    assert not torch.equal(best(x), last(x))  # two different sets of weights

    art = load_artifact(run)
    assert art.path == run / "last.pt" and art.name == "run"
    assert art.meta["path"] == str(run / "last.pt") and art.meta["picked_on_val"] is False
    assert torch.equal(art.model(x), last(x))
    assert run_folder_weights(run) == run / "last.pt"

    image = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    from_folder = effseg.load(run).predict(image)
    assert np.array_equal(from_folder, effseg.load(run / "last.pt").predict(image))

    named = load_artifact(run / "best.pt")  # the val-picked weights when named
    assert named.meta["picked_on_val"] is True and torch.equal(named.model(x), best(x))


def test_a_folder_with_only_best_pt_falls_back_to_it(tmp_path: Path, data_root: Path) -> None:
    run = tmp_path / "run"
    best = _save(run / "best.pt", 1, data_root)
    art = load_artifact(run)
    assert art.path == run / "best.pt" and art.meta["picked_on_val"] is True
    x = torch.randn(1, 3, H, W)
    assert torch.equal(art.model(x), best(x))


def test_an_empty_run_folder_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: run folder has neither last\.pt nor best\.pt$"):
        run_folder_weights(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="neither last.pt nor best.pt"):
        effseg.load(tmp_path / "empty")


def test_the_val_pick_note_names_the_split_it_was_picked_on() -> None:
    config = {"data": {"val_split": "val"}}
    note = val_pick_note(Path("runs/x/best.pt"), config, "val")
    assert note == (
        "best.pt was picked on its 'val' mIoU during training, so this figure on 'val' is optimistic; "
        "last.pt holds the final weights"
    )
    assert val_pick_note(Path("runs/x/best.pt"), config, "test") == ""  # not the split it was picked on
    assert val_pick_note(Path("runs/x/last.pt"), config, "val") == ""
    assert val_pick_note(Path("runs/x/best.pt"), None, "val").startswith("best.pt was picked on its 'val'")
    assert (
        picked_on_val("best.pt") and not picked_on_val("camvid-ddrnet23_slim.pt") and not picked_on_val(None)
    )
    fold = {"data": {"val_split": "val_fold"}}
    for stored, split in ((fold, "val_fold"), ({"data": {}}, "val"), (None, "val")):
        assert stored_val_split(stored) == split
    assert val_pick_note(Path("b/best.pt"), fold, "val") == ""
    assert "on 'val_fold'" in val_pick_note(Path("b/best.pt"), fold, "val_fold")


def test_a_figure_on_frames_the_model_trained_on_is_labelled() -> None:
    trainval = {"data": {"train_split": "trainval", "val_split": "val"}}
    note = trained_on_note(trainval, "val")
    assert note == (
        "the model was trained on 'val''s frames (data.train_split='trainval'), so this figure measures "
        "how well it remembers them, not new images"
    )
    assert trained_on_note(trainval, "train").startswith("the model was trained on 'train''s frames")
    assert trained_on_note(trainval, "test") == ""  # a split training never read
    assert trained_on_note({"data": {"train_split": "train"}}, "val") == ""
    assert trained_on_note({"data": {"train_split": "train"}}, "trainval") != ""  # holds train
    # the cross-drive folds read trainval for both, with disjoint drives: not labelled
    fold = {"data": {"train_split": "trainval", "val_split": "trainval", "train_drives": ["0001TP", "0006R0"],
                     "val_drives": ["0016E5"]}}  # fmt: skip
    assert trained_on_note(fold, "trainval") == ""
    fold["data"]["val_drives"] = ["0006R0"]  # a drive of both: the frames overlap
    assert trained_on_note(fold, "trainval") != ""
    fold["data"]["val_frames"] = "30:"  # a frame selection may keep them apart: no certain overlap
    assert trained_on_note(fold, "trainval") == ""
    assert trained_on_note(None, "val") == "" and trained_on_note(trainval, None) == ""
    both = figure_note(Path("runs/x/best.pt"), trainval, "val")
    assert both == f"{note}; {val_pick_note(Path('runs/x/best.pt'), trainval, 'val')}"
    assert figure_note(Path("runs/x/last.pt"), {"data": {"train_split": "train"}}, "val") == ""


def test_cli_eval_names_the_weights_and_labels_a_val_picked_figure(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    _save(run / "best.pt", 1, data_root)
    assert cli_main(["eval", str(run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    # the fixture trains and scores on 'all': both labels, the trained-on one first
    seen = "the model was trained on 'all''s frames (data.train_split='all')"
    assert f"weights: {run / 'best.pt'} -- {seen}" in out
    assert "; best.pt was picked on its 'all' mIoU during training" in out
    data = json.loads((run / "eval" / "eval.json").read_text())
    assert data["weights"] == str(run / "best.pt") and data["picked_on_val"].startswith("best.pt was picked")
    assert data["seen_in_training"].startswith(seen)
    notes = [
        line for line in (run / "eval" / "eval.md").read_text().splitlines() if line.startswith("Note: ")
    ]
    assert notes == [f"Note: {data['seen_in_training']}.", f"Note: {data['picked_on_val']}."]

    _save(run / "last.pt", 2, data_root)
    assert cli_main(["eval", str(run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"weights: {run / 'last.pt'} -- {seen}" in out and "optimistic" not in out
    data = json.loads((run / "eval" / "eval.json").read_text())
    assert data["weights"] == str(run / "last.pt") and data["picked_on_val"] is None
    assert cli_main(["eval", str(run), "--device", "cpu", "--set", "data.train_split=train"]) == 0
    # what the model was trained on is the stored config's, whatever --set says for this evaluation
    assert f"weights: {run / 'last.pt'} -- {seen}" in capsys.readouterr().out
    assert data["checkpoint"] == str(run)  # what the user named
