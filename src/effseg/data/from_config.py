"""The datasets a config (and so a checkpoint, which stores its config) was trained on.

Used by the trainer, ``effseg eval``, export's parity check and the demo, so that they
all read the same images with the same options.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from effseg.config import Config
from effseg.errors import ConfigError

__all__ = ["build_datasets", "val_dataset_options"]


def build_datasets(cfg: Config) -> tuple[Dataset, Dataset]:
    """``(train set with the training transform, val set normalised only)`` of a config.

    Raises:
        ConfigError: a set's number of classes differs from ``model.num_classes``.
    """
    from effseg.data import build_dataset, build_eval_transform, build_train_transform

    d = cfg.data
    train_tf = build_train_transform(
        crop_size=tuple(d.crop_size),
        scale_range=tuple(d.scale_range),
        hflip=d.hflip,
        jitter=d.jitter,
        mean=tuple(d.mean),
        std=tuple(d.std),
    )
    train_set = build_dataset(
        d.dataset, d.root, d.train_split, transform=train_tf, **_with_drives(d.options, d.train_drives)
    )
    val_set = build_dataset(
        d.dataset,
        d.root,
        d.val_split,
        **val_dataset_options(cfg),
        transform=build_eval_transform(mean=tuple(d.mean), std=tuple(d.std)),
    )
    for name, ds in (("train", train_set), ("val", val_set)):
        if ds.num_classes != cfg.model.num_classes:
            raise ConfigError(
                f"model.num_classes={cfg.model.num_classes} but the {name} set of {d.dataset!r} "
                f"has {ds.num_classes} classes"
            )
    return train_set, val_set


def val_dataset_options(cfg: Config) -> dict[str, Any]:
    """Dataset options for evaluation: with ``eval.resize`` set, labels stay at full resolution
    (the dataset's own ``resize`` option is dropped; the evaluator resizes the image instead)."""
    opts = _with_drives(cfg.data.options, cfg.data.val_drives)
    if cfg.eval.resize is not None:
        opts.pop("resize", None)
    return opts


def _with_drives(options: dict[str, Any], drives: list[str]) -> dict[str, Any]:
    """Dataset options with ``drives`` set from ``data.train_drives`` / ``data.val_drives``
    (which win over a ``data.options.drives`` shared by both splits)."""
    opts = dict(options)
    if drives:
        opts["drives"] = list(drives)
    return opts
