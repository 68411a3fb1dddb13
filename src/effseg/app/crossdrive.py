"""Leave-one-drive-out: the cross-drive figure of a training recipe (``effseg crossdrive``).

A *drive* is the file-name prefix before the first ``_`` (:func:`effseg.data.base.drive_of`):
CamVid's ``0001TP``, ``0006R0``, ``0016E5``; a folder dataset whose files are named
``<sequence>_<frame>``; a Cityscapes city. For every held-out drive, the recipe (a config plus
``--set`` overrides) is trained on the *other* drives of the pool split (CamVid: ``trainval`` =
train + val, folder datasets: ``all``) and scored on the held-out drive only; its training-time
validation also runs on the held-out drive, never on frames of a training drive. The figure of a
fold is its **final weights** (``last.pt``): ``best.pt`` was selected on the held-out drive and
is not used. The cross-drive figure is the mean of the folds' mIoU; the frame-weighted mean is
written beside it, labelled.

Layout of ``OUT``::

    OUT/fold_<drive>/               an ordinary run folder (config.yaml, last.pt, log.jsonl, ...)
    OUT/fold_<drive>/eval[_tta_<spec>]/eval.json, eval.md, confusion_matrix.png
    OUT/crossdrive.json, OUT/crossdrive.md

Resumable: a fold whose ``eval.json`` exists is skipped, a finished fold is only evaluated, and
a killed fold resumes from its ``last.pt`` (:func:`effseg.engine.train.train` with ``resume``).
A fold folder trained with another recipe is refused (``force`` retrains it).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from effseg.config import Config, config_from_dict
from effseg.errors import ConfigError, DataError

__all__ = [
    "Fold",
    "eval_folder_name",
    "list_drives",
    "plan_folds",
    "pool_split",
    "run_crossdrive",
    "summarize",
    "write_summary",
]

#: Keys that may differ between a fold folder's config and the recipe without changing the result.
_RUN_ONLY_KEYS = {
    "data.num_workers",
    "eval.num_workers",
    "train.device",
    "train.log_interval",
    "train.tensorboard",
}


@dataclass
class Fold:
    """One fold: train on ``train_drives``, score ``held_out`` (``frames`` frames)."""

    held_out: str
    train_drives: list[str]
    frames: int
    train_frames: int
    run_dir: Path
    cfg: Config


def pool_split(cfg: Config, split: str | None = None) -> str:
    """The split the folds draw from: ``split`` if given; CamVid ``trainval`` (train + val),
    a folder dataset ``all``, any other dataset its ``data.train_split``."""
    if split:
        return split
    return {"camvid": "trainval", "folder": "all"}.get(cfg.data.dataset.lower(), cfg.data.train_split)


def list_drives(cfg: Config, split: str) -> dict[str, int]:
    """``{drive: frames}`` of ``split`` of the config's dataset (files listed, nothing decoded)."""
    from effseg.data import build_dataset, drive_counts

    options = {k: v for k, v in cfg.data.options.items() if k not in ("cache", "drives")}
    dataset = build_dataset(cfg.data.dataset, cfg.data.root, split, **options)
    return drive_counts(dataset)


def _names(value: str | Sequence[str] | None, what: str) -> list[str] | None:
    if value is None:
        return None
    items = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s) for s in value]
    items = [s for s in items if s]
    if not items:
        raise ConfigError(f"{what}: expected a comma-separated list of drive names, got {value!r}")
    return list(dict.fromkeys(items))


