"""`effseg predict`: folders, globs, corrupt files, overlays, class ids and Cityscapes label ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effseg
from effseg.cli import main
from effseg.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, train_ids_to_label_ids


def _checkpoint(path: Path, classes: list[str], palette: np.ndarray) -> Path:
    model = effseg.build_model("pspnet", backbone="mobilenetv2", num_classes=len(classes), aux=False)
    torch.save(
        {
            "model": model.state_dict(),
            "model_config": model.config,
            "classes": classes,
            "palette": np.asarray(palette).tolist(),
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "config": {},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def ckpt3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("model3")
    return _checkpoint(
        d / "best.pt", ["road", "car", "sky"], np.array([[128, 64, 128], [0, 0, 142], [70, 130, 180]])
    )


def _images(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    imgs = {
        "a.png": rng.integers(0, 256, (24, 40, 3), dtype=np.uint8),
        "sub/b.jpg": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        "c.png": rng.integers(0, 256, (24, 40, 3), dtype=np.uint8),
    }
    for name, arr in imgs.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(folder / name, quality=95)
    return imgs


def test_folder_with_corrupt_file(ckpt3: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "photos", tmp_path / "out"
    src.mkdir()
    imgs = _images(src)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)  # PNG signature, bad body
    code = main(
        [
            "predict",
            str(ckpt3),
            str(src),
            "--out",
            str(out),
            "--overlay",
            "--class-ids",
            "--batch-size",
            "2",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.png" in err and "1 failed" in err and "3 of 4" in err
    predictor = effseg.load(ckpt3)
    for name, arr in imgs.items():
        stem = Path(name).with_suffix(".png")
        color = np.asarray(Image.open(out / "color" / stem))
        ids = np.asarray(Image.open(out / "ids" / stem))
        over = np.asarray(Image.open(out / "overlay" / stem))
        image = np.asarray(Image.open(src / name).convert("RGB"))
        assert color.shape == arr.shape and ids.shape == arr.shape[:2]
        expected = predictor.predict(image)
        np.testing.assert_array_equal(ids, expected)
        np.testing.assert_array_equal(color, predictor.palette[expected])
        np.testing.assert_array_equal(over, predictor.overlay(image, expected, 0.5))
    assert not (out / "color" / "broken.png").exists()


def test_all_good_exits_zero_and_glob_and_input_size(
    ckpt3: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src, out = tmp_path / "photos", tmp_path / "out"
    src.mkdir()
    imgs = _images(src)
    code = main(
        [
            "predict",
            str(ckpt3),
            str(src / "*.png"),
            "--out",
            str(out),
            "--input-size",
            "32x16",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["color/a.png", "color/c.png"]  # the glob matched the two top-level PNGs only
    assert np.asarray(Image.open(out / "color" / "a.png")).shape == imgs["a.png"].shape


def test_label_ids_for_cityscapes_models(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = _checkpoint(tmp_path / "cs.pt", list(CITYSCAPES_CLASSES), CITYSCAPES_PALETTE)
    img = np.random.default_rng(1).integers(0, 256, (24, 48, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x_leftImg8bit.png")
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(ckpt),
            str(tmp_path / "x_leftImg8bit.png"),
            "--out",
            str(out),
            "--label-ids",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    label_ids = np.asarray(Image.open(out / "label_ids" / "x_leftImg8bit.png"))
    train_ids = effseg.load(ckpt).predict(img)
    np.testing.assert_array_equal(label_ids, train_ids_to_label_ids(train_ids))
    assert set(np.unique(label_ids)) <= {
        7,
        8,
        11,
        12,
        13,
        17,
        19,
        20,
        21,
        22,
        23,
        24,
        25,
        26,
        27,
        28,
        31,
        32,
        33,
    }


def test_clear_errors(ckpt3: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    # --label-ids on a model that is not a Cityscapes model
    assert (
        main(["predict", str(ckpt3), str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), "--label-ids"])
        == 2
    )
    assert "19 Cityscapes classes" in capsys.readouterr().err
    # missing input
    assert main(["predict", str(ckpt3), str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.png: no such file" in capsys.readouterr().err
    # missing model
    assert (
        main(["predict", str(tmp_path / "none.pt"), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "none.pt" in capsys.readouterr().err
    # empty folder
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(ckpt3), str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "has no images" in capsys.readouterr().err
