"""Real street photos through the shipped CamVid model: the first part of ``effseg demo``.

``run_street_demo(out_dir)`` segments the sample photos that ship with effseg
(:func:`effseg.sample_images`, CamVid val) with a shipped model (:mod:`effseg.zoo`), writes
one picture per photo (photo | overlay with a colour legend) and a grid of all of them (each
written atomically, :mod:`effseg.fileio`), and measures the model's latency per runtime at the
photos' size (batch 1, after warm-up, by :func:`effseg.bench.measure.bench_models`). Nothing is
downloaded and nothing is trained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DEFAULT_MODEL = "camvid-ddrnet23_slim"


@dataclass
class StreetResult:
    """What the street part of the demo produced (paths relative to nothing: absolute)."""

    model: str
    miou_val: float | None  # the shipped model's recorded CamVid val mIoU (%)
    pictures: list[Path]  # one photo | overlay + legend per sample photo
    grid: Path  # every picture stacked
    latency: list[dict[str, Any]] = field(default_factory=list)  # runtime, median_ms, fps, error
    predict_s: float = 0.0  # wall time of predicting every photo (eager, one at a time)


def _side_by_side(photo: np.ndarray, overlay: np.ndarray) -> np.ndarray:
    """``photo`` (H, W, 3) and ``overlay`` (H', W, 3) side by side, the shorter padded white."""
    h = max(photo.shape[0], overlay.shape[0])
    pad = [np.pad(a, ((0, h - a.shape[0]), (0, 0), (0, 0)), constant_values=255) for a in (photo, overlay)]
    gap = np.full((h, 8, 3), 255, np.uint8)
    return np.concatenate([pad[0], gap, pad[1]], axis=1)


def run_street_demo(
    out_dir: str | Path,
    model: str = DEFAULT_MODEL,
    runtimes: str | None = None,
    runs: int = 5,
    measure: bool = True,
) -> StreetResult:
    """Segment the shipped sample photos with ``model``; write pictures to ``out_dir``.

    With ``measure``, latency per runtime at the photos' size (480x360) is measured over
    ``runs`` timed calls after 2 warm-up calls; a runtime that fails is recorded with its error.
    ``runtimes`` (comma list): default eager and onnxruntime, plus openvino where it is installed.
    """
    if runtimes is None:
        from effseg.pipeline.engines import openvino_version

        runtimes = "eager,onnxruntime" + (",openvino" if openvino_version() else "")
    import effseg
    from effseg.data.visualize import add_legend, overlay
    from effseg.fileio import atomic_path, make_dir

    out = make_dir(out_dir, "the street pictures")
    predictor = effseg.load(model)
    pictures, panels = [], []
    t0 = time.perf_counter()
    for photo_path in effseg.sample_images():
        photo = np.asarray(Image.open(photo_path).convert("RGB"))
        labels = predictor.predict(photo)
        over = overlay(photo, predictor.colorize(labels), alpha=0.5)
        panel = _side_by_side(photo, add_legend(over, predictor.classes, predictor.palette, labels))
        path = out / f"street_{photo_path.stem}.png"
        with atomic_path(path, "a street picture") as tmp:  # a full disk: one line, no half a PNG
            Image.fromarray(panel).save(tmp)
        pictures.append(path)
        panels.append(panel)
    predict_s = time.perf_counter() - t0
    width = max(p.shape[1] for p in panels)
    grid = np.concatenate(
        [np.pad(p, ((0, 8), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
    )
    grid_path = out / "street_grid.png"
    with atomic_path(grid_path, "the street pictures' grid") as tmp:
        Image.fromarray(grid).save(tmp)

    from effseg.zoo import find_pretrained

    entry = find_pretrained(model)
    result = StreetResult(model, entry.miou_val, pictures, grid_path, predict_s=predict_s)
    if measure:
        result.latency = street_latency(model, runtimes, runs, out / "bench")
    return result


def street_latency(model: str, runtimes: str, runs: int, work_dir: Path) -> list[dict[str, Any]]:
    """Model-only latency at 480x360, batch 1, per runtime: ``[{runtime, median_ms, fps, error}]``."""
    from effseg.bench.measure import bench_models

    report = bench_models(
        [model], input_size="480x360", runtimes=runtimes, warmup=2, runs=runs,
        num_classes=11, work_dir=work_dir, progress=False, stages=False,
    )  # fmt: skip
    return [
        {
            "runtime": row["runtime"],
            "median_ms": row.get("latency_ms_median"),
            "fps": row.get("fps"),
            "error": row.get("error"),
        }
        for row in report["results"]
    ]
