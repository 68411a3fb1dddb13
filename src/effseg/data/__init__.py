"""Datasets (Cityscapes, CamVid, image/mask folders, a synthetic city) and joint transforms.

>>> from effseg.data import build_dataset
>>> ds = build_dataset("synthetic", "data/synth", "train")   # generated on first use
>>> image, label = ds[0]          # FloatTensor (3, H, W) normalised, LongTensor (H, W)
"""

from __future__ import annotations

import os
from typing import Any

from effseg.data.base import (
    IGNORE_INDEX,
    SegmentationDataset,
    colorize,
    drive_counts,
    drive_of,
    read_image,
    read_label,
    select_drives,
    select_frames,
)
from effseg.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    CityscapesDataset,
    label_ids_to_train_ids,
    train_ids_to_label_ids,
)
from effseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform, build_train_transform
from effseg.errors import DataError

DATASETS = ("cityscapes", "camvid", "folder", "synthetic")


def build_dataset(
    name: str,
    root: str | os.PathLike,
    split: str = "train",
    transform: Any = None,
    **options: Any,
) -> SegmentationDataset:
    """Build a dataset by name.

    Args:
        name: ``cityscapes``, ``camvid``, ``folder`` or ``synthetic``.
        root: dataset folder. For ``synthetic`` it is generated there (Cityscapes layout) if missing.
        split: split name (``train``, ``val``, ``test``; ``folder`` also accepts ``all``).
        transform: joint transform ``(image uint8 HWC, label uint8 HW) -> (FloatTensor, LongTensor)``;
            default: normalise only (see :mod:`effseg.data.transforms`).
        options: per dataset. cityscapes: ``split_file``, ``resize``. camvid: ``resize``.
            folder: ``resize``, ``classes_file``. synthetic: ``n_train``, ``n_val``, ``size``,
            ``seed``, ``workers``, plus the cityscapes options. Sizes are ``WIDTHxHEIGHT`` text.
            Every dataset: ``cache`` (bool): decode every sample now and keep it in memory
            (see :meth:`SegmentationDataset.enable_cache`); ``drives`` (list of names): keep
            only the frames of these drives, the file-name prefix before the first ``_``
            (see :func:`effseg.data.base.select_drives`; leave-one-drive-out in docs/datasets.md);
            ``frames`` (``N``, ``"first:N"`` or ``"after:N"``): the first N frames of each drive, or
            the ones after them (:func:`effseg.data.base.select_frames`; after ``drives``).
    """
    options = dict(options)
    cache = options.pop("cache", False)
    drives = options.pop("drives", None)
    frames = options.pop("frames", None)
    if not isinstance(cache, bool):
        raise DataError(f"dataset option 'cache': expected true or false, got {cache!r}")
    dataset = _build(str(name).lower(), name, root, split, transform, options)
    if drives:
        select_drives(dataset, drives)
    if frames is not None:
        select_frames(dataset, frames)
    if cache:
        dataset.enable_cache(preload=True)
    return dataset


def _build(
    key: str, name: str, root: str | os.PathLike, split: str, transform: Any, options: dict[str, Any]
) -> SegmentationDataset:
    if key == "cityscapes":
        return CityscapesDataset(root, split, transform, **_only(key, options, {"split_file", "resize"}))
    if key == "camvid":
        from effseg.data.camvid import CamVidDataset

        return CamVidDataset(root, split, transform, **_only(key, options, {"resize"}))
    if key == "folder":
        from effseg.data.folder import FolderDataset

        return FolderDataset(root, split, transform, **_only(key, options, {"resize", "classes_file"}))
    if key == "synthetic":
        from effseg.data.synthetic import SYNTH_OPTIONS, ensure_city

        opts = _only(key, options, SYNTH_OPTIONS | {"split_file", "resize"})
        ensure_city(root, **{k: v for k, v in opts.items() if k in SYNTH_OPTIONS})
        rest = {k: v for k, v in opts.items() if k not in SYNTH_OPTIONS}
        return CityscapesDataset(root, split, transform, **rest)
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def _only(name: str, options: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise DataError(
            f"dataset {name!r} has no option {unknown[0]!r}; "
            f"valid options: {', '.join(sorted(allowed | {'cache', 'drives'}))}"
        )
    return {k: v for k, v in options.items() if v is not None}


__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "DATASETS",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CityscapesDataset",
    "SegmentationDataset",
    "build_dataset",
    "build_eval_transform",
    "build_train_transform",
    "colorize",
    "drive_counts",
    "drive_of",
    "label_ids_to_train_ids",
    "read_image",
    "read_label",
    "select_drives",
    "select_frames",
    "train_ids_to_label_ids",
]
