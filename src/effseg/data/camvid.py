"""CamVid in SegNet's 11-class layout (480x360 images)::

    ROOT/train/*.png|jpg   ROOT/trainannot/*.png
    ROOT/val/*.png     ROOT/valannot/*.png
    ROOT/test/*.png    ROOT/testannot/*.png

Annotations hold class ids 0..10; 11 (``Unlabelled``, void) maps to 255 (ignore).
Class names and colours are those of the SegNet tutorial (``Scripts/test_segmentation_camvid.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from effseg.data.base import IGNORE_INDEX, IMAGE_SUFFIXES, SegmentationDataset, Transform, dataset_root
from effseg.errors import DataError
from effseg.size import Size

CAMVID_CLASSES: list[str] = [
    "sky", "building", "pole", "road", "pavement", "tree",
    "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
]  # fmt: skip
CAMVID_PALETTE: np.ndarray = np.array(
    [
        [128, 128, 128],  # sky
        [128, 0, 0],  # building
        [192, 192, 128],  # pole
        [128, 64, 128],  # road
        [60, 40, 222],  # pavement
        [128, 128, 0],  # tree
        [192, 128, 128],  # sign symbol
        [64, 64, 128],  # fence
        [64, 0, 128],  # car
        [64, 64, 0],  # pedestrian
        [0, 128, 192],  # bicyclist
    ],
    dtype=np.uint8,
)
CAMVID_VOID = 11
LAYOUT_HINT = "expected the SegNet CamVid layout <split>/*.png with <split>annot/*.png (train, val, test)"


def _files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def match_by_stem(image_dir: Path, label_dir: Path) -> list[tuple[Path, Path]]:
    """Pair ``image_dir/<stem>.*`` with ``label_dir/<stem>.*``; an unpaired file is a DataError."""
    images, labels = _files(image_dir), _files(label_dir)
    for stem, path in images.items():
        if stem not in labels:
            raise DataError(f"image {path} has no label: expected {label_dir / stem}.png")
    for stem, path in labels.items():
        if stem not in images:
            raise DataError(f"label {path} has no image: expected {image_dir / stem}.png (or .jpg)")
    return [(images[s], labels[s]) for s in sorted(images)]


class CamVidDataset(SegmentationDataset):
    """CamVid, SegNet's 11 classes; label 11 (void) -> 255.

    Args:
        root: folder holding ``train/ trainannot/ val/ valannot/ test/ testannot/``.
        split: ``train``, ``val``, ``test`` (or ``trainval``: both).
        resize: optional ``"WIDTHxHEIGHT"`` text such as ``"480x360"`` or a :class:`~effseg.size.Size`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Transform | None = None,
        resize: str | Size | None = None,
    ) -> None:
        root = dataset_root(root, "CamVid", LAYOUT_HINT)
        samples: list[tuple[Path, Path]] = []
        for part in ("train", "val") if split == "trainval" else (split,):
            image_dir, label_dir = root / part, root / f"{part}annot"
            for folder in (image_dir, label_dir):
                if not folder.is_dir():
                    raise DataError(f"CamVid root {root} has no folder {folder.name}/; {LAYOUT_HINT}")
            samples += match_by_stem(image_dir, label_dir)
        if not samples:
            raise DataError(f"CamVid split {split!r} under {root} is empty: no images in {root / split}")
        super().__init__(CAMVID_CLASSES, CAMVID_PALETTE, samples, transform, resize, root, split)

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        bad = raw > CAMVID_VOID
        if raw.dtype.kind == "i":
            bad |= raw < 0
        if bad.any():
            values = np.unique(raw[bad])[:8].tolist()
            raise DataError(f"{path}: label values {values} are outside CamVid's 0..10 (and 11 = void)")
        out = raw.astype(np.uint8)
        out[out == CAMVID_VOID] = IGNORE_INDEX
        return out
