"""The datasets a config (and so a checkpoint, which stores its config) was trained on.

Used by the trainer, ``effseg eval``, export's parity check and the demo, so that they
all read the same images with the same options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from effseg.config import Config
from effseg.errors import ConfigError, DataError

__all__ = ["build_datasets", "check_data_root", "stored_val_split", "trained_on_note", "val_dataset_options"]


def _root_holds(dataset: str, splits: tuple[str, ...]) -> str:
    """What a ``dataset`` root folder must hold, in words, for the ``splits`` used."""
    key = dataset.lower()
    if key == "camvid":
        folders = " ".join(f"{s}/ {s}annot/" for s in dict.fromkeys(splits))
        return f"a folder holding {folders} (SegNet's CamVid layout: images, and label PNGs by the same name)"
    if key in ("cityscapes", "synthetic"):
        hold = f"leftImg8bit/{splits[0]}/ and gtFine/{splits[0]}/ (the Cityscapes layout)"
        if key == "synthetic":
            return f"a folder to generate the synthetic city in (or one holding {hold})"
        return f"a folder holding {hold}"
    if key == "folder":
        return "a folder holding images/, masks/ (matched by file stem) and classes.yaml"
    return "the dataset's folder"


def check_data_root(cfg: Config, splits: tuple[str, ...] | None = None) -> None:
    """A one-line DataError naming ``data.root`` and what the folder must hold when the root is
    unset (shipped models carry none) or missing (another machine's path).  The synthetic city
    is generated into a missing root, so only an unset one is refused there."""
    d = cfg.data
    splits = splits or (d.train_split, d.val_split)
    fix = f"pass --set data.root=PATH, {_root_holds(d.dataset, splits)}"
    if not str(d.root).strip():
        raise DataError(f"data.root is not set (dataset {d.dataset!r}); {fix}")
    root = Path(d.root).expanduser()
    if root.exists() and not root.is_dir():  # synthetic too: the city cannot be generated into a file
        raise DataError(f"data.root={d.root}: is a file, not a directory (dataset {d.dataset!r}); {fix}")
    if d.dataset.lower() != "synthetic" and not root.is_dir():
        raise DataError(f"data.root={d.root}: no such folder (dataset {d.dataset!r}); {fix}")


def build_datasets(cfg: Config) -> tuple[Dataset, Dataset]:
    """``(train set with the training transform, val set normalised only)`` of a config.

    Raises:
        DataError: ``data.root`` is unset or missing (:func:`check_data_root`).
        ConfigError: a set's number of classes differs from ``model.num_classes``.
    """
    from effseg.data import build_dataset, build_eval_transform, build_train_transform

    check_data_root(cfg)
    d = cfg.data
    train_tf = build_train_transform(
        crop_size=tuple(d.crop_size),
        scale_range=tuple(d.scale_range),
        hflip=d.hflip,
        jitter=d.jitter,
        blur=d.blur,
        mean=tuple(d.mean),
        std=tuple(d.std),
    )
    train_set = build_dataset(
        d.dataset,
        d.root,
        d.train_split,
        transform=train_tf,
        **_with_drives(d.options, d.train_drives, d.train_frames),
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
                f"has {ds.num_classes} classes; set --set model.num_classes={ds.num_classes}"
            )
    return train_set, val_set


def val_dataset_options(cfg: Config) -> dict[str, Any]:
    """Dataset options for evaluation: with ``eval.resize`` set, labels stay at full resolution
    (the dataset's own ``resize`` option is dropped; the evaluator resizes the image instead)."""
    opts = _with_drives(cfg.data.options, cfg.data.val_drives, cfg.data.val_frames)
    if cfg.eval.resize is not None:
        opts.pop("resize", None)
    return opts


def _with_drives(
    options: dict[str, Any], drives: list[str], frames: int | str | None = None
) -> dict[str, Any]:
    """Dataset options with ``drives`` set from ``data.train_drives`` / ``data.val_drives`` and
    ``frames`` from ``data.train_frames`` / ``data.val_frames`` (which win over a ``data.options``
    value shared by both splits)."""
    opts = dict(options)
    if drives:
        opts["drives"] = list(drives)
    if frames is not None:
        opts["frames"] = frames
    return opts


def _split_parts(split: str) -> set[str]:
    """The splits a split name reads: ``trainval`` is CamVid's ``train`` + ``val``."""
    return {"train", "val"} if split == "trainval" else {split}


def stored_val_split(config: dict[str, Any] | None) -> str:
    """The split a checkpoint's training config (a plain dict) validated on: its
    ``data.val_split``, or ``val`` (the default) when it names none."""
    data = (config or {}).get("data") if isinstance(config, dict) else None
    return str((data if isinstance(data, dict) else {}).get("val_split") or "val")


def trained_on_note(config: dict[str, Any] | None, split: str | None) -> str:
    """The label of a figure on ``split`` from weights trained with ``config`` (the checkpoint's
    training config): empty, unless training read the frames of ``split`` (``data.train_split``
    ``trainval`` holds ``val``; the same split name). Drive or frame selections that may keep
    the two apart (``data.train_drives`` / ``val_drives``, ``train_frames`` / ``val_frames``, the
    cross-drive folds) give no label: only a certain overlap is named."""
    data = (config or {}).get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or not split or not data.get("train_split"):
        return ""
    train_split = str(data["train_split"])
    if not _split_parts(split) & _split_parts(train_split):
        return ""
    train_drives, val_drives = set(data.get("train_drives") or ()), set(data.get("val_drives") or ())
    if (train_drives and val_drives and not train_drives & val_drives) or (
        data.get("train_frames") is not None or data.get("val_frames") is not None
    ):
        return ""
    return (
        f"the model was trained on {split!r}'s frames (data.train_split={train_split!r}), so this "
        "figure measures how well it remembers them, not new images"
    )
