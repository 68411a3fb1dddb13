"""Your own data: ``images/`` and ``masks/`` matched by file stem, plus ``classes.yaml``.

Layout::

    ROOT/classes.yaml
    ROOT/images/[<split>/]<stem>.png|jpg|...
    ROOT/masks/[<split>/]<stem>.png          (class ids 0..C-1, or `ignore` for void)

``classes.yaml``::

    names: [background, road, car]        # required; index = class id in the masks
    colors: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]   # optional RGB per class
    ignore: 255                           # optional: mask value meaning "ignore" (default 255)

Splits: ``images/<split>/`` sub-folders when they exist, else a ``<split>.txt`` list of
stems in ROOT, else split ``all`` (the whole folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import yaml

from effseg.data.base import IGNORE_INDEX, SegmentationDataset, Transform, dataset_root, values_outside
from effseg.data.camvid import match_by_stem
from effseg.errors import DataError
from effseg.size import Size

LAYOUT_HINT = "expected ROOT/images/ and ROOT/masks/ (files matched by stem) and ROOT/classes.yaml"


def load_classes(path: Path) -> tuple[list[str], np.ndarray, int]:
    """Read ``classes.yaml`` -> ``(names, palette uint8 (C, 3), ignore value)``."""
    if not path.is_file():
        raise DataError(f"{path}: classes file not found; {LAYOUT_HINT} (keys: names, colors, ignore)")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DataError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise DataError(f"{path}: expected a mapping with keys names, colors, ignore")
    unknown = sorted(set(spec) - {"names", "colors", "ignore"})
    if unknown:
        raise DataError(f"{path}: unknown key {unknown[0]!r}; expected names, colors, ignore")
    names = spec.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: 'names' must be a non-empty list of class names")
    if len(names) > 255:
        raise DataError(f"{path}: {len(names)} classes; at most 255 fit in 8-bit masks")
    colors = spec.get("colors")
    if colors is None:
        import matplotlib

        cmap = matplotlib.colormaps["tab20"]
        palette = np.array([[int(255 * c) for c in cmap(i % 20)[:3]] for i in range(len(names))], np.uint8)
    else:
        try:
            palette = np.array(colors, dtype=np.int64)
        except (TypeError, ValueError):
            raise DataError(f"{path}: 'colors' must be a list of [R, G, B] triples") from None
        if palette.shape != (len(names), 3) or palette.min() < 0 or palette.max() > 255:
            raise DataError(
                f"{path}: 'colors' must hold {len(names)} [R, G, B] triples of 0..255 (one per name), "
                f"got shape {tuple(palette.shape)}"
            )
        palette = palette.astype(np.uint8)
    ignore = spec.get("ignore", IGNORE_INDEX)
    if isinstance(ignore, bool) or not isinstance(ignore, int) or not 0 <= ignore <= 255:
        raise DataError(f"{path}: 'ignore' must be a mask value 0..255, got {ignore!r}")
    if ignore < len(names):
        raise DataError(f"{path}: 'ignore' value {ignore} is also class {names[ignore]!r}")
    return names, palette, ignore


class FolderDataset(SegmentationDataset):
    """Images and index masks matched by stem, with classes from ``classes.yaml``.

    Args:
        root: dataset folder.
        split: sub-folder name, ``<split>.txt`` stem list, or ``all``.
        classes_file: default ``ROOT/classes.yaml``.
        resize: optional ``"WIDTHxHEIGHT"`` text or a :class:`~effseg.size.Size`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "all",
        transform: Transform | None = None,
        resize: str | Size | None = None,
        classes_file: str | os.PathLike | None = None,
    ) -> None:
        root = dataset_root(root, "folder dataset", LAYOUT_HINT)
        for name in ("images", "masks"):
            if not (root / name).is_dir():
                raise DataError(f"folder dataset root {root} has no {name}/ folder; {LAYOUT_HINT}")
        names, palette, self.mask_ignore = load_classes(
            Path(classes_file) if classes_file else root / "classes.yaml"
        )
        image_dir, mask_dir = root / "images", root / "masks"
        list_file = root / f"{split}.txt"
        if (image_dir / split).is_dir():
            if not (mask_dir / split).is_dir():
                raise DataError(f"{image_dir / split} has no matching mask folder {mask_dir / split}")
            samples = match_by_stem(image_dir / split, mask_dir / split)
        elif list_file.is_file():
            pairs = {img.stem: (img, lab) for img, lab in match_by_stem(image_dir, mask_dir)}
            samples = []
            for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
                stem = line.strip()
                if not stem or stem.startswith("#"):
                    continue
                stem = Path(stem).stem
                if stem not in pairs:
                    raise DataError(
                        f"split list {list_file} line {lineno}: no image/mask pair named {stem!r}"
                    )
                samples.append(pairs[stem])
        elif split == "all":
            samples = match_by_stem(image_dir, mask_dir)
        else:
            raise DataError(
                f"folder dataset {root}: no split {split!r} (no images/{split}/ folder, no {split}.txt); "
                "use split 'all' for every image"
            )
        if not samples:
            raise DataError(f"folder dataset {root}: split {split!r} is empty (no images found)")
        super().__init__(names, palette, samples, transform, resize, root, split)

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        values = values_outside(raw, self.num_classes, self.mask_ignore)
        if values:
            raise DataError(
                f"{path}: mask values {values} are outside the classes 0..{self.num_classes - 1} "
                f"(and {self.mask_ignore} = ignore) of classes.yaml"
            )
        out = raw.astype(np.uint8)
        if self.mask_ignore != IGNORE_INDEX:
            out[raw == self.mask_ignore] = IGNORE_INDEX
        return out