def plan_folds(
    cfg: Config,
    out: Path,
    *,
    drives: str | Sequence[str] | None = None,
    folds: str | Sequence[str] | None = None,
    split: str | None = None,
    iterations: int | None = None,
    minutes: float | None = None,
) -> tuple[list[Fold], dict[str, int], str]:
    """The folds to run, the ``{drive: frames}`` of the drive set and the pool split.

    ``drives``: the drive set (default: every drive of the pool split); each fold holds out one
    of them and trains on the others. ``folds``: run only these held-out drives (default: all).
    ``iterations`` / ``minutes``: the training length of every fold (default: the recipe's).
    """
    if iterations is not None and minutes is not None:
        raise ConfigError("--iterations and --minutes exclude each other: give one training length")
    if iterations is not None and iterations < 1:
        raise ConfigError(f"--iterations {iterations}: expected a positive number of steps")
    if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
        raise ConfigError(f"--minutes {minutes}: expected a positive number of minutes")
    split = pool_split(cfg, split)
    counts = list_drives(cfg, split)
    have = ", ".join(f"{d} ({n})" for d, n in counts.items())
    where = f"split {split!r} of {cfg.data.dataset} at {cfg.data.root}"
    chosen = _names(drives, "--drives") or list(counts)
    for d in chosen:
        if d not in counts:
            raise DataError(f"--drives: no drive {d!r} in {where}; drives there (frames): {have}")
    if len(chosen) < 2:
        raise DataError(
            f"leave-one-drive-out needs at least 2 drives; {where} has {have or 'none'} "
            "(a drive is the file-name prefix before the first '_')"
        )
    held = _names(folds, "--folds") or chosen
    for d in held:
        if d not in chosen:
            raise ConfigError(f"--folds: {d!r} is not one of the drives {', '.join(chosen)}")
    plan = []
    for d in held:
        others = [o for o in chosen if o != d]
        plan.append(
            Fold(
                held_out=d,
                train_drives=others,
                frames=counts[d],
                train_frames=sum(counts[o] for o in others),
                run_dir=out / f"fold_{d}",
                cfg=_fold_config(cfg, split, others, d, iterations, minutes),
            )
        )
    return plan, {d: counts[d] for d in chosen}, split


def _fold_config(
    cfg: Config, split: str, train: list[str], held_out: str, iterations: int | None, minutes: float | None
) -> Config:
    data = cfg.to_dict()
    d = data["data"]
    d.update(train_split=split, val_split=split, train_drives=list(train), val_drives=[held_out])
    d["options"] = {k: v for k, v in d.get("options", {}).items() if k != "drives"}
    t = data["train"]
    if iterations is not None:  # by steps: a warm-up share of the clock becomes the same share of steps
        if t.get("time_budget") is not None and t.get("warmup_fraction"):
            t["warmup_iters"] = round(float(t["warmup_fraction"]) * int(iterations))
        elif t.get("iterations") and t.get("warmup_iters"):
            t["warmup_iters"] = round(int(t["warmup_iters"]) * int(iterations) / int(t["iterations"]))
        t.update(iterations=int(iterations), time_budget=None, warmup_fraction=0.0)
    if minutes is not None:  # by the clock: a warm-up in steps becomes the same share of the budget
        if t.get("iterations") and t.get("warmup_iters"):
            t["warmup_fraction"] = min(0.5, int(t["warmup_iters"]) / int(t["iterations"]))
        t.update(time_budget=float(minutes), iterations=None, warmup_iters=0)
    return config_from_dict(data, source=f"fold {held_out}")


