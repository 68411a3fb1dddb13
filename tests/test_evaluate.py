"""The evaluator: known predictions, label-resolution scoring, TTA, sliding window, outputs, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effseg.cli import main as cli_main
from effseg.config import config_from_dict
from effseg.data import build_dataset, label_ids_to_train_ids
from effseg.engine.checkpoint import save_checkpoint
from effseg.engine.evaluate import (
    evaluate,
    label_id_filename,
    parse_tta,
    print_eval_table,
    slide_logits,
    write_eval_outputs,
)
from effseg.engine.metrics import MIOU_RULE
from effseg.errors import ConfigError

H, W = 32, 48
ROAD, SKY, CAR = 0, 10, 13  # train ids
VALID_LABEL_IDS = {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 val images in the Cityscapes layout: sky on top, road below, a car, an unlabeled strip."""
    root = tmp_path_factory.mktemp("cs")
    rng = np.random.default_rng(0)
    for i in range(3):
        lab = np.full((H, W), 7, np.uint8)  # road
        lab[: H // 3 + i] = 23  # sky
        lab[H // 2 : H // 2 + 6, 5 + 4 * i : 20 + 4 * i] = 26  # car
        lab[-2:] = 0  # unlabeled -> ignore
        img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        city_name = "lindau"
        for sub, name, arr in (
            ("leftImg8bit", f"{city_name}_{i:06d}_000019_leftImg8bit.png", img),
            ("gtFine", f"{city_name}_{i:06d}_000019_gtFine_labelIds.png", lab),
        ):
            folder = root / sub / "val" / city_name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(folder / name)
    return root


def halves(x: torch.Tensor) -> torch.Tensor:
    """A model-like callable: road on the left half of any input, sky on the right."""
    b, _, h, w = x.shape
    logits = torch.zeros(b, 19, h, w)
    logits[:, ROAD, :, : w // 2] = 5.0
    logits[:, SKY, :, w // 2 :] = 5.0
    return logits


def expected_matrix(root: Path, pred: np.ndarray) -> np.ndarray:
    mat = np.zeros((19, 19), np.int64)
    for path in sorted((root / "gtFine" / "val").glob("*/*_labelIds.png")):
        gt = label_ids_to_train_ids(np.array(Image.open(path)))
        valid = gt != 255
        np.add.at(mat, (gt[valid].astype(np.int64), pred[valid]), 1)
    return mat


def test_known_predictions_scored_at_label_resolution(city: Path) -> None:
    ds = build_dataset("cityscapes", city, "val")
    pred = np.zeros((H, W), np.int64)
    pred[:, W // 2 :] = SKY
    mat = expected_matrix(city, pred)
    # Inference at half resolution; logits are upsampled to the 32x48 labels before the argmax.
    result = evaluate(halves, ds, resize=(H // 2, W // 2), progress=False)
    assert np.array_equal(np.array(result["confusion_matrix"]), mat)
    tp = np.diag(mat)
    with np.errstate(invalid="ignore"):  # 0/0 for the 16 classes that never occur
        iou = tp / (mat.sum(0) + mat.sum(1) - tp)
    # road, sky, car occur; nothing else is predicted or present -> averaged over 3 classes
    assert result["classes_averaged"] == 3
    assert result["miou"] == pytest.approx(iou[[ROAD, SKY, CAR]].mean())
    assert result["per_class"]["car"]["iou"] == 0.0 and result["per_class"]["truck"]["iou"] is None
    assert result["pixel_acc"] == pytest.approx(tp.sum() / mat.sum())
    assert result["num_images"] == 3 and result["miou_rule"] == MIOU_RULE


def test_flip_tta_unflips_the_prediction(city: Path) -> None:
    ds = build_dataset("cityscapes", city, "val")
    # Flipped pass: road on the right once flipped back -> road and sky tie everywhere -> road (id 0).
    result = evaluate(halves, ds, tta="flip", progress=False)
    mat = expected_matrix(city, np.zeros((H, W), np.int64))
    assert np.array_equal(np.array(result["confusion_matrix"]), mat)
    assert result["flip"] is True and result["scales"] == [1.0]


def test_slide_and_flip_equal_whole_for_a_per_pixel_model(city: Path) -> None:
    ds = build_dataset("cityscapes", city, "val")
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 19, 1)  # a per-pixel classifier: flip- and window-invariant
    whole = evaluate(conv, ds, progress=False)
    slide = evaluate(conv, ds, mode="slide", crop_size=(16, 20), stride=(10, 14), progress=False)
    flip = evaluate(conv, ds, tta=[1.0, "flip"], progress=False)
    assert whole["confusion_matrix"] == slide["confusion_matrix"] == flip["confusion_matrix"]
    multi = evaluate(conv, ds, tta="flip,0.5,1.0,1.5", progress=False)
    assert multi["scales"] == [0.5, 1.0, 1.5] and abs(multi["pixel_acc"] - whole["pixel_acc"]) < 0.1


def test_slide_windows_cover_the_image() -> None:
    calls = []

    def ones(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape[-2:]))
        return torch.ones(x.shape[0], 2, *x.shape[-2:])

    out = slide_logits(ones, torch.zeros(1, 3, 10, 14), crop_size=(4, 6), stride=(3, 4), num_classes=2)
    assert torch.equal(out, torch.ones(1, 2, 10, 14))  # every pixel covered, overlaps averaged
    assert set(calls) == {(4, 6)} and len(calls) == 3 * 3
    calls.clear()
    slide_logits(ones, torch.zeros(1, 3, 10, 14), crop_size=(20, 20), stride=(10, 10), num_classes=2)
    assert calls == [(10, 14)]  # a window larger than the image is clipped to it


def test_parse_tta() -> None:
    assert parse_tta(None) == ([1.0], False)
    assert parse_tta("flip") == ([1.0], True)
    assert parse_tta("flip,0.75,1.0,1.25") == ([0.75, 1.0, 1.25], True)
    with pytest.raises(ConfigError, match="'mirror'"):
        parse_tta("mirror")
    with pytest.raises(ConfigError, match="positive"):
        parse_tta("0,1")


def test_class_count_mismatch_is_clear(city: Path) -> None:
    from effseg.models import build_model

    ds = build_dataset("cityscapes", city, "val")
    model = build_model("fcn", backbone="mobilenetv2", num_classes=11, aux=False)
    with pytest.raises(ConfigError, match="the model predicts 11 classes but the dataset has 19"):
        evaluate(model, ds, progress=False)


def test_outputs_json_markdown_png_and_table(city: Path, tmp_path: Path) -> None:
    from rich.console import Console

    from effseg.models import build_model

    ds = build_dataset("cityscapes", city, "val")
    model = build_model("pspnet", backbone="mobilenetv2", num_classes=19)
    model.train()
    result = evaluate(model, ds, progress=False)
    assert model.training  # the caller's mode is restored
    paths = write_eval_outputs(result, tmp_path / "eval")
    data = json.loads(paths["json"].read_text())  # strict JSON: undefined IoUs are null, not NaN
    assert data["miou"] == pytest.approx(result["miou"]) and data["per_class"]["truck"]["acc"] is None
    assert len(data["confusion_matrix"]) == 19
    md = paths["markdown"].read_text()
    assert "| road |" in md and MIOU_RULE in md
    with Image.open(paths["confusion"]) as png:
        assert png.format == "PNG" and png.size[0] > 100
    console = Console(record=True, width=120)
    print_eval_table(result, console)
    text = console.export_text()
    assert "mIoU" in text and "TP+FP+FN > 0" in text


def test_label_id_filename() -> None:
    assert (
        label_id_filename("x/frankfurt_000000_000294_leftImg8bit.png")
        == "frankfurt_000000_000294_pred_labelIds.png"
    )
    assert label_id_filename("img7.png") == "img7_pred_labelIds.png"


def _checkpoint(city: Path, path: Path) -> None:
    from effseg.models import build_model

    torch.manual_seed(0)
    model = build_model("pspnet", backbone="mobilenetv2", num_classes=19)
    cfg = config_from_dict(
        {"data": {"dataset": "cityscapes", "root": str(city), "val_split": "val"}, "eval": {"num_workers": 0}}
    )
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "model_config": model.config,
            "classes": build_dataset("cityscapes", city, "val").classes,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "config": cfg.to_dict(),
        },
    )


def test_cli_eval_writes_outputs_and_label_ids(city: Path, tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "run" / "best.pt"
    _checkpoint(city, ckpt)
    ids = tmp_path / "ids"
    code = cli_main(
        ["eval", str(tmp_path / "run"), "--device", "cpu", "--save-label-ids", str(ids), "--tta", "flip"]
    )
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "mIoU" in out and str(tmp_path / "run" / "eval" / "eval.json") in out
    data = json.loads((tmp_path / "run" / "eval" / "eval.json").read_text())
    assert data["flip"] is True and data["split"] == "val"
    files = sorted(p.name for p in ids.iterdir())
    assert files == [f"lindau_{i:06d}_000019_pred_labelIds.png" for i in range(3)]
    for name in files:
        with Image.open(ids / name) as im:
            assert im.mode == "L" and im.size == (W, H)
            values = set(np.unique(np.array(im)).tolist())
        assert values <= VALID_LABEL_IDS and max(values) <= 33


def test_cli_eval_dispatches_onnx_files(city: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("onnxruntime")
    from effseg.deploy import runtime  # the one ONNX loader, reached through effseg.deploy.artifact

    seen = {}

    def fake_load(path, *args, **kwargs):
        seen["path"] = Path(path)
        return halves, {"classes": None, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}

    monkeypatch.setattr(runtime, "load_onnx_model", fake_load)
    (tmp_path / "m.onnx").write_bytes(b"")  # the loader needs an existing file; fake_load reads nothing
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data:\n  dataset: cityscapes\n  root: {city}\neval:\n  num_workers: 0\n")
    code = cli_main(["eval", str(tmp_path / "m.onnx"), "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err
    assert seen["path"] == tmp_path / "m.onnx"
    pred = np.zeros((H, W), np.int64)
    pred[:, W // 2 :] = SKY
    data = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert np.array_equal(np.array(data["confusion_matrix"]), expected_matrix(city, pred))
    # Without --config and without a stored config: a clear error.
    code = cli_main(["eval", str(tmp_path / "m.onnx")])
    assert code == 2 and "pass --config" in capsys.readouterr().err
