"""compile-int8: PT2E int8 (torchao's X86InductorQuantizer) compiled by inductor (effseg.deploy.pt2e).

Not collected by the suite directly: ``tests/test_pt2e.py`` runs this file in a fresh Python
process (see there why). Run it alone with ``python -m pytest tests/isolated/pt2e_cases.py``."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("torchao")  # the optional `int8-torch` extra

from effseg.deploy.pt2e import CompiledInt8, compile_int8, quantize_pt2e  # noqa: E402
from effseg.errors import ExportError  # noqa: E402
from effseg.models import build_model  # noqa: E402
from helpers_engine import predict_class_ids, tiny_cityscapes_checkpoint  # noqa: E402

H, W, C = 64, 96, 5


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("lraspp", backbone="mobilenetv3_large", num_classes=C, aux=False).eval()


def _images(n: int, seed: int = 0) -> list[torch.Tensor]:
    """Smooth inputs (not white noise): a random low-resolution image upsampled, as a photo is."""
    g = torch.Generator().manual_seed(seed)
    lo = [torch.randn(1, 3, H // 8, W // 8, generator=g) for _ in range(n)]
    return [torch.nn.functional.interpolate(x, size=(H, W), mode="bilinear") for x in lo]


@pytest.fixture(scope="module")
def compiled() -> tuple[torch.nn.Module, CompiledInt8, list[torch.Tensor]]:
    model, calib = _model(), _images(4)
    return model, compile_int8(model, calib), calib


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(1) == b.argmax(1)).float().mean())


def test_compiled_int8_equals_its_reference_graph_and_stays_close_to_fp32(compiled) -> None:
    model, fast, calib = compiled
    x = _images(1, seed=7)[0]  # not a calibration image
    with torch.no_grad():
        y, ref, fp32 = fast(x), fast.quantized(x), model(x)
    assert y.shape == (1, C, H, W) and y.dtype == torch.float32
    assert fast.input_size == (H, W)
    # the fused oneDNN kernels compute what the quantize/dequantize reference graph says
    assert _agreement(y, ref) >= 0.99
    assert float((y - ref).abs().max()) < 0.1 * float(ref.abs().max())
    # int8 is an approximation of the fp32 model, not a different model
    assert _agreement(y, fp32) >= 0.9
    assert float((y - fp32).abs().mean()) < 0.1 * float(fp32.abs().mean())


def test_other_sizes_are_resized_and_batches_run_image_by_image(compiled) -> None:
    _, fast, _ = compiled
    x = torch.randn(2, 3, H + 6, W - 10)
    y = fast(x)
    assert y.shape == (2, C, H + 6, W - 10)
    assert torch.equal(y[1:], fast(x[1:]))
    # inference only: eval() is harmless (evaluate() calls it), train() is refused in one line
    assert not fast.training and fast.eval() is fast
    with pytest.raises(ExportError, match="cannot be put in training mode"):
        fast.train()


def test_bad_calibration_inputs_are_one_line_errors() -> None:
    model = _model()
    with pytest.raises(ExportError, match="no calibration images"):
        quantize_pt2e(model, [])
    with pytest.raises(ExportError, match=r"calibration tensor 0 is \(3, 64, 96\)"):
        quantize_pt2e(model, [torch.randn(3, H, W)])
    with pytest.raises(ExportError, match=r"calibration tensor 1 is \(1, 3, 32, 32\).*all of one size"):
        quantize_pt2e(model, [torch.randn(1, 3, H, W), torch.randn(1, 3, 32, 32)])


def test_missing_torchao_names_the_extra(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_torchao(name, *args, **kwargs):
        if name.startswith("torchao"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchao)
    with pytest.raises(ExportError, match=r"pip install 'effseg\[int8-torch\]'") as err:
        quantize_pt2e(_model(), _images(1))
    assert "\n" not in str(err.value)


def test_bench_times_compile_int8_and_shows_no_fp32_miou_for_it(tmp_path: Path) -> None:
    from effseg.bench.measure import bench_models

    calib = [x.numpy() for x in _images(2)]
    report = bench_models(
        ["lraspp_mobilenetv3_large"],
        input_size=f"{W}x{H}",
        runtimes="eager,compile-int8",
        warmup=1,
        runs=2,
        calib=calib,
        stages=False,
        num_classes=C,
        work_dir=tmp_path,
        progress=False,
    )
    rows = {r["runtime"]: r for r in report["results"]}
    assert "error" not in rows["compile-int8"], rows["compile-int8"].get("error")
    assert len(rows["compile-int8"]["times_ms"]) == 2 and rows["compile-int8"]["latency_ms_median"] > 0
    assert rows["compile-int8"]["quantization"]["calibration"] == "given images"
    assert "miou" not in rows["compile-int8"]


def test_cli_eval_compile_int8_needs_calib_and_records_its_runtime(tmp_path: Path, capsys) -> None:
    from effseg.cli import main as cli_main

    torch.manual_seed(0)
    model = build_model("lraspp", backbone="mobilenetv3_large", num_classes=19, aux=False)
    tiny_cityscapes_checkpoint(tmp_path, model, (H, W))
    args = ["eval", str(tmp_path / "run" / "last.pt"), "--device", "cpu"]
    assert cli_main([*args, "--runtime", "compile-int8"]) == 2
    assert "needs --calib" in capsys.readouterr().err
    assert cli_main([*args, "--calib", "val"]) == 2  # eager takes no calibration images
    assert "--calib: calibration images are for --runtime compile-int8" in capsys.readouterr().err
    code = cli_main([*args, "--runtime", "compile-int8", "--calib", "val", "--out", str(tmp_path / "q")])
    assert code == 0, capsys.readouterr().err
    assert cli_main([*args, "--out", str(tmp_path / "f")]) == 0
    q = json.loads((tmp_path / "q" / "eval.json").read_text())
    f = json.loads((tmp_path / "f" / "eval.json").read_text())
    assert q["runtime"] == {"name": "compile-int8", "calibration": "val", "input_size": [H, W]}
    assert f["runtime"] == "eager"
    # every labelled pixel counted once by both; the int8 model predicts nearly what fp32 does
    assert np.array(q["confusion_matrix"]).sum() == np.array(f["confusion_matrix"]).sum() > 0
    assert abs(q["pixel_acc"] - f["pixel_acc"]) < 0.05


def test_predict_pipeline_runs_compile_int8_close_to_eager(tmp_path: Path, capsys) -> None:

    torch.manual_seed(0)
    model = build_model("lraspp", backbone="mobilenetv3_large", num_classes=3, aux=False)
    ckpt = tmp_path / "m.pt"
    torch.save(
        {"model": model.state_dict(), "model_config": model.config, "classes": ["road", "car", "sky"],
         "palette": [[128, 64, 128], [0, 0, 142], [70, 130, 180]], "config": {}},
        ckpt,
    )  # fmt: skip
    src = tmp_path / "frames"
    src.mkdir()
    for i, x in enumerate(_images(3, seed=3)):
        rgb = ((x[0].permute(1, 2, 0) * 60 + 128).clamp(0, 255)).to(torch.uint8).numpy()
        Image.fromarray(rgb).save(src / f"f{i}.png")
    ids = {r: predict_class_ids(ckpt, src, tmp_path / r, r, capsys) for r in ("eager", "compile-int8")}
    assert ids["eager"].shape == ids["compile-int8"].shape == (3, H, W)
    assert (ids["eager"] == ids["compile-int8"]).mean() >= 0.9
