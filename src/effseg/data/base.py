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

from effseg.config import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (re-exported: the one definition)
from effseg.data.image import IMAGE_SUFFIXES, read_image, read_label  # noqa: F401  (re-exported)
from effseg.data.visualize import colorize  # noqa: F401  (re-exported: effseg.data.colorize)
from effseg.errors import DataError, EffsegError
from effseg.size import Size, read_old_size

IGNORE_INDEX = 255

Transform = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


class SampleError(DataError):
    """A bad sample (a corrupt image, a label out of range): one line naming the file, also when it
    is raised in a ``DataLoader`` worker process.

    torch re-raises a worker's exception in the main process as ``type(err)(text)``, ``text`` being
    ``Caught SampleError in DataLoader worker process 0.`` followed by the worker's whole traceback;
    this class keeps only the last line's message, the one the worker raised.
    """

    def __init__(self, message: str = "") -> None:
        if message.startswith("Caught ") and "\n" in message:
            last = message.rstrip().splitlines()[-1]
            marker = f"{type(self).__name__}: "
            message = last.split(marker, 1)[1] if marker in last else last
        super().__init__(message)


_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from an image file's header, without decoding a pixel; a file that is
    missing, not an image, or cut short (a PNG without its end chunk, a JPEG without its end marker)
    is a one-line :class:`DataError`."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the decoder refuses it later
            with Image.open(path) as img:
                size, fmt = img.size, img.format
        with path.open("rb") as f:
            f.seek(0, 2)
            length = f.tell()
            f.seek(max(0, length - 1024))
            tail = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Image.DecompressionBombError:
        return (0, 0)  # refused with its declared size when decoded
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot decode image ({msg}); the file is corrupt or truncated") from None
    if (fmt == "PNG" and not tail.endswith(_PNG_END)) or (fmt == "JPEG" and b"\xff\xd9" not in tail):
        raise DataError(
            f"{path}: cannot decode image (the file ends before its {fmt} end marker); the file is "
            "corrupt or truncated"
        )
    return size


def check_readable(dataset: SegmentationDataset) -> None:
    """Check every image and label file of ``dataset`` from its header and its last bytes (no pixel
    decoded; milliseconds per pair): readable, complete, and image and label of one size.

    The trainer runs it on the training and validation sets before the first step, so that a
    corrupt image stops the run at once, not in a loader worker or at the first validation
    (which would lose that step's checkpoint).

    Raises:
        DataError: one line naming the first bad file.
    """
    for image_path, label_path in dataset.samples:
        iw, ih = _header_size(Path(image_path))
        lw, lh = _header_size(Path(label_path))
        if (iw, ih) != (lw, lh) and 0 not in (iw, lw):
            raise DataError(
                f"image {image_path} is {iw}x{ih} but its label {label_path} is {lw}x{lh} (WxH); "
                "they must match"
            )


def dataset_root(root: str | os.PathLike, what: str, hint: str) -> Path:
    """``root`` as a folder path (``~`` expanded), or a DataError naming it: ``<what> root <root>
    does not exist; <hint>`` (or ``is a file, not a directory``), ``hint`` being the layout the
    dataset expects."""
    path = Path(root).expanduser()
    if not path.is_dir():
        problem = "is a file, not a directory" if path.exists() else "does not exist"
        raise DataError(f"{what} root {path} {problem}; {hint}")
    return path


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path) -> None:
    if image.shape[:2] != label.shape[:2]:
        ih, iw = image.shape[:2]
        lh, lw = label.shape[:2]
        raise DataError(
            f"image {image_path} is {iw}x{ih} but its label {label_path} is {lw}x{lh} (WxH); they must match"
        )


def values_outside(label: np.ndarray, num_classes: int, ignore: int = IGNORE_INDEX) -> list[int]:
    """Up to 8 distinct values of ``label`` that are neither a class id ``0..num_classes-1`` nor
    ``ignore`` (empty when the label map is valid)."""
    bad = (label >= num_classes) & (label != ignore)
    if label.dtype.kind == "i":
        bad |= label < 0
    return np.unique(label[bad])[:8].tolist() if bad.any() else []


