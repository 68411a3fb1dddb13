"""Cityscapes in its official layout, with the 19 train classes of cityscapesScripts.

Layout (``ROOT`` = the folder holding ``leftImg8bit`` and ``gtFine``)::

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png        (label ids 0..33)
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (train ids, used when present)

The label table is the one of cityscapesScripts ``helpers/labels.py``: 19 label ids
have a train id, every other id (and -1, the license plate) is ignored (255).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from effseg.data.base import IGNORE_INDEX, SegmentationDataset, Transform, dataset_root
from effseg.errors import DataError
from effseg.size import Size


class CityscapesLabel(NamedTuple):
    name: str
    id: int
    train_id: int
    category: str
    color: tuple[int, int, int]


#: cityscapesScripts helpers/labels.py, all 35 entries (name, id, trainId, category, color).
LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel("unlabeled", 0, 255, "void", (0, 0, 0)),
    CityscapesLabel("ego vehicle", 1, 255, "void", (0, 0, 0)),
    CityscapesLabel("rectification border", 2, 255, "void", (0, 0, 0)),
    CityscapesLabel("out of roi", 3, 255, "void", (0, 0, 0)),
    CityscapesLabel("static", 4, 255, "void", (0, 0, 0)),
    CityscapesLabel("dynamic", 5, 255, "void", (111, 74, 0)),
    CityscapesLabel("ground", 6, 255, "void", (81, 0, 81)),
    CityscapesLabel("road", 7, 0, "flat", (128, 64, 128)),
    CityscapesLabel("sidewalk", 8, 1, "flat", (244, 35, 232)),
    CityscapesLabel("parking", 9, 255, "flat", (250, 170, 160)),
    CityscapesLabel("rail track", 10, 255, "flat", (230, 150, 140)),
    CityscapesLabel("building", 11, 2, "construction", (70, 70, 70)),
    CityscapesLabel("wall", 12, 3, "construction", (102, 102, 156)),
    CityscapesLabel("fence", 13, 4, "construction", (190, 153, 153)),
    CityscapesLabel("guard rail", 14, 255, "construction", (180, 165, 180)),
    CityscapesLabel("bridge", 15, 255, "construction", (150, 100, 100)),
    CityscapesLabel("tunnel", 16, 255, "construction", (150, 120, 90)),
    CityscapesLabel("pole", 17, 5, "object", (153, 153, 153)),
    CityscapesLabel("polegroup", 18, 255, "object", (153, 153, 153)),
    CityscapesLabel("traffic light", 19, 6, "object", (250, 170, 30)),
    CityscapesLabel("traffic sign", 20, 7, "object", (220, 220, 0)),
    CityscapesLabel("vegetation", 21, 8, "nature", (107, 142, 35)),
    CityscapesLabel("terrain", 22, 9, "nature", (152, 251, 152)),
    CityscapesLabel("sky", 23, 10, "sky", (70, 130, 180)),
    CityscapesLabel("person", 24, 11, "human", (220, 20, 60)),
    CityscapesLabel("rider", 25, 12, "human", (255, 0, 0)),
    CityscapesLabel("car", 26, 13, "vehicle", (0, 0, 142)),
    CityscapesLabel("truck", 27, 14, "vehicle", (0, 0, 70)),
    CityscapesLabel("bus", 28, 15, "vehicle", (0, 60, 100)),
    CityscapesLabel("caravan", 29, 255, "vehicle", (0, 0, 90)),
    CityscapesLabel("trailer", 30, 255, "vehicle", (0, 0, 110)),
    CityscapesLabel("train", 31, 16, "vehicle", (0, 80, 100)),
    CityscapesLabel("motorcycle", 32, 17, "vehicle", (0, 0, 230)),
    CityscapesLabel("bicycle", 33, 18, "vehicle", (119, 11, 32)),
    CityscapesLabel("license plate", -1, -1, "vehicle", (0, 0, 142)),
)

_TRAIN = sorted((lab for lab in LABELS if 0 <= lab.train_id < 255), key=lambda lab: lab.train_id)
#: The 19 train classes, index = train id.
CITYSCAPES_CLASSES: list[str] = [lab.name for lab in _TRAIN]
#: ``uint8 (19, 3)`` RGB colours of the train classes.
CITYSCAPES_PALETTE: np.ndarray = np.array([lab.color for lab in _TRAIN], dtype=np.uint8)
#: label id of each train id (``int (19,)``).
TRAIN_ID_TO_LABEL_ID: np.ndarray = np.array([lab.id for lab in _TRAIN], dtype=np.int64)

# Look-up table over uint8 label-id values.  Ids 0..33 map per the table; 255 is how the
# license plate's -1 reads back from a uint8 PNG, so it is ignored too; everything else is
# not a Cityscapes label id and is marked _INVALID so it can be reported.
_INVALID = 254
_ID_LUT = np.full(256, _INVALID, dtype=np.uint8)
for _lab in LABELS:
    _ID_LUT[_lab.id % 256] = 255 if _lab.train_id < 0 else _lab.train_id
_VALID_IDS = "0..33 (and -1/255 = license plate)"


def label_ids_to_train_ids(label_ids: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """Cityscapes label ids ``(H, W)`` (0..33, -1) -> train ids ``uint8 (H, W)`` (0..18, 255 = ignore).

    Raises :class:`DataError` naming ``path`` (if given) for values that are not label ids.
    """
    arr = np.asarray(label_ids)
    if arr.dtype != np.uint8:
        if ((arr < -1) | (arr > 255)).any():
            bad = np.unique(arr[(arr < -1) | (arr > 255)])[:8].tolist()
            raise DataError(f"{path or 'label'}: values {bad} are not Cityscapes label ids {_VALID_IDS}")
        arr = (arr.astype(np.int64) % 256).astype(np.uint8)  # -1 -> 255
    out = _ID_LUT[arr]
    invalid = out == _INVALID
    if invalid.any():
        bad = np.unique(arr[invalid])[:8].tolist()
        raise DataError(f"{path or 'label'}: values {bad} are not Cityscapes label ids {_VALID_IDS}")
    return out


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Train ids ``(H, W)`` (0..18, 255) -> label ids ``uint8 (H, W)`` for the test server.

    Ignore (255) becomes label id 0 (``unlabeled``), which the benchmark does not score.
    """
    arr = np.asarray(train_ids)
    if ((arr < 0) | ((arr > 18) & (arr != 255))).any():
        bad = np.unique(arr[(arr < 0) | ((arr > 18) & (arr != 255))])[:8].tolist()
        raise DataError(f"train ids {bad} are outside 0..18 (and 255 = ignore)")
    lut = np.zeros(256, dtype=np.uint8)
    lut[: len(TRAIN_ID_TO_LABEL_ID)] = TRAIN_ID_TO_LABEL_ID
    return lut[arr.astype(np.uint8)]


IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
LAYOUT_HINT = (
    "expected the Cityscapes layout leftImg8bit/<split>/<city>/*_leftImg8bit.png with "
    "gtFine/<split>/<city>/*_gtFine_labelIds.png (or _gtFine_labelTrainIds.png)"
)


def _label_for(root: Path, split: str, city: str, prefix: str) -> Path | None:
    folder = root / "gtFine" / split / city
    for suffix in (TRAIN_ID_SUFFIX, LABEL_ID_SUFFIX):
        path = folder / f"{prefix}{suffix}"
        if path.is_file():
            return path
    return None


def _read_split_list(root: Path, split: str, split_file: Path) -> list[Path]:
    """Image paths named by a split list: one entry per line, first column used.

    An entry is a path to the image (absolute, relative to ROOT or to ROOT/leftImg8bit/<split>),
    or an id ``<city>_<seq>_<frame>`` / ``<city>/<city>_<seq>_<frame>``.
    """
    if not split_file.is_file():
        raise DataError(f"split list {split_file}: file not found")
    images: list[Path] = []
    base = root / "leftImg8bit" / split
    for lineno, line in enumerate(split_file.read_text().splitlines(), 1):
        entry = line.split("#", 1)[0].strip().split()
        if not entry:
            continue
        name = entry[0]
        if not name.endswith(".png"):
            stem = Path(name).name
            city = stem.split("_")[0]
            name = f"{city}/{stem}{IMAGE_SUFFIX}"
        candidates = [Path(name), root / name, base / name]
        found = next((p for p in candidates if p.is_absolute() and p.is_file()), None)
        if found is None:
            raise DataError(
                f"split list {split_file} line {lineno}: {entry[0]!r} names no image "
                f"(looked for {base / name})"
            )
        images.append(found)
    return images


