"""ONNX / TorchScript export, BatchNorm folding, parity, dynamic shapes, int8, load_onnx_model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from effseg.cli import main
from effseg.deploy.export import _fold_batchnorm_with_ort, export_onnx, export_torchscript
from effseg.deploy.export_run import parse_input_size, run_export
from effseg.deploy.onnx_io import onnx_op_types, ort_session, read_onnx_metadata
from effseg.deploy.runtime import load_onnx_model
from effseg.errors import ConfigError, DataError, EffsegError, ExportError
from effseg.models import build_model
from helpers_engine import tiny_cityscapes_checkpoint

SIZE = (64, 96)  # (H, W): an 8x12 feature map at output stride 8, which PPM bins 3 and 6 do not divide


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: OpenMP spin-waits make 2 threads far slower on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics, so that a wrong fold would change the logits."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def test_parse_input_size() -> None:
    assert parse_input_size("1024x512") == (512, 1024)
    assert parse_input_size(" 96X64 ") == (64, 96)
    assert parse_input_size((64, 96)) == (64, 96)
    for bad in ("1024", "0x512", "axb", "1024x512x3", "-4x8"):
        with pytest.raises(EffsegError, match="input-size"):
            parse_input_size(bad)


@pytest.mark.parametrize(
    ("head", "backbone"),
    [
        ("pspnet", "mobilenetv2"),
        ("aspp", "resnet18"),
        ("ocr", "mobilenetv2"),
        ("lraspp", "mobilenetv3_small"),
    ],
)
def test_every_head_exports_with_parity(tmp_path, head: str, backbone: str) -> None:
    model = _randomise_bn(build_model(head, backbone=backbone, num_classes=5))
    report = export_onnx(model, tmp_path / "m.onnx", SIZE, meta={"classes": list("abcde")})
    ops = onnx_op_types(report.path)
    assert "BatchNormalization" not in ops and report.batchnorm_nodes == 0
    assert ops.get("Conv", 0) > 0
    proto = onnx.load(report.path)
    onnx.checker.check_model(proto, full_check=True)
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert report.parity["argmax_agreement"] >= 0.999
    assert report.parity["max_abs_diff"] < 1e-3
    # the file, run independently, gives PyTorch's logits on a new input
    x = torch.randn(1, 3, *SIZE)
    sess = ort_session(report.path)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.inference_mode():
        ref = model(x).numpy()
    assert got.shape == (1, 5, *SIZE)
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=1e-3)


def test_batchnorm_fallback_fold_removes_bn_and_keeps_values(tmp_path) -> None:
    """A graph that still has Conv -> BatchNormalization (e.g. from another exporter) is folded."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    scale, bias = rng.random(4).astype(np.float32) + 0.5, rng.standard_normal(4).astype(np.float32)
    mean, var = rng.standard_normal(4).astype(np.float32), rng.random(4).astype(np.float32) + 0.5
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in [(w, "w"), (scale, "s"), (bias, "b"), (mean, "m"), (var, "v")]
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], epsilon=1e-5),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    path = tmp_path / "bn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    before = ort_session(path, opt_level="disable").run(None, {"x": x})[0]
    _fold_batchnorm_with_ort(path)
    assert "BatchNormalization" not in onnx_op_types(path)
    onnx.checker.check_model(str(path))
    after = ort_session(path, opt_level="disable").run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, atol=1e-5)
    # spin-waiting follows the request (or OMP_WAIT_POLICY when not given)
    for spinning, flag in ((False, "0"), (True, "1")):
        opts = ort_session(path, spinning=spinning).get_session_options()
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == flag
    with pytest.raises(ExportError, match="optimisation level"):
        ort_session(path, opt_level="max")


def test_dynamic_export_without_adaptive_pooling_works_at_other_sizes(tmp_path) -> None:
    model = _randomise_bn(build_model("lraspp", backbone="mobilenetv3_small", num_classes=3))
    report = export_onnx(model, tmp_path / "dyn.onnx", SIZE, dynamic=True)
    assert len(report.dynamic_sizes_ok) >= 3 and SIZE in [tuple(s) for s in report.dynamic_sizes_ok]
    assert read_onnx_metadata(report.path)["fixed_input_size"] is None
    runner, meta = load_onnx_model(report.path)
    x = torch.randn(2, 3, 40, 72)
    with torch.inference_mode():
        np.testing.assert_allclose(runner(x).numpy(), model(x).numpy(), atol=1e-3, rtol=1e-3)


