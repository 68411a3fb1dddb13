"""effseg bench: statistics, timing with a fake clock, CUDA sync, FLOPs, outputs, errors, CLI."""

from __future__ import annotations

import json
from itertools import count

import pytest
import torch
from torch import nn

from effseg.bench import measure as bench
from effseg.bench.measure import bench_models, miou_from_run, parse_runtimes, resolve_model
from effseg.bench.models_table import count_flops
from effseg.bench.pareto import pareto_front
from effseg.bench.report import markdown_table, write_report
from effseg.bench.sysinfo import machine_info, peak_fp32_flops
from effseg.bench.timing import latency_stats, sync_for, time_call, time_callable
from effseg.cli import main
from effseg.errors import BenchError, EffsegError


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: OpenMP spin-waits make 2 threads far slower on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_latency_stats_on_known_timings() -> None:
    s = latency_stats([float(v) for v in range(1, 11)], batch=2)
    assert s["latency_ms_median"] == pytest.approx(5.5)
    assert s["latency_ms_p90"] == pytest.approx(9.1)  # linear interpolation: 9 + 0.1 * (10 - 9)
    assert s["latency_ms_mean"] == pytest.approx(5.5)
    assert (s["latency_ms_min"], s["latency_ms_max"], s["runs"]) == (1.0, 10.0, 10)
    assert s["fps"] == pytest.approx(2 * 1000 / 5.5)
    with pytest.raises(BenchError):
        latency_stats([])


def test_time_callable_with_fake_timer() -> None:
    ticks = iter([0.0, 0.010, 1.0, 1.030, 2.0, 2.020])  # seconds: calls of 10, 30 and 20 ms
    calls = count()

    def fn() -> None:
        next(calls)

    times = time_callable(fn, warmup=2, runs=3, timer=lambda: next(ticks))
    assert times == pytest.approx([10.0, 30.0, 20.0])
    assert next(calls) == 5  # 2 warm-up + 3 timed
    assert latency_stats(times)["latency_ms_median"] == pytest.approx(20.0)


def test_cuda_timing_synchronises(monkeypatch) -> None:
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    sync = sync_for("cuda")
    assert sync is not None and sync_for("cpu") is None
    order = []
    ticks = iter([0.0, 0.005])

    def timer() -> float:
        order.append(("clock", len(synced)))
        return next(ticks)

    ms = time_call(lambda: order.append(("run", len(synced))), sync=sync, timer=timer)
    assert ms == pytest.approx(5.0)
    # synchronised before the first clock read and again before the second
    assert order == [("clock", 1), ("run", 1), ("clock", 2)]


def test_count_flops_matches_hand_count() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False)).eval()
    flops = count_flops(conv, torch.randn(1, 3, 16, 16))
    # 2 FLOPs per multiply-add: 2 * out_channels * in_channels * k * k * H * W
    assert flops["gflops"] == pytest.approx(2 * 8 * 3 * 9 * 16 * 16 / 1e9)