def find_cityscapes_samples(
    root: str | os.PathLike, split: str, split_file: str | os.PathLike | None = None
) -> list[tuple[Path, Path]]:
    """``(image, label)`` pairs of a Cityscapes split, sorted; raises DataError for a broken layout."""
    root = dataset_root(root, "Cityscapes", LAYOUT_HINT)
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DataError(f"Cityscapes root {root} has no folder leftImg8bit/{split}; {LAYOUT_HINT}")
    if not (root / "gtFine" / split).is_dir():
        raise DataError(f"Cityscapes root {root} has no folder gtFine/{split}; {LAYOUT_HINT}")
    if split_file is not None:
        images = _read_split_list(root.resolve(), split, Path(split_file).expanduser().resolve())
        if not images:
            raise DataError(f"split list {split_file} is empty")
    else:
        images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    samples = []
    for image in images:
        prefix = image.name[: -len(IMAGE_SUFFIX)] if image.name.endswith(IMAGE_SUFFIX) else image.stem
        label = _label_for(root, split, image.parent.name, prefix)
        if label is None:
            raise DataError(
                f"image {image} has no label: expected gtFine/{split}/{image.parent.name}/"
                f"{prefix}{LABEL_ID_SUFFIX} (or {TRAIN_ID_SUFFIX}) under {root}"
            )
        samples.append((image, label))
    if split_file is None:
        # every label must have its image
        have = {image.name[: -len(IMAGE_SUFFIX)] for image in images}
        for label in sorted((root / "gtFine" / split).glob("*/*_gtFine_label*Ids.png")):
            prefix = label.name.split("_gtFine_")[0]
            if prefix not in have:
                raise DataError(
                    f"label {label} has no image: expected leftImg8bit/{split}/{label.parent.name}/"
                    f"{prefix}{IMAGE_SUFFIX} under {root}"
                )
    if not samples:
        raise DataError(
            f"Cityscapes split {split!r} under {root} is empty: no *{IMAGE_SUFFIX} in {image_dir}"
        )
    return samples


class CityscapesDataset(SegmentationDataset):
    """Cityscapes (fine annotations), 19 train classes.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test`` (any sub-folder name works).
        transform: joint transform ``(image uint8 HWC, label uint8 HW) -> (tensor, tensor)``;
            default: normalise only.
        split_file: optional list selecting a subset (see :func:`_read_split_list`).
        resize: optional ``"WIDTHxHEIGHT"`` text (``"1024x512"``) or a :class:`~effseg.size.Size`:
            bilinear image, nearest label.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Transform | None = None,
        split_file: str | os.PathLike | None = None,
        resize: str | Size | None = None,
    ) -> None:
        root = Path(root).expanduser()
        samples = find_cityscapes_samples(root, split, split_file)
        super().__init__(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, samples, transform, resize, root, split)

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if path.name.endswith(TRAIN_ID_SUFFIX):
            return super().decode_label(raw, path)
        return label_ids_to_train_ids(raw, path)


__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "LABELS",
    "CityscapesDataset",
    "label_ids_to_train_ids",
    "train_ids_to_label_ids",
    "IGNORE_INDEX",
]
