"""The openvino runtimes: effseg's ONNX files compiled by OpenVINO (effseg.deploy.openvino_io)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")  # the optional `openvino` extra

import effseg  # noqa: E402
from effseg.cli import main as cli_main  # noqa: E402
from effseg.deploy.export import export_onnx  # noqa: E402
from effseg.deploy.onnx_io import onnx_session, ort_session  # noqa: E402
from effseg.deploy.openvino_io import OpenVinoSession, _precision_name  # noqa: E402
from effseg.deploy.runtime import load_onnx_model  # noqa: E402
from effseg.errors import ExportError  # noqa: E402
from helpers_engine import predict_class_ids, tiny_cityscapes_checkpoint  # noqa: E402

H, W, C = 48, 64, 3
CLASSES = ["road", "car", "sky"]
PALETTE = [[128, 64, 128], [0, 0, 142], [70, 130, 180]]
META = {"classes": CLASSES, "palette": PALETTE, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return effseg.build_model("lraspp", backbone="mobilenetv3_small", num_classes=C, aux=False).eval()


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth (1, 3, H, W) inputs: low-resolution noise upsampled, as a photo is."""
    g = torch.Generator().manual_seed(seed)
    lo = [torch.randn(1, 3, H // 8, W // 8, generator=g) for _ in range(n)]
    return [torch.nn.functional.interpolate(x, size=(H, W), mode="bilinear").numpy() for x in lo]


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ov") / "m.onnx"
    export_onnx(_model(), path, input_size=(H, W), meta=META)
    return path


def _run(session, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_openvino_f32_equals_onnxruntime_and_default_precision_stays_close(onnx_file: Path) -> None:
    ref = ort_session(onnx_file)
    f32 = OpenVinoSession(onnx_file, threads=1, precision="f32")
    auto = onnx_session(onnx_file, "openvino")
    assert f32.precision == "f32" and auto.precision in ("f32", "bf16")
    (inp,) = f32.get_inputs()
    assert inp.name == ref.get_inputs()[0].name and inp.shape == [1, 3, H, W]
    for x in _images(3, seed=5):
        r, a, b = _run(ref, x), _run(f32, x), _run(auto, x)
        assert a.shape == b.shape == r.shape == (1, C, H, W) and a.dtype == np.float32
        np.testing.assert_allclose(a, r, atol=1e-3 * float(np.abs(r).max()), rtol=1e-3)
        # bf16 keeps 8 bits of mantissa: close logits, near-identical labels
        assert (b.argmax(1) == r.argmax(1)).mean() >= 0.95
        assert float(np.abs(b - r).mean()) < 0.05 * float(np.abs(r).mean())
    # the output is a copy: the next call does not overwrite what the caller holds
    first = _run(f32, _images(1, seed=1)[0])
    keep = first.copy()
    _run(f32, _images(1, seed=2)[0])
    np.testing.assert_array_equal(first, keep)


def test_bad_input_is_one_line(onnx_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="precision 'fp8'"):
        OpenVinoSession(onnx_file, precision="fp8")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ExportError, match=r"bad\.onnx: OpenVINO cannot compile this file") as err:
        OpenVinoSession(bad)
    assert "\n" not in str(err.value)
    session = OpenVinoSession(onnx_file)
    with pytest.raises(ExportError, match="expected the input 'image'"):
        session.run(None, {"x": _images(1)[0]})
    with pytest.raises(ExportError, match="ONNX backend 'tensorrt'"):
        onnx_session(onnx_file, "tensorrt")
    assert [_precision_name(t) for t in ("<Type: 'bfloat16'>", "f32", "float16")] == ["bf16", "f32", "f16"]


def test_missing_openvino_names_the_extra(onnx_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    with pytest.raises(ExportError, match=r"pip install 'effseg\[openvino\]'") as err:
        OpenVinoSession(onnx_file)
    assert "\n" not in str(err.value)


def test_onnx_segmentor_on_openvino_resizes_and_batches_like_onnxruntime(onnx_file: Path) -> None:
    ov_model, meta = load_onnx_model(onnx_file, backend="openvino")
    ort_model, _ = load_onnx_model(onnx_file)
    assert ov_model.backend == "openvino" and ov_model.static_size == (H, W) and meta["classes"] == CLASSES
    x = torch.from_numpy(np.concatenate(_images(2, seed=3)))
    x = torch.nn.functional.interpolate(x, size=(H + 8, W - 8), mode="bilinear")  # not the export size
    a, b = ov_model(x), ort_model(x)
    assert a.shape == (2, C, H + 8, W - 8)
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.95


def test_bench_times_both_openvino_runtimes_and_records_the_precision(tmp_path: Path) -> None:
    from effseg.bench.measure import bench_models

    report = bench_models(
        ["lraspp_mobilenetv3_small"],
        input_size=f"{W}x{H}",
        runtimes="onnxruntime,openvino,openvino-int8",
        warmup=1,
        runs=2,
        calib=_images(2),
        stages=False,
        num_classes=C,
        work_dir=tmp_path,
        progress=False,
    )
    rows = {r["runtime"]: r for r in report["results"]}
    for rt in ("openvino", "openvino-int8"):
        assert "error" not in rows[rt], rows[rt].get("error")
        assert len(rows[rt]["times_ms"]) == 2 and rows[rt]["latency_ms_median"] > 0
        assert rows[rt]["openvino_precision"] in ("f32", "bf16")
        assert "miou" not in rows[rt]  # not fp32: only its own measured mIoU would be shown
    assert rows["openvino-int8"]["onnx_path"].endswith("_int8.onnx")
    assert rows["openvino"]["onnx_path"] == rows["onnxruntime"]["onnx_path"]  # one export, two engines


def test_cli_eval_openvino_records_runtime_and_precision(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    model = effseg.build_model("lraspp", backbone="mobilenetv3_small", num_classes=19, aux=False)
    ckpt = tiny_cityscapes_checkpoint(tmp_path, model, (H, W))
    args = ["eval", str(ckpt), "--device", "cpu"]
    assert cli_main([*args, "--runtime", "openvino", "--calib", "val"]) == 2
    assert "calibration images are for --runtime compile-int8, not openvino" in capsys.readouterr().err
    code = cli_main([*args, "--runtime", "openvino", "--out", str(tmp_path / "v")])
    assert code == 0, capsys.readouterr().err
    assert cli_main([*args, "--out", str(tmp_path / "f")]) == 0
    v = json.loads((tmp_path / "v" / "eval.json").read_text())
    f = json.loads((tmp_path / "f" / "eval.json").read_text())
    assert v["runtime"]["name"] == "openvino" and v["runtime"]["input_size"] == [H, W]
    assert v["runtime"]["precision"] in ("f32", "bf16")
    assert np.array(v["confusion_matrix"]).sum() == np.array(f["confusion_matrix"]).sum() > 0
    assert abs(v["pixel_acc"] - f["pixel_acc"]) < 0.02


def test_predict_runs_openvino_close_to_eager_and_an_onnx_file_as_it_is(
    tmp_path: Path, onnx_file: Path, capsys: pytest.CaptureFixture
) -> None:
    model = _model()
    ckpt = tmp_path / "m.pt"
    torch.save({"model": model.state_dict(), "model_config": model.config, "config": {}, **META}, ckpt)
    src = tmp_path / "frames"
    src.mkdir()
    for i, x in enumerate(_images(3, seed=3)):
        rgb = np.clip(x[0].transpose(1, 2, 0) * 60 + 128, 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(src / f"f{i}.png")
    runtimes = ("eager", "openvino", "openvino-int8")
    ids = {r: predict_class_ids(ckpt, src, tmp_path / r, r, capsys) for r in runtimes}
    assert ids["eager"].shape == ids["openvino"].shape == (3, H, W)
    assert (ids["eager"] == ids["openvino"]).mean() >= 0.95
    assert (ids["eager"] == ids["openvino-int8"]).mean() >= 0.8
    # an .onnx MODEL runs as it is: in OpenVINO on request, never re-quantized
    got = predict_class_ids(onnx_file, src, tmp_path / "onnx", "openvino", capsys)
    assert (got == ids["eager"]).mean() >= 0.95
    args = ["predict", str(onnx_file), str(src), "--out", str(tmp_path / "x"), "--runtime", "openvino-int8"]
    code = cli_main(args)
    assert code == 2 and "runs as it is, with --runtime onnxruntime or openvino" in capsys.readouterr().err
