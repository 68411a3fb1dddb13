"""Common dataset base: file decoding, validation and the ``(image, label)`` contract.

Every effseg dataset is a :class:`torch.utils.data.Dataset` of ``samples`` (image path,
label path) pairs.  ``load_raw(i)`` returns the decoded uint8 arrays with labels already
converted to train ids (``0..C-1``, ``255`` = ignore); ``__getitem__`` applies the joint
transform (default: normalise only) and returns tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from effseg.data.visualize import colorize  # noqa: F401  (re-exported: effseg.data.colorize)
from effseg.errors import DataError

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

Transform = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


def _open(path: Path) -> Image.Image:
    """Open and fully decode an image file; any decoding problem becomes a one-line DataError."""
    try:
        img = Image.open(path)
        img.load()  # decode now: a truncated PNG fails here, not later in a worker
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot decode image ({msg}); the file is corrupt or truncated") from None
    return img


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to ``uint8 (H, W, 3)`` RGB."""
    img = _open(Path(path))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Decode a single-channel label PNG to an integer array ``(H, W)`` of its raw values.

    ``L``, ``P`` (palette index) and ``1`` (bilevel, 0/1) images give uint8; 16/32-bit images give int32 so
    that out-of-range values are reported, not wrapped.
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("L", "P"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode == "1":  # bilevel masks: 0 / 1
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img).astype(np.int32)
    raise DataError(
        f"{path}: label image has mode {img.mode!r} ({len(img.getbands())} channels); "
        "expected a single-channel PNG of class ids (mode L, P or I;16)"
    )


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path) -> None:
    if image.shape[:2] != label.shape[:2]:
        ih, iw = image.shape[:2]
        lh, lw = label.shape[:2]
        raise DataError(
            f"image {image_path} is {iw}x{ih} but its label {label_path} is {lw}x{lh} (WxH); they must match"
        )


def check_train_ids(label: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """Raise unless every value is a train id ``0..num_classes-1`` or 255; return it as uint8."""
    bad = (label >= num_classes) & (label != IGNORE_INDEX)
    if label.dtype.kind == "i":
        bad |= label < 0
    if bad.any():
        values = np.unique(label[bad])[:8].tolist()
        raise DataError(
            f"{path}: label values {values} are outside the class range 0..{num_classes - 1} "
            f"(and {IGNORE_INDEX} = ignore)"
        )
    return label.astype(np.uint8, copy=False)


def resize_pair(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size = (W, H)``: bilinear for the image, nearest neighbour for the label."""
    w, h = size
    if image.shape[1] == w and image.shape[0] == h:
        return image, label
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, label


def parse_size(size: str | Sequence[int] | None, what: str = "size") -> tuple[int, int] | None:
    """``"1024x512"`` or ``(1024, 512)`` -> ``(W, H)``; ``None`` stays ``None``."""
    if size is None:
        return None
    try:
        if isinstance(size, str):
            w, h = (int(v) for v in size.lower().split("x"))
        else:
            w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise DataError(f"{what} {size!r}: expected WIDTHxHEIGHT such as 1024x512") from None
    if w <= 0 or h <= 0:
        raise DataError(f"{what} {size!r}: width and height must be positive")
    return w, h


class SegmentationDataset(torch.utils.data.Dataset):
    """Base class: subclasses fill ``classes``, ``palette``, ``samples`` and ``decode_label``.

    Attributes:
        classes: class names, index = train id.
        palette: ``uint8 (C, 3)`` RGB colour per class.
        ignore_index: 255.
        samples: ``list[(image_path, label_path)]``.
        resize: optional ``(W, H)`` applied in :meth:`load_raw`.
    """

    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        classes: Sequence[str],
        palette: np.ndarray,
        samples: list[tuple[Path, Path]],
        transform: Transform | None = None,
        resize: str | Sequence[int] | None = None,
        root: Path | None = None,
        split: str | None = None,
    ) -> None:
        self.classes = list(classes)
        self.palette = np.asarray(palette, dtype=np.uint8).reshape(len(self.classes), 3)
        self.samples = samples
        self.resize = parse_size(resize, "resize")
        self.root = root
        self.split = split
        if not samples:
            raise DataError(f"{root}: split {split!r} is empty (no image/label pairs found)")
        if transform is None:
            from effseg.data.transforms import build_eval_transform

            transform = build_eval_transform()
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Raw label file values -> train ids uint8 ``(H, W)``; default: values are train ids."""
        return check_train_ids(raw, self.num_classes, path)

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(image uint8 (H, W, 3) RGB, label uint8 (H, W) train ids, 255 = ignore)``."""
        image_path, label_path = self.samples[index]
        image = read_image(image_path)
        label = self.decode_label(read_label(label_path), label_path)
        check_same_size(image, label, image_path, label_path)
        if self.resize is not None:
            image, label = resize_pair(image, label, self.resize)
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(image FloatTensor (3, H, W) normalised, label LongTensor (H, W))``."""
        image, label = self.load_raw(index)
        return self.transform(image, label)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"samples={len(self)}, classes={self.num_classes})"
        )


def run_parallel(fn: Callable, jobs: list, workers: int, description: str | None = None) -> list:
    """``[fn(job) for job in jobs]`` in a process pool (inline for 1 worker), in order, with an
    optional rich progress bar (count, elapsed, ETA)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    results = []
    with Progress(*columns, disable=description is None) as bar:
        task = bar.add_task(description or "", total=len(jobs))
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(fn(job))
                bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                for result in pool.map(fn, jobs, chunksize=1):
                    results.append(result)
                    bar.advance(task)
    return results
