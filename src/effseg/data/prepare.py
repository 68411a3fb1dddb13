"""Downscaled copy of Cityscapes so training never decodes 2048x1024 PNGs.

The copy keeps the official layout; labels are written as train ids
(``*_gtFine_labelTrainIds.png``), which :class:`~effseg.data.cityscapes.CityscapesDataset`
prefers.  Files are written atomically (temporary file in the same folder, then
``os.replace``) and existing outputs are skipped, so an interrupted run resumes where
it stopped and never leaves a half-written PNG under its final name.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from effseg.data.base import check_same_size, check_train_ids, read_image, read_label, run_parallel
from effseg.data.cityscapes import (
    IMAGE_SUFFIX,
    LAYOUT_HINT,
    TRAIN_ID_SUFFIX,
    find_cityscapes_samples,
    label_ids_to_train_ids,
)
from effseg.errors import DataError
from effseg.fileio import atomic_write_bytes


def write_png_atomic(path: Path, array: np.ndarray) -> None:
    """Encode ``array`` (RGB ``(H, W, 3)`` or single channel ``(H, W)``) to ``path`` atomically."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise DataError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes(), "a prepared image")  # effseg.fileio: the one helper


def _convert(job: tuple[str, str, str, str, float]) -> bool:
    """Downscale one pair; returns False when both outputs already existed."""
    image_path, label_path, out_image, out_label = (Path(p) for p in job[:4])
    scale = job[4]
    if out_image.is_file() and out_label.is_file():
        return False
    image = read_image(image_path)
    raw = read_label(label_path)
    check_same_size(image, raw, image_path, label_path)
    if label_path.name.endswith(TRAIN_ID_SUFFIX):
        label = check_train_ids(raw, 19, label_path)
    else:
        label = label_ids_to_train_ids(raw, label_path)
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # INTER_AREA for the image: the proper anti-aliased filter for downscaling; labels nearest.
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    # label first: the image is what marks a pair as present for the loader
    write_png_atomic(out_label, label)
    write_png_atomic(out_image, image)
    return True


def prepare_cityscapes(
    root: str | os.PathLike,
    out: str | os.PathLike,
    scale: float = 0.5,
    splits: list[str] | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, int]:
    """Write a copy of Cityscapes at ``scale`` into ``out``; returns ``{"written", "skipped"}`` counts."""
    root, out = Path(root).expanduser(), Path(out).expanduser()
    if not 0 < scale <= 4:
        raise DataError(f"--scale {scale}: expected a factor in (0, 4], e.g. 0.5 for 2048x1024 -> 1024x512")
    if not (root / "leftImg8bit").is_dir():
        raise DataError(f"Cityscapes root {root} has no folder leftImg8bit; {LAYOUT_HINT}")
    if root.resolve() == out.resolve():
        raise DataError(f"--out {out} is the input root; choose another folder")
    if splits is None:
        splits = sorted(p.name for p in (root / "leftImg8bit").iterdir() if p.is_dir())
    jobs = []
    for split in splits:
        for image, label in find_cityscapes_samples(root, split):
            prefix = image.name[: -len(IMAGE_SUFFIX)]
            city = image.parent.name
            jobs.append(
                (
                    str(image),
                    str(label),
                    str(out / "leftImg8bit" / split / city / image.name),
                    str(out / "gtFine" / split / city / f"{prefix}{TRAIN_ID_SUFFIX}"),
                    float(scale),
                )
            )
    if workers is None:
        workers = min(os.cpu_count() or 1, 16)
    results = run_parallel(_convert, jobs, workers, f"prepare-cityscapes x{scale}" if progress else None)
    written = sum(bool(r) for r in results)
    return {"written": written, "skipped": len(results) - written}
