"""effseg.load / Predictor: every input type, batching, resizing, errors, real checkpoints and ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effseg
from effseg.api import Predictor, colorize, overlay, parse_size, read_image
from effseg.errors import CheckpointError, DataError, EffsegError, ModelError
from effseg.size import Size


def _bright(x: torch.Tensor) -> torch.Tensor:
    """Logits (B, 2, H, W): class 1 where the pixel's mean intensity (0..1) exceeds 0.5."""
    return torch.cat([torch.full_like(x[:, :1], 0.5), x.mean(1, keepdim=True)], 1)


@pytest.fixture()
def bright() -> Predictor:
    # mean 0 / std 1 so the network sees raw 0..1 intensities
    return Predictor(
        _bright, classes=["dark", "bright"], palette=[[0, 0, 0], [255, 0, 0]], mean=(0, 0, 0), std=(1, 1, 1)
    )


def _pattern(h: int = 20, w: int = 30) -> np.ndarray:
    """(H, W, 3) uint8: bright top-left block, and a bright single column on the right."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 3] = 230
    a[:, w - 2] = 255
    return a


def _expected(a: np.ndarray) -> np.ndarray:
    return (a.mean(2) / 255.0 > 0.5).astype(np.uint8)


def test_array_pil_and_path_agree(bright: Predictor, tmp_path: Path) -> None:
    a = _pattern()
    Image.fromarray(a).save(tmp_path / "x.png")
    for src in (a, Image.fromarray(a), tmp_path / "x.png", str(tmp_path / "x.png")):
        out = bright.predict(src)
        assert out.shape == (20, 30) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, _expected(a))


def test_rgba_grayscale_and_2d_array(bright: Predictor, tmp_path: Path) -> None:
    a = _pattern()
    rgba = np.dstack([a, np.full(a.shape[:2], 7, np.uint8)])  # nearly transparent: alpha is dropped
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(a[:, :, 0], "L").save(tmp_path / "gray.png")
    for src in (tmp_path / "rgba.png", rgba, tmp_path / "gray.png", a[:, :, 0], Image.fromarray(a[:, :, 0])):
        np.testing.assert_array_equal(bright.predict(src), _expected(a))


def test_16bit_is_scaled_not_clipped(bright: Predictor, tmp_path: Path) -> None:
    g = np.full((12, 16), 20000, np.uint16)  # 20000/65535 = 0.31 -> dark; clipping to 255 would say bright
    g[:, :4] = 50000  # 0.76 -> bright
    Image.fromarray(g).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    expected = np.zeros((12, 16), np.uint8)
    expected[:, :4] = 1
    np.testing.assert_array_equal(bright.predict(tmp_path / "g16.png"), expected)
    np.testing.assert_array_equal(bright.predict(g), expected)
    np.testing.assert_array_equal(read_image(g)[0, 0], [round(50000 * 255 / 65535)] * 3)


def test_exif_rotation_is_applied(bright: Predictor, tmp_path: Path) -> None:
    a = _pattern(20, 30)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.png", exif=exif.tobytes())
    out = bright.predict(tmp_path / "rot.png")
    assert out.shape == (30, 20)  # follows the displayed (rotated) image
    np.testing.assert_array_equal(out, _expected(np.rot90(a, k=-1)))


def test_batch_list_matches_single_and_keeps_order(bright: Predictor) -> None:
    imgs = [_pattern(), _pattern(8, 12), 255 - _pattern(), _pattern(8, 12)[::-1]]
    batched = bright.predict(imgs, batch_size=2)
    assert isinstance(batched, list) and len(batched) == 4
    for img, out in zip(imgs, batched, strict=True):
        np.testing.assert_array_equal(out, bright.predict(img))


def test_input_size_resizes_for_network_and_back(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []

    def fwd(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[-2:]))
        return _bright(x)

    p = Predictor(fwd, classes=["dark", "bright"], mean=(0, 0, 0), std=(1, 1, 1))
    a = np.zeros((40, 60, 3), np.uint8)
    a[:, :30] = 255
    out = p.predict(a, input_size="30x20")
    assert seen == [(20, 30)] and out.shape == (40, 60)
    np.testing.assert_array_equal(out, _expected(a))
    assert parse_size("1024x512") == (1024, 512) and parse_size((64, 32)) == (64, 32)


def test_input_size_is_a_size_or_width_by_height_text(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[int, int]] = []

    def fwd(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[-2:]))
        return _bright(x)

    a = np.zeros((40, 60, 3), np.uint8)
    p = Predictor(fwd, classes=["dark", "bright"], input_size="30x20")
    assert p.input_size == Size(h=20, w=30) and "input_size=30x20" in repr(p)
    p.predict(a)
    p.predict(a, input_size=Size(h=10, w=16))
    assert Predictor(fwd, classes=["a", "b"], input_size=Size(h=20, w=30)).input_size == Size(h=20, w=30)
    assert seen == [(20, 30), (10, 16)]
    # a plain pair is effseg 0.1's (width, height), still read, with a note naming the new spelling
    p.predict(a, input_size=(12, 8))
    assert seen[-1] == (8, 12) and "write 12x8 (WIDTHxHEIGHT)" in capsys.readouterr().err
    with pytest.raises(EffsegError, match="input size '30-20': expected WIDTHxHEIGHT"):
        p.predict(a, input_size="30-20")


def test_training_mode_outputs_are_refused_in_one_line() -> None:
    p = Predictor(lambda x: {"out": _bright(x), "aux": _bright(x)}, classes=["dark", "bright"], source="m")
    with pytest.raises(ModelError, match=r"^m: model returned named outputs \['aux', 'out'\]; put it"):
        p.predict(np.zeros((4, 4, 3), np.uint8))


def test_normalisation_uses_mean_and_std() -> None:
    got: list[torch.Tensor] = []

    def fwd(x: torch.Tensor) -> torch.Tensor:
        got.append(x.clone())
        return torch.zeros(x.shape[0], 3, *x.shape[-2:])

    p = Predictor(fwd, classes=["a", "b", "c"], mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    p.predict(np.full((2, 2, 3), 255, np.uint8))
    torch.testing.assert_close(got[0][0, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]))


def test_colorize_and_overlay(bright: Predictor) -> None:
    labels = np.array([[0, 1], [255, 1]], np.uint8)
    rgb = bright.colorize(labels)
    np.testing.assert_array_equal(rgb, [[[0, 0, 0], [255, 0, 0]], [[0, 0, 0], [255, 0, 0]]])
    img = np.full((2, 2, 3), 100, np.uint8)
    blend = bright.overlay(img, labels, alpha=0.25)
    np.testing.assert_array_equal(blend[0, 1], [139, 75, 75])  # 0.75*100 + 0.25*255 = 138.75
    np.testing.assert_array_equal(overlay(img, colorize(labels, bright.palette), 0.0), img)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("missing.png", "not found"),
        ("notes.txt", "cannot decode image"),
        (np.zeros((4, 4, 3), np.float32), "dtype float32"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (torch.zeros(3, 4, 4), "from Tensor"),
        (12, "int"),
    ],
)
def test_bad_images_raise_clear_errors(bright: Predictor, tmp_path: Path, source, match: str) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    if isinstance(source, str):
        source = tmp_path / source
    with pytest.raises(DataError, match=match) as info:
        bright.predict(source)
    if isinstance(source, Path):
        assert str(source) in str(info.value)
    assert "\n" not in str(info.value)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        effseg.load(tmp_path / "nothing.pt")
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(CheckpointError, match="unknown model file type"):
        effseg.load(tmp_path / "model.txt")
    with pytest.raises(EffsegError, match="device"):
        effseg.load(tmp_path / "model.txt", device="tpu")


# ----------------------------------------------------------------- real models


def _tiny_checkpoint(tmp_path: Path) -> tuple[Path, torch.nn.Module, dict]:
    """A PSPNet-MobileNetV2 with random weights, saved in the documented checkpoint format."""
    model = effseg.build_model("pspnet", backbone="mobilenetv2", num_classes=3).eval()
    ckpt = {
        "model": model.state_dict(),
        "model_config": model.config,
        "classes": ["road", "car", "sky"],
        "palette": np.array([[128, 64, 128], [0, 0, 142], [70, 130, 180]], np.uint8).tolist(),
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "config": {},
    }
    run = tmp_path / "run"
    run.mkdir()
    torch.save(ckpt, run / "best.pt")
    return run / "best.pt", model, ckpt


def _reference(model: torch.nn.Module, img: np.ndarray, ckpt: dict) -> np.ndarray:
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(ckpt["mean"]).view(1, 3, 1, 1)) / torch.tensor(ckpt["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x).argmax(1)[0].numpy()


def test_load_checkpoint_and_run_dir(tmp_path: Path) -> None:
    path, model, ckpt = _tiny_checkpoint(tmp_path)
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for src in (path, path.parent):
        p = effseg.load(src)
        assert p.classes == ckpt["classes"] and p.num_classes == 3
        np.testing.assert_array_equal(p.palette, ckpt["palette"])
        assert p.device == torch.device("cpu")
        out = p.predict(img)
        assert out.shape == (37, 53)
        np.testing.assert_array_equal(out, _reference(model, img, ckpt))


def test_load_onnx(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")  # the optional `deploy` extra
    from effseg.deploy import export

    path, model, ckpt = _tiny_checkpoint(tmp_path)
    onnx_path = tmp_path / "model.onnx"
    meta = {k: ckpt[k] for k in ("classes", "palette", "mean", "std")}
    export.export_onnx(model, onnx_path, input_size=(48, 64), meta=meta)  # (H, W), static
    p = effseg.load(onnx_path)
    assert p.classes == ckpt["classes"]
    img = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = p.predict(img)
    assert out.shape == (48, 64)
    ref = _reference(model, img, ckpt)
    assert (out == ref).mean() > 0.99  # float differences may flip a few near-ties
    # a static-size graph: other image sizes are resized to it and the result back to the image
    assert p.input_size == p.fixed_input_size == Size(h=48, w=64)
    assert p.predict(img[:30, :50]).shape == (30, 50)
    with pytest.raises(EffsegError, match="fixed input size 64x48"):
        p.predict(img, input_size="32x32")


class _Evil:
    """A pickle that would run code when loaded (never actually run: weights_only refuses it)."""

    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_refused_pickle_says_it_carries_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_config": {}, "x": _Evil()}, path)
    with pytest.raises(CheckpointError) as info:
        effseg.load(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: refused: the file carries code (it would import and run ")
    assert "getcwd" in msg and "\n" not in msg
    assert "weights_only" not in msg  # never advice to turn the protection off


def test_onnx_without_effseg_metadata_is_refused(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["image"], ["logits"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(EffsegError) as info:
        effseg.load(path)
    assert str(info.value) == (
        f"{path}: no effseg metadata (the 'effseg' entry with num_classes, mean, std); "
        "export the model with `effseg export`"
    )
    from effseg.deploy.onnx_io import write_onnx_metadata

    write_onnx_metadata(path, {"num_classes": 3, "classes": ["a", "b", "c"]})
    with pytest.raises(EffsegError, match=r"plain.onnx: effseg metadata lacks mean, std; export"):
        effseg.load(path)
    write_onnx_metadata(path, {"num_classes": 3, "mean": [0.5] * 3, "std": [0.5] * 3})
    p = effseg.load(path)  # complete: loads; an Identity "model" returns its 3-channel input
    assert p.classes == ["class_0", "class_1", "class_2"] and p.num_classes == 3
    img = np.zeros((5, 6, 3), np.uint8)
    img[..., 2] = 255  # the blue channel wins the argmax of an Identity graph
    out = p.predict(img)  # the static 4x4 graph: resized to it and back
    assert out.shape == (5, 6) and (out == 2).all()
