"""`effseg predict`: folders, globs, bad files (corrupt, decompression bomb), legends, label ids,
the threaded pipeline, and the exact fast upsample+argmax."""

from __future__ import annotations

import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import effseg
from effseg.cli import main
from effseg.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, train_ids_to_label_ids
from effseg.data.visualize import add_legend, colorize, overlay
from effseg.models.contract import class_ids
from effseg.pipeline.postprocess import reference_argmax, upsample_argmax
from effseg.pipeline.threaded import run_pipeline
from effseg.pipeline.video import Frame


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


def _bomb_png(path: Path, side: int = 30000) -> Path:
    """A ~100-byte PNG whose header declares ``side x side`` RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_folder_with_corrupt_and_bomb_files(
    ckpt3: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Pipeline output equals sequential per-image prediction; bad files are named and skipped."""
    src, out = tmp_path / "photos", tmp_path / "out"
    src.mkdir()
    imgs = _images(src)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)  # PNG signature, bad body
    _bomb_png(src / "bomb.png")
    args = ["predict", str(ckpt3), str(src), "--out", str(out), "--overlay", "--class-ids"]
    code = main([*args, "--runtime", "eager", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    broken = [line for line in err.splitlines() if "broken.png" in line]
    bomb = [line for line in err.splitlines() if "bomb.png" in line]
    assert broken and bomb  # one line each (skipped, then again in the closing list)
    assert all("30000" in line and "pixels" in line for line in bomb), bomb
    assert "Traceback" not in err
    assert "3 frames, 2 failed" in err and "runtime eager" in err and "FPS model only" in err
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
        legend = add_legend(overlay(image, colorize(expected, predictor.palette), 0.5), predictor.classes,
                            predictor.palette, expected)  # fmt: skip
        np.testing.assert_array_equal(over, legend)
        assert over.shape[0] > image.shape[0]  # the legend is below the overlay
    assert not (out / "color" / "broken.png").exists() and not (out / "color" / "bomb.png").exists()


def test_all_good_exits_zero_and_glob_and_input_size(
    ckpt3: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src, out = tmp_path / "photos", tmp_path / "out"
    src.mkdir()
    imgs = _images(src)
    code = main(
        ["predict", str(ckpt3), str(src / "*.png"), "--out", str(out), "--input-size", "32x16"]
        + ["--runtime", "eager", "--no-progress"]
    )
    assert code == 0, capsys.readouterr().err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["color/a.png", "color/c.png"]  # the glob matched the two top-level PNGs only
    predictor = effseg.load(ckpt3)
    got = np.asarray(Image.open(out / "color" / "a.png"))
    expected = predictor.predict(imgs["a.png"], input_size="32x16")
    np.testing.assert_array_equal(got, predictor.palette[expected])


def test_label_ids_for_cityscapes_models(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = _checkpoint(tmp_path / "cs.pt", list(CITYSCAPES_CLASSES), CITYSCAPES_PALETTE)
    img = np.random.default_rng(1).integers(0, 256, (24, 48, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x_leftImg8bit.png")
    out = tmp_path / "out"
    code = main(
        ["predict", str(ckpt), str(tmp_path / "x_leftImg8bit.png"), "--out", str(out), "--label-ids"]
        + ["--runtime", "eager", "--no-progress"]
    )
    assert code == 0, capsys.readouterr().err
    label_ids = np.asarray(Image.open(out / "label_ids" / "x_leftImg8bit.png"))
    train_ids = effseg.load(ckpt).predict(img)
    np.testing.assert_array_equal(label_ids, train_ids_to_label_ids(train_ids))


def test_clear_errors(ckpt3: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    o = str(tmp_path / "o")
    eager = ["--runtime", "eager"]
    assert main(["predict", str(ckpt3), str(tmp_path / "x.png"), "--out", o, "--label-ids", *eager]) == 2
    assert "19 Cityscapes classes" in capsys.readouterr().err
    assert main(["predict", str(ckpt3), str(tmp_path / "nope.png"), "--out", o, *eager]) == 2
    assert "nope.png: no such file" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "none.pt"), str(tmp_path / "x.png"), "--out", o]) == 2
    assert "none.pt" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(ckpt3), str(tmp_path / "empty"), "--out", o, *eager]) == 2
    assert "has no images" in capsys.readouterr().err
    assert main(["predict", str(ckpt3), "--out", o]) == 2
    assert "no input" in capsys.readouterr().err


def test_pipeline_memory_is_bounded_and_order_kept() -> None:
    """The reader never runs more than the queues' depth ahead of the model; output order is kept."""
    lock = threading.Lock()
    state = {"read": 0, "done": 0, "ahead": 0}
    image = np.zeros((4, 4, 3), np.uint8)

    def frames():
        for i in range(300):
            with lock:
                state["read"] += 1
                state["ahead"] = max(state["ahead"], state["read"] - state["done"])
            yield Frame(i, f"f{i}", Path(f"f{i}"), image=image + (i % 7))

    def engine(img: np.ndarray) -> np.ndarray:
        with lock:
            state["done"] += 1
        return img[:, :, 0].copy()

    seen: list[int] = []
    summary = run_pipeline(frames(), engine, lambda f, lab: seen.append(int(lab[0, 0])) or [], depth=4,
                           progress=False)  # fmt: skip
    assert summary.frames == 300 and seen == [i % 7 for i in range(300)]
    assert state["ahead"] <= 4 + 2  # queue depth + the frame being put + the one being read


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_class_ids_equals_argmax_with_ties(dtype: torch.dtype) -> None:
    # Integer-valued logits in 0..2 over 5 classes: most pixels have tied maxima, and argmax's
    # first-index rule decides; a NaN wins its pixel in both.
    logits = torch.randint(0, 3, (2, 5, 7, 9), generator=torch.Generator().manual_seed(0)).to(dtype)
    logits[1, 3, 2, 4] = float("nan")
    ids = class_ids(logits)
    assert ids.shape == (2, 7, 9) and ids.dtype == torch.int64 and ids[1, 2, 4] == 3
    assert torch.equal(ids, logits.argmax(1))
    assert torch.equal(class_ids(logits[0], 0), logits[0].argmax(0))


@pytest.mark.parametrize(("low", "high"), [((9, 13), (72, 104)), ((7, 5), (31, 17)), ((12, 16), (12, 16))])
def test_upsample_argmax_equals_reference(low: tuple[int, int], high: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(3)
    for smooth in (False, True):
        logits = torch.randn(1, 6, *low, generator=gen)
        if smooth:  # real logits: large regions, few boundaries
            logits = F.interpolate(torch.randn(1, 6, 3, 3, generator=gen), size=low, mode="bilinear") * 4
        np.testing.assert_array_equal(upsample_argmax(logits, high), reference_argmax(logits, high))
    ref = F.interpolate(logits, size=high, mode="bilinear", align_corners=False).argmax(1)[0]
    np.testing.assert_array_equal(upsample_argmax(logits, high), ref.numpy())


def test_cli_runtime_choices_match_the_runtimes() -> None:
    from effseg.cli.predict import RUNTIME_CHOICES
    from effseg.pipeline.engines import RUNTIMES

    assert RUNTIME_CHOICES == RUNTIMES


def test_shipped_model_runs_at_its_own_size_by_default(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Without --input-size the pipeline runs a shipped model at its registry size (480x360 for
    CamVid), as effseg.load's Predictor does, not at each frame's own size."""
    from effseg.size import Size

    src, out = tmp_path / "photos", tmp_path / "out"
    src.mkdir()
    img = np.asarray(Image.open(effseg.sample_images()[0]).convert("RGB").resize((96, 72)))
    Image.fromarray(img).save(src / "small.png")
    code = main(["predict", "camvid-ddrnet23_slim", str(src), "--out", str(out), "--runtime", "eager"]
                + ["--class-ids", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    predictor = effseg.load("camvid-ddrnet23_slim")
    assert predictor.input_size == Size(360, 480)
    got = np.asarray(Image.open(out / "ids" / "small.png"))
    np.testing.assert_array_equal(got, predictor.predict(img))  # run at 480x360, labels at 96x72
    assert not np.array_equal(got, predictor.predict(img, input_size="96x72"))
