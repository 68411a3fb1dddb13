"""The one image reader of effseg, used by the datasets, the API and ``effseg predict``.

:func:`read_image` turns a file, a PIL image or an array into ``uint8 (H, W, 3)`` RGB:

* 8-bit RGB, RGBA (alpha dropped), L (grey replicated), P (palette applied), CMYK, ...: Pillow's
  own conversion;
* 16-bit images (grey ``I;16``, 48-bit RGB PNG) are *scaled* to 8 bits (``v * 255 / 65535``),
  never clipped: clipping turns every 16-bit photo white;
* a file whose header declares more pixels than Pillow's decompression-bomb limit
  (``PIL.Image.MAX_IMAGE_PIXELS``, 89 million) is refused with a one-line
  :class:`~effseg.errors.DataError` naming the file and its declared ``WIDTHxHEIGHT``, before any
  pixel is decoded.

:func:`read_label` reads a single-channel label PNG with the same checks. :data:`IMAGE_SUFFIXES`
is the one list of image file suffixes effseg looks for in folders.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from effseg.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "ImageLike", "open_image", "read_image", "read_label", "to_rgb"]

#: Suffixes (lower case) of the image files effseg finds in folders: datasets, predict, calibration.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

ImageLike = str | os.PathLike | Image.Image | np.ndarray

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def _declared_size(path: Path) -> str:
    """The ``WIDTHxHEIGHT`` an image file's header declares, read without Pillow's pixel limit."""
    try:
        Image.init()
        with path.open("rb") as fp:
            prefix = fp.read(16)
            for fmt in Image.ID:
                factory, accept = Image.OPEN[fmt]
                if accept is not None and accept(prefix) is not True:
                    continue
                fp.seek(0)
                try:
                    w, h = factory(fp, str(path)).size
                except Exception:  # noqa: BLE001 - try the next format, as Image.open does
                    continue
                return f"{w}x{h}"
    except OSError:
        pass
    return "an unknown size"


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file; every problem is a one-line :class:`DataError`.

    Decompression bombs (more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels declared, Pillow's
    warning and its error alike) are refused before decoding, naming the declared size.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()  # decode now: a truncated PNG fails here, not later in a worker
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        count = f", {int(pixels.group(1)):,} pixels" if pixels else ""
        raise DataError(
            f"{path}: refused, its header declares {_declared_size(path)}{count}, more than the "
            f"{Image.MAX_IMAGE_PIXELS:,}-pixel limit (a decompression bomb, or a far too large image)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot decode image ({msg}); the file is corrupt or truncated") from None
    return img


def _scale16(arr: np.ndarray) -> np.ndarray:
    """16-bit values -> uint8 by ``v * 255 / 65535`` (rounded), the same rule everywhere."""
    return np.clip(np.rint(arr.astype(np.float64) * (255.0 / 65535.0)), 0, 255).astype(np.uint8)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT or img.mode == "I":
        arr = np.asarray(img)
        if img.mode == "I" and arr.max(initial=0) <= 255:  # 32-bit container of 8-bit values
            return to_rgb(np.clip(arr, 0, 255).astype(np.uint8))
        return to_rgb(_scale16(np.clip(arr, 0, 65535)))
    if img.mode == "F":
        arr = np.asarray(img).astype(np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        return to_rgb(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def _sixteen_bit_colour(img: Image.Image, path: Path) -> bool:
    """Whether a colour PNG/TIFF stores 16 bits per channel (Pillow decodes it to 8, truncating)."""
    if img.format == "PNG":
        with path.open("rb") as fp:
            header = fp.read(26)  # signature (8), IHDR length + type (8), width, height, bit depth
        return len(header) == 26 and header[12:16] == b"IHDR" and header[24] == 16
    if img.format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258)  # BitsPerSample
        return bool(bits) and max(bits if isinstance(bits, tuple) else (bits,)) == 16
    return False


def _read16(path: Path) -> np.ndarray:
    """A 16-bit-per-channel colour file, all 16 bits read (by OpenCV), scaled to uint8 RGB."""
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        raise DataError(f"{path}: cannot decode the 16-bit colour image")
    return _scale16(cv2.cvtColor(arr[:, :, :3], cv2.COLOR_BGR2RGB))


_ORIENTATION = 0x0112  # the EXIF orientation tag
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # as PIL.ImageOps.exif_transpose


def _orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation value to a ``uint8 (H, W, 3)`` array."""
    method = _TRANSPOSE.get(orientation)
    return rgb if method is None else np.asarray(Image.fromarray(rgb).transpose(method)).copy()


def to_rgb(arr: np.ndarray) -> np.ndarray:
    """An image array -> ``uint8 (H, W, 3)`` RGB.

    Accepts ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped) of dtype uint8,
    uint16 (scaled by ``255 / 65535``) or bool (``True`` = 255).
    """
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[:, :, :3] if arr.shape[2] != 1 else arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"image array has shape {tuple(arr.shape)}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.uint16:
        return _scale16(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    raise DataError(
        f"image array has dtype {arr.dtype}; expected uint8 (or uint16, scaled to 8 bits) - "
        "convert floats with (x * 255).round().astype('uint8')"
    )


def read_image(source: ImageLike, exif: bool = True) -> np.ndarray:
    """Any supported image -> ``uint8 (H, W, 3)`` RGB.

    Args:
        source: a file path, a PIL image or an array (see :func:`to_rgb`).
        exif: apply the EXIF orientation tag (photos from phones). Datasets pass ``False``: their
            label files carry no tag, and the image must stay aligned with its label.

    Raises:
        DataError: one line naming the file (missing, corrupt, decompression bomb) or the array
            (shape, dtype) and what was expected.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        img = open_image(path)
        if img.mode in ("RGB", "RGBA") and _sixteen_bit_colour(img, path):
            rgb = _read16(path)
            return _orient(rgb, img.getexif().get(_ORIENTATION, 1)) if exif else rgb
        return _pil_to_rgb(ImageOps.exif_transpose(img) if exif else img)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(ImageOps.exif_transpose(source) if exif else source)
    if isinstance(source, np.ndarray):
        return to_rgb(source)
    raise DataError(
        f"cannot read an image from {type(source).__name__}; expected a path, a PIL image or a "
        "uint8 (H, W, 3) numpy array"
    )


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Decode a single-channel label PNG to an integer array ``(H, W)`` of its raw values.

    ``L``, ``P`` (palette index) and ``1`` (bilevel, 0/1) images give uint8; 16/32-bit images give
    int32 so that out-of-range values are reported, not wrapped.
    """
    path = Path(path)
    img = open_image(path)
    if img.mode in ("L", "P", "1"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode in ("I", *_SIXTEEN_BIT):
        return np.asarray(img).astype(np.int32)
    raise DataError(
        f"{path}: label image has mode {img.mode!r} ({len(img.getbands())} channels); "
        "expected a single-channel PNG of class ids (mode L, P or I;16)"
    )