def test_dynamic_export_of_ppm_explains_which_sizes_work(tmp_path) -> None:
    model = build_model("pspnet", backbone="mobilenetv2", num_classes=3).eval()
    with pytest.raises(ExportError, match=r"works at 96x64.*adaptive pooling.*--input-size"):
        export_onnx(model, tmp_path / "dyn.onnx", SIZE, dynamic=True)


def test_fcn_export_and_load_onnx_model_metadata_round_trip(tmp_path) -> None:
    model = _randomise_bn(build_model("fcn", backbone="mobilenetv2", num_classes=3))
    palette = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    meta_in = {
        "classes": ["road", "car", "sky"],
        "palette": palette,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.2, 0.3, 0.4],
    }
    report = export_onnx(model, tmp_path / "m.onnx", SIZE, meta=meta_in)
    assert "BatchNormalization" not in onnx_op_types(report.path) and report.checker == "passed"
    assert report.parity["argmax_agreement"] >= 0.999
    runner, meta = load_onnx_model(tmp_path / "m.onnx")
    assert meta["classes"] == ["road", "car", "sky"] and meta["palette"] == palette
    assert meta["mean"] == [0.5, 0.5, 0.5] and meta["std"] == [0.2, 0.3, 0.4]
    assert meta["input_size"] == list(SIZE) and meta["fixed_input_size"] == [SIZE[1], SIZE[0]]
    assert meta["num_classes"] == 3 and meta["model_config"]["head"] == "fcn"
    assert runner.palette.dtype == np.uint8 and runner.num_classes == 3
    # static export: other sizes and batches are resized to the exported size and back
    x = torch.randn(2, 3, 50, 70)
    out = runner(x)
    assert out.shape == (2, 3, 50, 70)
    # at the exported size it equals PyTorch
    x = torch.randn(1, 3, *SIZE)
    with torch.inference_mode():
        np.testing.assert_allclose(runner(x).numpy(), model(x).numpy(), atol=1e-3, rtol=1e-3)


def test_torchscript_export_folds_bn_and_matches(tmp_path) -> None:
    model = _randomise_bn(build_model("pspnet", backbone="mobilenetv2", num_classes=4))
    report = export_torchscript(model, tmp_path / "m.pt", SIZE, meta={"classes": list("abcd")})
    assert report.batchnorm_nodes == 0
    assert report.parity["argmax_agreement"] >= 0.999
    extra = {"effseg.json": ""}
    loaded = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    assert json.loads(extra["effseg.json"])["classes"] == list("abcd")
    x = torch.randn(1, 3, *SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-3, rtol=1e-3)


def _write_images(folder, n: int = 3, size=(96, 64)) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "masks").mkdir()  # label folders are skipped
    Image.fromarray(np.zeros((size[1], size[0]), np.uint8)).save(folder / "masks" / "0.png")


def test_int8_export_reports_agreement(tmp_path) -> None:
    _write_images(tmp_path / "calib")
    report = run_export(
        "fcn_mobilenetv2",
        tmp_path / "q.onnx",
        input_size="96x64",
        int8=True,
        calib=str(tmp_path / "calib"),
        num_classes=3,
    )
    q = report["int8"]
    assert q["calibration_images"] == 3 and q["weights"] == "int8 per-channel"
    assert len(q["fp32_nodes"]) >= 2  # the classifier conv and the final upsample stay fp32
    graph = onnx.load(tmp_path / "q.onnx").graph
    last = next(n for n in graph.node if n.output[0] == graph.output[0].name)
    assert last.op_type == "Resize" and last.input[0] not in {
        o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output
    }
    assert 0.0 <= q["argmax_agreement_vs_fp32"] <= 1.0
    ops = onnx_op_types(tmp_path / "q.onnx")
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    meta = read_onnx_metadata(tmp_path / "q.onnx")
    assert (
        meta["precision"] == "int8"
        and meta["quantization"]["argmax_agreement_vs_fp32"] == q["argmax_agreement_vs_fp32"]
    )
    assert (tmp_path / "q.fp32.onnx").is_file()
    runner, _ = load_onnx_model(tmp_path / "q.onnx")
    assert runner(torch.randn(1, 3, 64, 96)).shape == (1, 3, 64, 96)


