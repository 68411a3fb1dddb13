"""Pictures of label maps: colour masks, overlays and a colour legend with the class names.

The one place effseg paints labels (``predict``, ``serve``, the report, the demo grid):

- :func:`colorize` maps ``(H, W)`` class ids to ``(H, W, 3)`` uint8 colours through the
  palette. **Ids without a palette entry** (the ignore id 255, or any id >= number of classes)
  are painted ``ignore_color``, black ``(0, 0, 0)`` by default, everywhere.
- :func:`overlay` blends a colour mask over the image: ``(1 - alpha) * image + alpha * colour``.
- :func:`legend_panel` draws swatches and class names (Pillow, its bundled font) as an image;
  :func:`add_legend` puts it below a picture (the picture grows) and :func:`inset_legend` draws
  it inside the picture's top-left corner (same size: video frames keep their size).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from effseg.errors import DataError

IGNORE_COLOR = (0, 0, 0)

__all__ = ["IGNORE_COLOR", "colorize", "overlay", "legend_panel", "add_legend", "inset_legend", "present_ids"]


def colorize(
    labels: np.ndarray,
    palette: np.ndarray | Sequence[Sequence[int]],
    ignore_color: Sequence[int] = IGNORE_COLOR,
) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3)`` uint8 colours; ids with no palette entry get ``ignore_color``."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(f"labels have shape {tuple(labels.shape)}; expected (H, W)")
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if labels.dtype == np.uint8:
        lut = np.empty((256, 3), np.uint8)
        lut[:] = ignore_color
        lut[: min(len(palette), 256)] = palette[:256]
        return lut[labels]
    ids = labels.astype(np.int64, copy=False)
    lut = np.empty((len(palette) + 1, 3), np.uint8)
    lut[: len(palette)] = palette
    lut[len(palette)] = ignore_color
    outside = (ids < 0) | (ids >= len(palette))
    return lut[np.where(outside, len(palette), ids)]


def overlay(image: np.ndarray, color: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(H, W, 3)`` uint8 image and colour mask -> blended ``(H, W, 3)`` uint8, rounded to nearest."""
    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"overlay alpha {alpha}: expected a value in [0, 1]")
    if image.shape != color.shape:
        raise DataError(f"image {tuple(image.shape)} and mask {tuple(color.shape)} differ in size")
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * color.astype(np.float32)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def present_ids(labels: np.ndarray, num_classes: int) -> list[int]:
    """Class ids that occur in ``labels`` (ignore and out-of-range ids left out), ascending."""
    counts = np.bincount(
        np.asarray(labels).ravel().astype(np.int64).clip(0, num_classes), minlength=num_classes + 1
    )
    return [i for i in range(num_classes) if counts[i]]


@lru_cache(maxsize=8)
def _font(size: int):  # noqa: ANN202 - a PIL font
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def legend_panel(
    classes: Sequence[str],
    palette: np.ndarray | Sequence[Sequence[int]],
    width: int,
    ids: Sequence[int] | None = None,
    *,
    font_size: int = 12,
    background: Sequence[int] = (255, 255, 255),
    text_color: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
    """A legend ``(h, width, 3)`` uint8: a colour swatch and the name of each class in ``ids``
    (default: every class), laid out in as many columns as fit in ``width`` pixels."""
    from PIL import Image, ImageDraw

    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    ids = list(range(len(classes))) if ids is None else [int(i) for i in ids]
    font = _font(font_size)
    row_h = font_size + 6
    swatch = font_size
    names = [str(classes[i]) for i in ids]
    cell_w = max([int(font.getlength(n)) for n in names] + [0]) + swatch + 14
    cols = max(1, min(len(ids), width // max(cell_w, 1))) if ids else 1
    rows = (len(ids) + cols - 1) // cols
    panel = Image.new("RGB", (max(1, width), max(1, rows * row_h + 4)), tuple(background))
    draw = ImageDraw.Draw(panel)
    for k, (i, name) in enumerate(zip(ids, names, strict=True)):
        r, c = divmod(k, cols)
        x, y = 4 + c * cell_w, 2 + r * row_h
        draw.rectangle(
            [x, y + 2, x + swatch, y + 2 + swatch], fill=tuple(int(v) for v in palette[i]), outline=(0, 0, 0)
        )
        draw.text((x + swatch + 5, y + 1), name, fill=tuple(text_color), font=font)
    return np.asarray(panel, dtype=np.uint8).copy()


def add_legend(
    picture: np.ndarray,
    classes: Sequence[str],
    palette: np.ndarray | Sequence[Sequence[int]],
    labels: np.ndarray | None = None,
    font_size: int = 12,
) -> np.ndarray:
    """``picture`` ``(H, W, 3)`` with a legend panel stacked below it (``(H + h, W, 3)``); with
    ``labels`` only the classes that occur in them are listed."""
    ids = present_ids(labels, len(classes)) if labels is not None else None
    panel = legend_panel(classes, palette, picture.shape[1], ids, font_size=font_size)
    return np.concatenate([picture, panel], axis=0)


@lru_cache(maxsize=16)
def _inset_cached(classes: tuple[str, ...], palette: bytes, width: int, font_size: int) -> np.ndarray:
    pal = np.frombuffer(palette, np.uint8).reshape(-1, 3)
    return legend_panel(
        classes, pal, width, font_size=font_size, background=(0, 0, 0), text_color=(255, 255, 255)
    )


def inset_legend(
    picture: np.ndarray,
    classes: Sequence[str],
    palette: np.ndarray | Sequence[Sequence[int]],
    font_size: int = 11,
    opacity: float = 0.7,
) -> np.ndarray:
    """``picture`` ``(H, W, 3)`` with every class's swatch and name drawn over its top-left corner on
    a dark translucent box; the size stays ``(H, W, 3)`` (for video frames). The panel is rendered
    once per (classes, palette, width) and reused."""
    h, w = picture.shape[:2]
    pal = np.ascontiguousarray(np.asarray(palette, dtype=np.uint8).reshape(-1, 3))
    panel = _inset_cached(tuple(str(c) for c in classes), pal.tobytes(), max(1, w // 3), font_size)
    ph, pw = min(panel.shape[0], h), min(panel.shape[1], w)
    out = picture.copy()
    region = out[:ph, :pw].astype(np.float32)
    out[:ph, :pw] = np.clip(np.rint((1 - opacity) * region + opacity * panel[:ph, :pw]), 0, 255).astype(
        np.uint8
    )
    return out