def check_train_ids(label: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """Raise unless every value is a train id ``0..num_classes-1`` or 255; return it as uint8."""
    values = values_outside(label, num_classes)
    if values:
        raise DataError(
            f"{path}: label values {values} are outside the class range 0..{num_classes - 1} "
            f"(and {IGNORE_INDEX} = ignore)"
        )
    return label.astype(np.uint8, copy=False)


def resize_pair(image: np.ndarray, label: np.ndarray, size: Size) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``image (H, W, 3)`` and ``label (H, W)`` to ``size``: bilinear for the image,
    nearest neighbour for the label."""
    h, w = size
    if image.shape[1] == w and image.shape[0] == h:
        return image, label
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, label


def dataset_size(value: str | Sequence[int] | Size | None, what: str = "resize") -> Size | None:
    """A dataset's size option: ``"1024x512"`` text or a :class:`Size`; ``None`` stays ``None``.

    The old spelling, a plain ``[1024, 512]`` list (width, height), still loads with a note.
    """
    return None if value is None else read_old_size(value, what, "wh")


class SegmentationDataset(torch.utils.data.Dataset):
    """Base class: subclasses fill ``classes``, ``palette``, ``samples`` and ``decode_label``.

    Attributes:
        classes: class names, index = train id.
        palette: ``uint8 (C, 3)`` RGB colour per class.
        ignore_index: 255.
        samples: ``list[(image_path, label_path)]``.
        resize: optional :class:`Size` applied in :meth:`load_raw` (option text ``WIDTHxHEIGHT``).

    Memory cache (``build_dataset(..., cache=True)``, config ``data.options: {cache: true}``):
    :meth:`enable_cache` keeps every decoded (and resized) ``(image, label)`` pair as uint8 arrays,
    so later epochs skip JPEG/PNG decoding; :meth:`load_raw` hands out copies, so transforms can
    never alter the cache. Each process has its own cache: preload in the main process *before*
    the ``DataLoader`` is built (``enable_cache(preload=True)``, what ``cache: true`` does) and
    the forked workers share those pages copy-on-write; a cache filled lazily inside workers is
    per worker (up to ``num_workers`` copies). Cost: ``H * W * 4`` bytes per sample, e.g. 367
    CamVid images of 480x360 take 254 MB (190 MB of images, 63 MB of labels).
    """

    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        classes: Sequence[str],
        palette: np.ndarray,
        samples: list[tuple[Path, Path]],
        transform: Transform | None = None,
        resize: str | Size | None = None,
        root: Path | None = None,
        split: str | None = None,
    ) -> None:
        self.classes = list(classes)
        self.palette = np.asarray(palette, dtype=np.uint8).reshape(len(self.classes), 3)
        self.samples = samples
        self.resize = dataset_size(resize, "resize")
        self.root = root
        self.split = split
        if not samples:
            raise DataError(f"{root}: split {split!r} is empty (no image/label pairs found)")
        if transform is None:
            from effseg.data.transforms import build_eval_transform

            transform = build_eval_transform()
        self.transform = transform
        self._cache: list[tuple[np.ndarray, np.ndarray] | None] | None = None

    def enable_cache(self, preload: bool = True) -> int:
        """Keep decoded samples in memory; with ``preload``, decode all of them now.

        Returns the bytes held by the cache (every sample when preloaded). Call it in the main
        process before building a ``DataLoader`` so that its worker processes share the arrays.
        """
        if self._cache is None:
            self._cache = [None] * len(self.samples)
        if preload:
            for i in range(len(self.samples)):
                if self._cache[i] is None:
                    self._cache[i] = self._decode(i)
        return self.cache_nbytes

    @property
    def cache_nbytes(self) -> int:
        """Bytes of decoded images and labels held in memory (0 without a cache)."""
        return sum(a.nbytes + b.nbytes for a, b in filter(None, self._cache or ()))

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
        if self._cache is None:
            return self._decode(index)
        cached = self._cache[index]
        if cached is None:
            cached = self._cache[index] = self._decode(index)
        return cached[0].copy(), cached[1].copy()

    def _decode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Read, check and resize sample ``index`` from its files."""
        image_path, label_path = self.samples[index]
        image = read_image(image_path, exif=False)  # label files carry no orientation tag
        label = self.decode_label(read_label(label_path), label_path)
        check_same_size(image, label, image_path, label_path)
        if self.resize is not None:
            image, label = resize_pair(image, label, self.resize)
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(image FloatTensor (3, H, W) normalised, label LongTensor (H, W))``.

        A bad file is a :class:`SampleError` (one line naming it, also from a DataLoader worker)."""
        try:
            image, label = self.load_raw(index)
            return self.transform(image, label)
        except SampleError:
            raise
        except EffsegError as err:
            raise SampleError(str(err)) from None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"samples={len(self)}, classes={self.num_classes})"
        )


def drive_of(path: Path) -> str:
    """The drive (sequence) a frame comes from: its file stem up to the first ``_``.

    CamVid names frames ``<drive>_<frame>`` (``0016E5_07959``, ``Seq05VD_f00000``); a folder
    dataset whose files are named ``<sequence>_<frame>`` gets the same selection.
    """
    return Path(path).stem.split("_", 1)[0]


def select_drives(dataset: SegmentationDataset, drives: Sequence[str] | str) -> SegmentationDataset:
    """Keep only the samples of ``drives`` (see :func:`drive_of`), in place; returns ``dataset``.

    Raises:
        DataError: a drive that names no sample of the split (the message lists the drives it has).
    """
    wanted = [drives] if isinstance(drives, str) else list(drives)
    if not all(isinstance(d, str) and d for d in wanted):
        raise DataError(f"dataset option 'drives': expected a list of drive names, got {drives!r}")
    counts = drive_counts(dataset)
    missing = [d for d in wanted if d not in counts]
    if missing:
        have = ", ".join(f"{d} ({n})" for d, n in counts.items())
        raise DataError(
            f"drive {missing[0]!r} has no frames in split {dataset.split!r} of {dataset.root}; "
            f"drives there (frames): {have}"
        )
    dataset.samples = [s for s in dataset.samples if drive_of(s[0]) in set(wanted)]
    return dataset


def select_frames(dataset: SegmentationDataset, frames: int | str) -> SegmentationDataset:
    """Keep a reproducible subset of each drive's frames (file-name order), in place.

    ``frames``: ``N`` or ``"first:N"`` keeps the first ``N`` frames of every drive (a few labelled
    frames to fine-tune on), ``"after:N"`` every frame after them (the rest, to score on).

    Raises:
        DataError: a malformed value, or a drive with no frame left (the message gives the counts).
    """
    text = str(frames).strip()
    kind, _, count = text.rpartition(":") if ":" in text else ("first", "", text)
    if isinstance(frames, bool) or kind not in ("first", "after") or not count.isdigit() or int(count) < 1:
        raise DataError(
            f"dataset option 'frames'={frames!r}: expected N or 'first:N' (the first N frames of each "
            "drive) or 'after:N' (the frames after them), N >= 1"
        )
    n, by_drive = int(count), {}
    for sample in sorted(dataset.samples, key=lambda s: Path(s[0]).name):
        by_drive.setdefault(drive_of(sample[0]), []).append(sample)
    kept = {d: (s[:n] if kind == "first" else s[n:]) for d, s in by_drive.items()}
    empty = [d for d, s in kept.items() if not s]
    if empty:
        have = ", ".join(f"{d} ({len(s)})" for d, s in by_drive.items())
        raise DataError(
            f"dataset option 'frames'={text!r} leaves no frame of drive {empty[0]!r} in split "
            f"{dataset.split!r} of {dataset.root}; frames per drive: {have}"
        )
    keep = {id(sample) for samples in kept.values() for sample in samples}
    dataset.samples = [s for s in dataset.samples if id(s) in keep]
    return dataset


def drive_counts(dataset: SegmentationDataset) -> dict[str, int]:
    """``{drive: number of frames}`` of a dataset, in order of first appearance."""
    counts: dict[str, int] = {}
    for image_path, _ in dataset.samples:
        counts[drive_of(image_path)] = counts.get(drive_of(image_path), 0) + 1
    return counts


def run_parallel(fn: Callable, jobs: list, workers: int, description: str | None = None) -> list:
    """``[fn(job) for job in jobs]`` in a process pool (inline for 1 worker), in order, with an
    optional rich progress bar (count, elapsed, ETA)."""
    from effseg.progress import progress_bar

    results = []
    with progress_bar(disable=description is None) as bar:
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