def eval_folder_name(tta: str | None) -> str:
    """``eval`` without TTA, ``eval_tta_flip_0.75_1_1.25`` with ``--tta flip,0.75,1.0,1.25``."""
    from effseg.engine.tta import describe_tta, parse_tta

    spec = describe_tta(*parse_tta(tta))
    return "eval" if spec == "none" else "eval_tta_" + re.sub(r"[^A-Za-z0-9.]+", "_", spec)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's mapping, or None when it is missing or half-written."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not prefix:
            out.update(_flat(v, f"{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_recipe(fold: Fold) -> None:
    """Refuse a fold folder that holds a run of another recipe (one line naming the keys)."""
    path = fold.run_dir / "config.yaml"
    if not path.is_file():
        return
    try:
        old = _flat(config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8"))).to_dict())
    except Exception:  # noqa: BLE001 - an unreadable config is "another recipe" too
        old = {}
    new = _flat(fold.cfg.to_dict())
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in _RUN_ONLY_KEYS)
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise ConfigError(
            f"{fold.run_dir} holds a fold trained with another recipe (differs in {shown}); "
            "use --force to retrain it, or another --out"
        )


def _finished(run_dir: Path) -> dict[str, Any] | None:
    """The training record of a fold whose training ended (``last.pt`` records a stop reason)."""
    path = run_dir / "last.pt"
    if not path.is_file():
        return None
    from effseg.engine.checkpoint import load_checkpoint

    record = load_checkpoint(path).get("training") or {}
    return record if record.get("stopped_by") else None


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def evaluate_fold(fold: Fold, tta: str | None, eval_dir: Path) -> dict[str, Any]:
    """Score the fold's final weights (``last.pt``) on its held-out drive; writes ``eval_dir``."""
    from effseg.data import build_dataset, build_eval_transform
    from effseg.data.from_config import val_dataset_options
    from effseg.deploy.artifact import load_artifact
    from effseg.device import resolve_device
    from effseg.engine.evaluate import eval_options, evaluate, write_eval_outputs
    from effseg.engine.tta import parse_tta

    cfg, e = fold.cfg, fold.cfg.eval
    device = resolve_device(cfg.train.device, what="train.device")
    art = load_artifact(fold.run_dir / "last.pt", device)
    mean, std = art.meta.get("mean") or cfg.data.mean, art.meta.get("std") or cfg.data.std
    options = {k: v for k, v in val_dataset_options(cfg).items() if k != "cache"}
    dataset = build_dataset(
        cfg.data.dataset,
        cfg.data.root,
        cfg.data.val_split,
        transform=build_eval_transform(mean=tuple(mean), std=tuple(std)),
        **options,
    )
    scales, flip = parse_tta(tta)
    result = evaluate(
        art.model, dataset, **eval_options(e, tta=False), scales=scales, flip=flip, device=device
    )
    result.update(
        checkpoint=str(fold.run_dir / "last.pt"),
        split=cfg.data.val_split,
        held_out=fold.held_out,
        train_drives=fold.train_drives,
        training=art.meta.get("training"),
    )
    eval_dir.mkdir(parents=True, exist_ok=True)
    write_eval_outputs(result, eval_dir)
    return result


def run_crossdrive(
    cfg: Config,
    out: str | os.PathLike,
    *,
    drives: str | Sequence[str] | None = None,
    folds: str | Sequence[str] | None = None,
    split: str | None = None,
    iterations: int | None = None,
    minutes: float | None = None,
    tta: str | None = None,
    force: bool = False,
    command: str = "",
    source: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train and score the folds (see the module docstring); returns the summary written to
    ``OUT/crossdrive.json`` and ``OUT/crossdrive.md``."""
    from effseg.engine.train import train
    from effseg.engine.tta import parse_tta

    parse_tta(tta)  # a bad spec fails before any training
    out = Path(out)
    plan, counts, pool = plan_folds(
        cfg, out, drives=drives, folds=folds, split=split, iterations=iterations, minutes=minutes
    )
    out.mkdir(parents=True, exist_ok=True)
    name = eval_folder_name(tta)
    for i, fold in enumerate(plan, 1):
        eval_json = fold.run_dir / name / "eval.json"
        head = (
            f"fold {i}/{len(plan)}: hold out {fold.held_out} ({fold.frames} frames), train on "
            f"{' + '.join(fold.train_drives)} ({fold.train_frames} frames) of {pool}"
        )
        if not force and _read_json(eval_json) is not None:
            log(f"{head}: done ({eval_json} exists)")
            continue
        if not force:
            check_recipe(fold)
        if force or _finished(fold.run_dir) is None:
            log(f"{head}: training in {fold.run_dir}")
            train(fold.cfg, fold.run_dir, resume=not force, force=force)
        else:
            log(f"{head}: trained; evaluating its last.pt")
        result = evaluate_fold(fold, tta, fold.run_dir / name)
        log(f"fold {fold.held_out}: mIoU {result['miou'] * 100:.2f} on its {fold.frames} held-out frames")
    summary = summarize(out, counts, pool, tta)
    summary.update(command=command, recipe=source)
    write_summary(out, summary)
    return summary


# ----------------------------------------------------------------------------- the table


def summarize(out: Path, counts: dict[str, int], split: str, tta: str | None) -> dict[str, Any]:
    """Every fold of the drive set ``counts`` whose evaluation exists, and their means."""
    from effseg.engine.tta import describe_tta, parse_tta

    name = eval_folder_name(tta)
    rows: list[dict[str, Any]] = []
    classes: list[str] = []
    for d, frames in counts.items():
        res = _read_json(out / f"fold_{d}" / name / "eval.json")
        if res is None or res.get("miou") is None:
            continue
        classes = classes or list(res.get("per_class", {}))
        training = res.get("training") or {}
        train_s = training.get("train_time_s")
        rows.append(
            {
                "held_out": d,
                "train_drives": [o for o in counts if o != d],
                "frames": frames,
                "iterations": training.get("iterations"),
                "minutes": train_s / 60.0 if train_s is not None else None,
                "miou": res["miou"] * 100.0,
                "per_class": {
                    c: (v["iou"] * 100.0 if v.get("iou") is not None else None)
                    for c, v in res.get("per_class", {}).items()
                },
                "ms_per_image": res.get("ms_per_image"),
                "eval": str(out / f"fold_{d}" / name / "eval.json"),
            }
        )
    summary: dict[str, Any] = {
        "split": split,
        "drives": dict(counts),
        "tta": describe_tta(*parse_tta(tta)),
        "folds": rows,
        "folds_done": len(rows),
        "folds_total": len(counts),
        "missing": [d for d in counts if d not in {r["held_out"] for r in rows}],
        "classes": classes,
        "miou_crossdrive": None,
        "miou_frame_weighted": None,
        "per_class_mean": {},
        "rule": (
            "each fold trains on the other drives and scores its held-out drive with its final weights "
            "(last.pt); cross-drive mIoU = the unweighted mean of the folds' mIoU; the frame-weighted "
            "mean weights each fold by its held-out frames"
        ),
    }
    if rows:
        summary["miou_crossdrive"] = sum(r["miou"] for r in rows) / len(rows)
        total = sum(r["frames"] for r in rows)
        summary["miou_frame_weighted"] = sum(r["miou"] * r["frames"] for r in rows) / total
        for c in classes:
            values = [r["per_class"].get(c) for r in rows if r["per_class"].get(c) is not None]
            summary["per_class_mean"][c] = sum(values) / len(values) if values else None
    return summary


def _num(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def markdown(summary: dict[str, Any]) -> str:
    """``crossdrive.md``: one row per fold, the mean over folds and the frame-weighted mean."""
    classes = summary["classes"]
    head = ["held-out drive", "frames", "iterations", "minutes", "mIoU", *classes]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in summary["folds"]:
        cells = [
            r["held_out"],
            str(r["frames"]),
            _num(r["iterations"], "d"),
            _num(r["minutes"], ".1f"),
            _num(r["miou"]),
            *[_num(r["per_class"].get(c), ".1f") for c in classes],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    done, total = summary["folds_done"], summary["folds_total"]
    if summary["folds"]:
        frames = sum(r["frames"] for r in summary["folds"])
        mean_cells = [_num(summary["per_class_mean"].get(c), ".1f") for c in classes]
        lines.append(
            f"| **mean over folds (cross-drive)** | {frames} | | | **{_num(summary['miou_crossdrive'])}** | "
            + " | ".join(mean_cells)
            + " |"
        )
        lines.append(
            f"| frame-weighted mean | {frames} | | | {_num(summary['miou_frame_weighted'])} |"
            + " |" * len(classes)
        )
    notes = [
        "",
        f"Cross-drive mIoU (%) of `{summary.get('recipe') or 'the recipe'}` on split "
        f"`{summary['split']}`, {done} of {total} folds"
        + (f" (missing: {', '.join(summary['missing'])})" if summary["missing"] else "")
        + f", TTA {summary['tta']}.",
        f"Rule: {summary['rule']}.",
    ]
    if summary.get("command"):
        notes.append(f"Command: `{summary['command']}`")
    return "\n".join(lines + notes) + "\n"


def write_summary(out: Path, summary: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``crossdrive.json`` and ``crossdrive.md`` into ``out`` (each atomically)."""
    paths = out / "crossdrive.json", out / "crossdrive.md"
    _atomic_write(paths[0], json.dumps(summary, indent=2) + "\n")
    _atomic_write(paths[1], markdown(summary))
    return paths