def test_peak_flops_formula() -> None:
    zen = {
        "cpu_vendor": "AuthenticAMD",
        "cpu_family": 25,
        "simd_flags": ["avx2", "avx512f", "fma"],
        "cores": 2,
        "cpu_mhz": 2600.0,
    }
    p = peak_fp32_flops(zen)
    assert p["peak_gflops"] == pytest.approx(2 * 2 * 8 * 2 * 2.6)  # AVX-512 is double-pumped on Zen 4
    intel = {
        "cpu_vendor": "GenuineIntel",
        "cpu_family": 6,
        "simd_flags": ["avx512f", "fma"],
        "cores": 4,
        "cpu_mhz": 3000.0,
    }
    assert peak_fp32_flops(intel)["peak_gflops"] == pytest.approx(4 * 2 * 16 * 2 * 3.0)
    assert "cores x" in p["formula"]
    info = machine_info()
    assert (
        info["cores"] >= 1
        and info["versions"]["torch"] == torch.__version__.split("+")[0]
        or info["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    )


def test_pareto_front() -> None:
    pts = [(10.0, 60.0), (5.0, 50.0), (20.0, 55.0), (30.0, 70.0), (5.0, 40.0)]
    assert pareto_front(pts) == [1, 0, 3]


def test_parse_runtimes_and_errors(tmp_path) -> None:
    assert parse_runtimes("eager, onnxruntime,eager") == ["eager", "onnxruntime"]
    with pytest.raises(BenchError, match="unknown runtime"):
        parse_runtimes("eager,tensorrt")
    with pytest.raises(EffsegError, match="HEAD_BACKBONE"):
        resolve_model("pspnet_resnet19")
    with pytest.raises(EffsegError, match="pidnet_s"):  # the error lists the whole networks too
        resolve_model("pidnet_m")
    with pytest.raises(EffsegError, match="no such file"):
        resolve_model(str(tmp_path / "missing.pt"))
    with pytest.raises(EffsegError, match="no such file"):
        resolve_model(str(tmp_path / "missing.yaml"))
    with pytest.raises(EffsegError, match="input-size"):
        bench_models(["fcn_mobilenetv2"], input_size="64", progress=False)
    with pytest.raises(BenchError, match="--dtype"):
        bench_models(["fcn_mobilenetv2"], input_size="64x32", dtype="int4", progress=False)
    with pytest.raises(BenchError, match="runs"):
        bench_models(["fcn_mobilenetv2"], input_size="64x32", runs=0, progress=False)


def test_resolve_model_name_with_output_stride() -> None:
    bm = resolve_model("aspp_mobilenetv3_small_os16", num_classes=4)
    assert bm.model.config["output_stride"] == 16 and bm.model.config["backbone"] == "mobilenetv3_small"
    assert bm.model.num_classes == 4 and not bm.model.training


def test_miou_from_run(tmp_path) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval.json").write_text(json.dumps({"miou": 0.4321}))
    assert miou_from_run(tmp_path) == pytest.approx(43.21)
    assert miou_from_run(tmp_path / "eval" / "eval.json") == pytest.approx(43.21)
    with pytest.raises(BenchError, match="no such run"):
        miou_from_run(tmp_path / "nope")


def test_bench_small_models_end_to_end(tmp_path) -> None:
    (tmp_path / "run" / "eval").mkdir(parents=True)
    (tmp_path / "run" / "eval" / "eval.json").write_text(json.dumps({"miou": 0.5}))
    report = bench_models(
        ["fcn_mobilenetv2", "lraspp_mobilenetv3_small"],
        input_size="64x32",
        runtimes="eager,channels_last,onnxruntime",
        warmup=1,
        runs=3,
        eval_run=str(tmp_path / "run"),
        num_classes=3,
        progress=False,
    )
    rows = report["results"]
    assert [(r["model"], r["runtime"]) for r in rows] == [
        (m, rt)
        for m in ("fcn_mobilenetv2", "lraspp_mobilenetv3_small")
        for rt in ("eager", "channels_last", "onnxruntime")
    ]
    for r in rows:
        assert "error" not in r, r.get("error")
        assert r["params_m"] > 0 and r["gflops"] > 0 and r["runs"] == 3 and len(r["times_ms"]) == 3
        assert 0 < r["latency_ms_median"] <= r["latency_ms_p90"] <= r["latency_ms_max"]
        assert r["fps"] == pytest.approx(1000 / r["latency_ms_median"])
        assert r["peak_mem_mb"] is not None and r["peak_mem_mb"] >= 0
        assert r["miou"] == pytest.approx(50.0)
        assert r["miou_per_10ms"] == pytest.approx(50.0 / (r["latency_ms_median"] / 10))
        assert r["input_size"] == [32, 64] and r["threads"] == 1
        # CPU time of the call: positive, and bounded by wall time x threads (plus clock granularity)
        assert 0 < r["cpu_ms_median"] <= r["latency_ms_max"] * r["threads"] + 5
        assert r["cpu_time_gflops_per_s"] == pytest.approx(r["gflops"] / (r["cpu_ms_median"] / 1000))
    eager = rows[0]
    assert eager["vs_eager"] == pytest.approx(1.0)
    assert set(eager["stages"]) == {"backbone_ms", "head_ms", "upsample_ms"}
    assert eager["gflops"] == pytest.approx(sum(eager["gflops_stages"].values()), rel=1e-6)
    assert rows[2]["parity"]["argmax_agreement"] >= 0.999
    assert report["machine"]["cores"] >= 1 and "peak_gflops" in report["peak_fp32"]
    assert "1 multiply-add = 2 FLOPs" in report["flops_convention"]

    paths = write_report(report, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["results"][0]["model"] == "fcn_mobilenetv2" and data["settings"]["runs"] == 3
    md = paths["markdown"].read_text()
    assert md.count("\n| fcn_mobilenetv2 |") == 4 and "| backbone | head | final upsample |" in md
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert markdown_table(report) == md


def test_failing_runtime_is_recorded_not_fatal(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this op\nsecond line")

    monkeypatch.setattr(bench, "onnx_runner", broken)
    report = bench_models(
        ["fcn_mobilenetv2"],
        input_size="64x32",
        runtimes="eager,onnxruntime",
        warmup=0,
        runs=2,
        num_classes=3,
        stages=False,
        progress=False,
    )
    eager, ort = report["results"]
    assert "latency_ms_median" in eager and "error" not in eager
    assert ort["error"] == "RuntimeError: no kernel for this op" and "latency_ms_median" not in ort


def test_cli_bench(tmp_path, capsys) -> None:
    out = tmp_path / "b"
    code = main(
        [
            "bench",
            "fcn_mobilenetv2",
            "--input-size",
            "64x32",
            "--runs",
            "2",
            "--warmup",
            "1",
            "--num-classes",
            "3",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert (out / "bench.json").is_file() and (out / "bench.md").is_file() and (out / "pareto.png").is_file()
    assert f"wrote {out / 'bench.json'}" in capsys.readouterr().out
    assert main(["bench", "fcn_mobilenetv2", "--runtime", "eager,tvm", "--out", str(out)]) == 2
    assert "unknown runtime" in capsys.readouterr().err
    assert main(["bench", "fcn_mobilenetv2", "--input-size", "big", "--out", str(out)]) == 2
    assert "--input-size 'big'" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    garbage = tmp_path / "garbage.onnx"  # issue 14: was a protobuf traceback
    garbage.write_bytes(b"\x08\x07garbage, not a protobuf" * 3)
    assert main(["bench", str(garbage), "--runtime", "onnxruntime", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"effseg: error: {garbage}: not a") and err.count("\n") == 1, err


def test_bf16_eager_runs_and_onnxruntime_refuses_it() -> None:
    report = bench_models(
        ["fcn_mobilenetv2"],
        input_size="64x32",
        dtype="bf16",
        runtimes="eager,channels_last",
        warmup=0,
        runs=1,
        num_classes=3,
        progress=False,
    )
    for row in report["results"]:
        assert "error" not in row, row.get("error")
        assert row["dtype"] == "bf16" and row["latency_ms_median"] > 0
    with pytest.raises(BenchError, match="--dtype bf16"):
        bench_models(
            ["fcn_mobilenetv2"], input_size="64x32", dtype="bf16", runtimes="onnxruntime", progress=False
        )


def test_resolve_model_by_shipped_config_name() -> None:
    """`effseg bench cityscapes/lraspp_mbv3`: a shipped config by name, random weights."""
    bm = resolve_model("cityscapes/lraspp_mbv3")
    assert bm.name == "lraspp_mbv3" and bm.onnx_path is None
    assert bm.meta["source"].endswith("cityscapes/lraspp_mbv3.yaml")
    assert bm.model.num_classes == 19 and not bm.model.training
    with pytest.raises(EffsegError, match="near: cityscapes/lraspp_mbv3"):
        resolve_model("cityscapes/lraspp_mbv4")


def test_resolve_model_accepts_whole_network_names() -> None:
    bm = resolve_model("regseg", num_classes=11)
    assert bm.name == "regseg" and bm.meta["model_config"]["name"] == "regseg"
    with torch.no_grad():
        assert bm.model(torch.zeros(1, 3, 64, 64)).shape == (1, 11, 64, 64)


def test_shipped_model_reports_its_eval_miou_not_the_training_best() -> None:
    """The zoo's miou_val (what `effseg eval` measured) labels a shipped model's rows; the
    checkpoint's best_miou (a bf16 validation during training) would disagree with the docs."""
    from effseg.zoo import find_pretrained

    report = bench_models(
        ["camvid-ddrnet23_slim"], input_size="64x64", warmup=0, runs=1, stages=False, progress=False
    )
    (row,) = report["results"]
    expected = find_pretrained("camvid-ddrnet23_slim").miou_val  # None: trained on val, no val figure
    assert row.get("miou") == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(("train_split", "expected"), [("train", 62.5), ("trainval", None)])
def test_a_runs_training_validation_labels_its_rows_unless_it_trained_on_val(
    tmp_path, train_split: str, expected: float | None
) -> None:
    """A checkpoint's best_miou is its mIoU column, unless the run validated on frames it
    trained on (data.train_split trainval, val_split val): that figure measures memory."""
    from effseg.engine.checkpoint import save_checkpoint
    from effseg.models import build_model

    model = build_model("fcn", backbone="mobilenetv3_small", num_classes=3, aux=False)
    data = {"dataset": "camvid", "train_split": train_split, "val_split": "val"}
    path = tmp_path / "last.pt"
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "model_config": model.config,
            "classes": ["road", "car", "sky"],
            "config": {"model": {"name": "fcn"}, "data": data},
            "best_miou": 0.625,
        },
    )
    report = bench_models([str(path)], input_size="32x32", warmup=0, runs=1, stages=False, progress=False)
    (row,) = report["results"]
    assert row.get("miou") == (pytest.approx(expected) if expected is not None else None)