def test_int8_export_reads_its_dataset_where_set_says(tmp_path) -> None:
    """A checkpoint whose stored data root is gone (a shipped model carries none): the error names
    the option and the remedy before any export work; ``--set data.root=...`` points calibration
    and mIoU at the data, and the exported file keeps the stored config."""
    model = _randomise_bn(build_model("fcn", backbone="mobilenetv2", num_classes=19).eval())
    ckpt = tiny_cityscapes_checkpoint(tmp_path, model, (32, 64))
    stored_root = str(tmp_path / "cs")
    moved = (tmp_path / "cs").rename(tmp_path / "moved")
    kw = dict(input_size="64x32", int8=True, calib_images=2)
    with pytest.raises(DataError, match=r"^--calib 'val': .*; give the dataset with --set data\.root=DIR$"):
        run_export(ckpt, tmp_path / "q.onnx", calib="val", **kw)
    _write_images(tmp_path / "calib", size=(64, 32))
    with pytest.raises(
        DataError, match=r"^--eval-split 'val': .*--set data\.root=DIR \(or skip the mIoU with --no-eval\)$"
    ):
        run_export(ckpt, tmp_path / "q.onnx", calib=str(tmp_path / "calib"), **kw)
    assert not list(tmp_path.glob("q*.onnx"))  # refused before the export's work
    with pytest.raises(ConfigError, match="data.rot"):
        run_export(ckpt, tmp_path / "q.onnx", calib="val", overrides=[f"data.rot={moved}"], **kw)
    with pytest.raises(ExportError, match="^--set: only --int8 reads a dataset"):
        run_export(ckpt, tmp_path / "f.onnx", input_size="64x32", overrides=[f"data.root={moved}"])
    report = run_export(ckpt, tmp_path / "q.onnx", calib="val", overrides=[f"data.root={moved}"], **kw)
    q = report["int8"]
    assert q["eval_split"] == "val" and q["eval_images"] == 2 and 0.0 <= q["miou_int8"] <= 100.0
    assert q["calibration_source"] == "CityscapesDataset split 'val'"
    assert read_onnx_metadata(tmp_path / "q.onnx")["config"]["data"]["root"] == stored_root


def test_export_errors(tmp_path) -> None:
    with pytest.raises(ExportError, match="no such ONNX file"):
        load_onnx_model(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ExportError, match="not a readable ONNX"):
        load_onnx_model(tmp_path / "junk.onnx")
    with pytest.raises(ExportError, match="--calib"):
        run_export("fcn_mobilenetv2", tmp_path / "q.onnx", input_size="96x64", int8=True)
    with pytest.raises(ExportError, match="opset 16"):
        export_onnx(build_model("fcn", backbone="mobilenetv2"), tmp_path / "o.onnx", SIZE, opset=16)
    with pytest.raises(ExportError, match="--calib .*not a directory"):
        from effseg.deploy.quantize import find_calibration_images

        find_calibration_images(tmp_path / "nope")


def test_cli_export(tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert (
        main(["export", "fcn_mobilenetv2", "--input-size", "96x64", "--num-classes", "3", "--out", str(out)])
        == 0
    )
    text = capsys.readouterr().out
    assert "argmax agreement 100.0000%" in text and "BatchNormalization nodes left: 0" in text
    assert out.is_file()
    assert main(["export", "fcn_mobilenetv2", "--input-size", "96by64", "--out", str(out)]) == 2
    assert "--input-size '96by64'" in capsys.readouterr().err
    assert main(["export", "runs/nope.pt", "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_missing_onnx_packages_are_one_line(tmp_path, monkeypatch) -> None:
    """Without onnx / onnxruntime (dependencies), ONNX work stops with one line naming what to install."""
    import sys

    path = tmp_path / "m.onnx"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    want = r"^ONNX files need the onnx package, a dependency of effseg: pip install onnx$"
    with pytest.raises(ExportError, match=want):
        read_onnx_metadata(path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError, match=r"need the onnxruntime package"):
        ort_session(path)
