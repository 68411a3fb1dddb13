"""The report writer, and `effseg demo --quick` end to end (data -> train -> eval -> bench -> report)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import effseg
from effseg.app.demo_report import ModelResult, Sample, pareto_front, referenced_files, write_report
from effseg.cli import main


def test_pareto_front_by_hand() -> None:
    # (latency, mIoU): b dominates d (faster and better); a is fastest; c is best.
    pts = [(10.0, 50.0), (20.0, 60.0), (40.0, 70.0), (25.0, 55.0), (30.0, 60.0)]
    assert pareto_front(pts) == [0, 1, 2]


def test_write_report_tables_and_self_contained_html(tmp_path: Path) -> None:
    classes = ["road", "car", "sky"]
    palette = np.array([[128, 64, 128], [0, 0, 142], [70, 130, 180]], np.uint8)
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    results = [
        ModelResult(
            "fast",
            params_m=2.0,
            gflops=1.5,
            latency_ms=20.0,
            miou=40.0,
            pixel_acc=70.0,
            iou_per_class=[60.0, 20.0, None],
            confusion=cm,
        ),
        ModelResult(
            "slow",
            params_m=10.0,
            gflops=9.0,
            latency_ms=80.0,
            miou=60.0,
            pixel_acc=80.0,
            iou_per_class=[70.0, 50.0, None],
            confusion=cm,
        ),
    ]
    assert results[0].miou_per_10ms == pytest.approx(20.0)  # 40 / (20 ms / 10)
    rng = np.random.default_rng(0)
    samples = [
        Sample(
            "s",
            rng.integers(0, 256, (16, 32, 3), dtype=np.uint8),
            rng.integers(0, 3, (16, 32)).astype(np.uint8),
            {"fast": np.zeros((16, 32), np.uint8), "slow": np.ones((16, 32), np.uint8)},
        )
    ]
    paths = write_report(
        tmp_path / "r",
        results,
        classes=classes,
        palette=palette,
        samples=samples,
        notes=["a note"],
        settings={"threads": 2},
    )
    for key in ("md", "html", "pareto", "samples", "confusion_fast", "confusion_slow"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    md = paths["md"].read_text()
    assert "| fast | 2.00 | 1.50 | 20.0 | – | 40.00 | 70.00 | 20.00 |" in md
    assert "| sky | – | – |" in md  # an absent class is not scored
    for ref in referenced_files(paths["md"]):
        assert (paths["md"].parent / ref).is_file(), ref
    html = paths["html"].read_text()
    assert referenced_files(paths["html"]) == []  # self-contained: images are data: URIs
    assert len(re.findall(r"src='data:image/png;base64,", html)) == 4  # pareto, grid, 2 confusions
    assert "<td>fast</td>" in html and "a note" in html


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    report = out / "report"
    assert str(report / "report.html") in stdout.replace("\n", "")
    for name in ("report.md", "report.html", "results.json", "pareto.png", "samples.png"):
        assert (report / name).is_file(), name
    # every file the markdown references exists; the HTML references no file at all
    refs = referenced_files(report / "report.md")
    assert "samples.png" in refs and "pareto.png" in refs
    assert all((report / r).is_file() for r in refs)
    assert referenced_files(report / "report.html") == []

    results = json.loads((report / "results.json").read_text())
    models = {m["name"]: m for m in results["models"]}
    assert set(models) == {"PSPNet-MobileNetV2", "PSPNet-ResNet18"}
    for m in models.values():
        assert m["params_m"] > 1 and m["gflops"] > 0 and m["latency_ms"] > 0
        assert 0 <= m["miou"] <= 100 and 0 <= m["pixel_acc"] <= 100
        assert m["name"] in stdout
    # Above chance: the better model beats always predicting the most frequent class, and its
    # mIoU beats a uniform guess over the 19 classes.
    best = max(models.values(), key=lambda m: m["pixel_acc"])
    assert best["pixel_acc"] > results["majority_pixel_acc"] + 1.0, (best, results["majority_pixel_acc"])
    assert best["miou"] > 100 / 19

    # the trained runs load through the public API and predict at the input's size
    predictor = effseg.load(out / "pspnet_r18")
    assert predictor.num_classes == 19 and predictor.classes[0] == "road"
    assert predictor.predict(np.zeros((20, 30, 3), np.uint8)).shape == (20, 30)


def test_demo_step_timing_uses_the_trainers_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """measure_step_seconds scores the model's declared loss terms with the trainer's criterion."""
    from effseg.app.demo import measure_step_seconds
    from effseg.config import config_from_dict
    from effseg.engine import losses

    cfg = config_from_dict(
        {
            "model": {"name": "fcn", "backbone": "mobilenetv3_small", "num_classes": 3, "aux": True},
            "data": {"crop_size": "32x32"},
            "train": {"batch_size": 2, "aux_weight": 0.7},
        }
    )
    calls: list[tuple[object, dict]] = []
    scored: list[set[str]] = []
    real = losses.build_criterion

    def spy(train_cfg, loss_terms, *args, **kwargs):
        calls.append((train_cfg, dict(loss_terms)))
        criterion = real(train_cfg, loss_terms, *args, **kwargs)
        forward = criterion.forward

        def scoring(outputs, target):
            scored.append(set(outputs))
            return forward(outputs, target)

        criterion.forward = scoring
        return criterion

    monkeypatch.setattr(losses, "build_criterion", spy)
    assert measure_step_seconds(cfg, repeats=2) > 0
    assert len(calls) == 1 and calls[0][0] is cfg.train and set(calls[0][1]) == {"out", "aux"}
    assert scored == [{"out", "aux"}] * 3  # one warm-up and two timed steps, every declared output
