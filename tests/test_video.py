"""Video in, video out; the `--runtime auto` export cache; onnxruntime with the argmax in the graph."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import effseg
from effseg.cli import main
from effseg.pipeline import engines as rt
from effseg.pipeline import export_cache
from effseg.pipeline.predict import Outputs, predict

pytest.importorskip("onnxruntime")

PALETTE = np.array([[128, 64, 128], [0, 0, 142], [70, 130, 180]], np.uint8)


def _checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = effseg.build_model("lraspp", backbone="mobilenetv3_small", num_classes=3, aux=False)
    torch.save(
        {
            "model": model.state_dict(),
            "model_config": model.config,
            "classes": ["road", "car", "sky"],
            "palette": PALETTE.tolist(),
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "config": {},
        },
        path,
    )
    return path


def _clip(
    path: Path, frames: int = 6, size: tuple[int, int] = (48, 64), fps: float = 12.5
) -> list[np.ndarray]:
    """A lossless (FFV1) synthetic clip of moving bars; returns its RGB frames as OpenCV decodes them."""
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(frames):
        bgr = np.stack([(xx * 4 + i * 9) % 256, (yy * 5) % 256, ((xx + yy + i * 7) * 3) % 256], -1)
        writer.write(bgr.astype(np.uint8))
    writer.release()
    cap, out = cv2.VideoCapture(str(path)), []
    while (got := cap.read())[0]:
        out.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def _read_video(path: Path) -> tuple[list[np.ndarray], float]:
    cap, frames = cv2.VideoCapture(str(path)), []
    fps = cap.get(cv2.CAP_PROP_FPS)
    while (got := cap.read())[0]:
        frames.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    cap.release()
    return frames, fps


def _ids_from_colors(rgb: np.ndarray) -> np.ndarray:
    match = (rgb[:, :, None, :] == PALETTE[None, None]).all(-1)
    assert match.any(-1).all(), "a pixel has no palette colour"
    return match.argmax(-1).astype(np.uint8)


def test_video_in_video_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = _checkpoint(tmp_path / "m.pt")
    frames = _clip(tmp_path / "clip.mkv")
    out = tmp_path / "seg.mkv"
    code = main(["predict", str(ckpt), str(tmp_path / "clip.mkv"), "--out", str(out), "--runtime", "eager"])
    assert code == 0, capsys.readouterr().err
    got, fps = _read_video(out)
    assert len(got) == len(frames) == 6 and fps == pytest.approx(12.5)
    assert got[0].shape == frames[0].shape
    predictor = effseg.load(ckpt)
    for rgb, frame in zip(got, frames, strict=True):
        np.testing.assert_array_equal(_ids_from_colors(rgb), predictor.predict(frame))
    # An overlay video keeps the size too (legend drawn inside the frame) and mp4 works.
    code = main(["predict", str(ckpt), str(tmp_path / "clip.mkv"), "--out", str(tmp_path / "o.mp4")]
                + ["--overlay", "--runtime", "eager", "--no-progress"])  # fmt: skip
    assert code == 0
    over, fps = _read_video(tmp_path / "o.mp4")
    assert len(over) == 6 and over[0].shape == frames[0].shape and fps == pytest.approx(12.5)


def test_video_frames_to_png_folder(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "m.pt")
    frames = _clip(tmp_path / "clip.avi", frames=3)
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(tmp_path / "clip.avi"), "--out", str(out), "--class-ids"]
                + ["--runtime", "eager", "--no-progress"]) == 0  # fmt: skip
    predictor = effseg.load(ckpt)
    for i, frame in enumerate(frames):
        ids = cv2.imread(str(out / "ids" / "clip" / f"frame_{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(ids, predictor.predict(frame))


def _count_exports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    export_onnx, session, quantize = export_cache.deploy_functions()

    def counted_export(*args, **kwargs):
        calls.append("fp32")
        return export_onnx(*args, **kwargs)

    def counted_quantize(*args, **kwargs):
        calls.append("int8")
        return quantize(*args, **kwargs)

    functions = (counted_export, session, quantize and counted_quantize)
    monkeypatch.setattr(export_cache, "deploy_functions", lambda: functions)
    return calls


def test_auto_runtime_caches_and_reexports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = _checkpoint(tmp_path / "m.pt")
    frames = _clip(tmp_path / "clip.mkv", frames=4)
    calls = _count_exports(monkeypatch)
    first = predict(ckpt, [tmp_path / "clip.mkv"], Outputs(tmp_path / "a.mkv"), progress=False)
    assert calls == ["fp32", "int8"] and first.frames == 4
    cache = tmp_path / "m.runtime_cache"
    (hash_dir,) = [d for d in cache.iterdir() if d.is_dir()]
    choice = rt.ExportCache(cache, effseg.load(ckpt).model, {}).read((48, 64))
    assert choice["runtime"] in rt.RUNTIMES and "eager" in choice["timings_ms"]
    assert choice["int8_agreement"] > 0.5
    assert first.runtime.startswith(choice["runtime"])
    # Second run: nothing exported, the recorded choice is reused.
    second = predict(ckpt, [tmp_path / "clip.mkv"], Outputs(tmp_path / "b.mkv"), progress=False)
    assert calls == ["fp32", "int8"] and second.runtime == first.runtime
    # The checkpoint changes: exported again into a new hash folder, the stale one removed.
    _checkpoint(ckpt, seed=1)
    predict(ckpt, [tmp_path / "clip.mkv"], Outputs(tmp_path / "c.mkv"), progress=False)
    assert calls == ["fp32", "int8", "fp32", "int8"]
    assert [d.name for d in cache.iterdir() if d.is_dir()] != [hash_dir.name]
    assert not hash_dir.exists()
    # Every runtime's masks are the model's masks (int8 excepted: it is only close).
    a, _ = _read_video(tmp_path / "c.mkv")
    assert len(a) == len(frames)


@pytest.mark.parametrize("post", ["graph", "lowres"])
def test_onnxruntime_engine_equals_logits_argmax(tmp_path: Path, post: str) -> None:
    """The argmax in the graph (uint8 out) and the cut final Resize + exact refine give the labels
    of the full-logits ONNX graph."""
    ckpt = _checkpoint(tmp_path / "m.pt")
    predictor = effseg.load(ckpt)
    frames = _clip(tmp_path / "clip.mkv", frames=3)
    cache = rt.ExportCache(tmp_path / "cache", predictor.model, {"classes": predictor.classes})
    engine = rt.OnnxEngine(predictor, cache, "fp32", post, samples=frames[:1])
    _, session, _ = export_cache.deploy_functions()
    full = session(cache.onnx((48, 64), "fp32"))
    for frame in frames:
        x = engine.prepare(frame).numpy()
        logits = torch.from_numpy(full.run(None, {full.get_inputs()[0].name: x})[0])
        expected = logits.argmax(1)[0].numpy()
        got = engine(frame)
        assert got.dtype == np.uint8
        agree = (got == expected).mean()
        # graph: the same Resize, argmax in ORT -> identical; lowres: PyTorch's upsample formula
        # on ORT's low-res logits (ORT's Resize rounds differently in the last bit).
        assert agree == 1.0 if post == "graph" else agree > 0.999
    names = sorted(p.name for p in (cache.root / cache.hash / "64x48").iterdir())
    assert f"fp32.{'labels' if post == 'graph' else 'lowres'}.onnx" in names


def test_onnx_model_file_runs_with_onnxruntime(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An .onnx MODEL: auto runs the file itself; eager is refused with one line."""
    ckpt = _checkpoint(tmp_path / "m.pt")
    export_onnx, _, _ = export_cache.deploy_functions()
    predictor = effseg.load(ckpt)
    meta = {"classes": predictor.classes, "palette": PALETTE.tolist(), "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225]}  # fmt: skip
    export_onnx(predictor.model, tmp_path / "m.onnx", input_size=(48, 64), meta=meta)
    frames = _clip(tmp_path / "clip.mkv", frames=2)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "m.onnx"), str(tmp_path / "clip.mkv"), "--out", str(out)]
                + ["--class-ids", "--no-progress"]) == 0  # fmt: skip
    assert "runtime onnxruntime" in capsys.readouterr().err
    onnx_predictor = effseg.load(tmp_path / "m.onnx")
    for i, frame in enumerate(frames):
        ids = cv2.imread(str(out / "ids" / "clip" / f"frame_{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(ids, onnx_predictor.predict(frame))
    code = main(
        [
            "predict",
            str(tmp_path / "m.onnx"),
            str(tmp_path / "clip.mkv"),
            "--out",
            str(out),
            "--runtime",
            "eager",
        ]
    )
    assert code == 2 and "an ONNX file runs as it is" in capsys.readouterr().err


def test_auto_skips_int8_below_98_percent_agreement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = _checkpoint(tmp_path / "m.pt")
    _clip(tmp_path / "clip.mkv", frames=2)
    monkeypatch.setattr(rt.ExportCache, "agreement", lambda self, fp32, other, samples, backend="": 0.975)
    summary = predict(ckpt, [tmp_path / "clip.mkv"], Outputs(tmp_path / "a.mkv"), progress=False)
    choice = rt.ExportCache(tmp_path / "m.runtime_cache", effseg.load(ckpt).model, {}).read((48, 64))
    assert choice["int8_agreement"] == 0.975
    assert not any(k.startswith("onnxruntime-int8") for k in choice["timings_ms"])
    assert set(choice["timings_ms"]) == {"eager", "onnxruntime (graph)", "onnxruntime (lowres)"}
    assert "int8" not in summary.runtime
    # OpenVINO (bf16 on CPUs with AMX) is gated the same way: its agreement recorded, not timed
    if rt.openvino_version():
        assert choice["openvino_agreement"] == choice["openvino-int8_agreement"] == 0.975
