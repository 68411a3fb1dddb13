"""Package a trained run as a shipped model: ``src/effseg/zoo/<name>.pt`` (at most 20 MB).

    python scripts/ship_zoo_model.py runs/cpu_40min --name camvid-ddrnet23_slim
    python scripts/ship_zoo_model.py src/effseg/zoo/camvid-ddrnet23_slim.pt --name camvid-ddrnet23_slim

Takes the run's ``last.pt`` (the final weights: val selects nothing; a ``.pt`` path is used as
given, so a shipped file can be packaged again), drops the optimizer, scheduler and RNG state,
stores floating-point weights as float16 (half the bytes; the loader copies them into the float32
model, see :func:`effseg.engine.checkpoint.load_state_dict_checked`; weights that are float16
already stay bit-identical) and removes the paths of the machine that trained it from the stored
config (:func:`scrub_config`: ``data.root`` becomes unset, so ``effseg eval <name>`` asks for
``--set data.root=PATH``). It refuses to write a file that still holds an absolute path, and
checks that the packaged model predicts the same labels as the source on the shipped sample
photos (argmax agreement printed; float16 rounding of the weights moves a handful of pixels).
The registry entry (``src/effseg/zoo/models.yaml``) is written by hand with the figures of
docs/camvid.md: this script prints the values it knows.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import effseg
from effseg.engine.checkpoint import load_checkpoint, resolve_checkpoint

KEEP = ("model_config", "classes", "palette", "mean", "std", "config", "iteration", "best_miou", "val",
        "training")  # fmt: skip
MAX_BYTES = 20 * 1024 * 1024
# Config keys that name files or folders of the machine that trained the model, and what a
# shipped file stores instead ("" for data.root, a str key: unset, `--set data.root=PATH` to use).
PATH_KEYS: dict[tuple[str, ...], Any] = {
    ("data", "root"): "",
    ("data", "options", "split_file"): None,
    ("data", "options", "classes_file"): None,
    ("model", "pretrained_backbone"): None,
    ("distill", "teacher"): None,
}
_WINDOWS_ABS = re.compile(r"^[A-Za-z]:[\\/]")


def looks_absolute(value: str) -> bool:
    """A POSIX (``/x``), home (``~/x``) or Windows (``C:\\x``) absolute path."""
    return value.startswith(("/", "~", "\\\\")) or bool(_WINDOWS_ABS.match(value))


def absolute_paths(obj: Any, where: str = "") -> list[str]:
    """``key=value`` of every string in ``obj`` (nested dicts / lists) that is an absolute path."""
    found: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            found += absolute_paths(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            found += absolute_paths(v, f"{where}[{i}]")
    elif isinstance(obj, str) and looks_absolute(obj):
        found.append(f"{where}={obj}")
    return found


def scrub_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored training config without the trainer's file paths (:data:`PATH_KEYS`)."""
    config = copy.deepcopy(config)
    for keys, empty in PATH_KEYS.items():
        node = config
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(keys[-1]) not in (None, ""):
            node[keys[-1]] = empty
    return config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="run folder or checkpoint (a shipped .pt to package it again)")
    ap.add_argument("--name", required=True, help="shipped name, e.g. camvid-ddrnet23_slim")
    ap.add_argument("--out-dir", type=Path, default=Path("src/effseg/zoo"))
    args = ap.parse_args()

    # A run folder means its last.pt: best.pt was picked on val, so its val figure is not honest.
    src = Path(args.run) / "last.pt" if Path(args.run).is_dir() else resolve_checkpoint(args.run)
    ckpt = load_checkpoint(src)
    state = {
        k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["model"].items()
    }  # float16 weights: half the size, no measurable change in mIoU (docs/camvid.md)
    packed = {"model": state, **{k: ckpt[k] for k in KEEP if k in ckpt}}
    if isinstance(packed.get("config"), dict):
        packed["config"] = scrub_config(packed["config"])
    left = absolute_paths({k: v for k, v in packed.items() if k != "model"})
    if left:
        raise SystemExit(f"{src}: the packaged file would still hold a path of this machine: {left[0]}")
    # The source's labels first: packaging a shipped file again overwrites its source.
    photos = effseg.sample_images()
    reference = effseg.load(src)
    ref_labels = [reference.predict(p) for p in photos]
    out = args.out_dir / f"{args.name}.pt"
    # Written under its own name in a temporary folder beside it (torch.save names the archive's
    # inner folder after the file), then moved into place in one step.
    with tempfile.TemporaryDirectory(dir=args.out_dir) as tmp_dir:
        tmp = Path(tmp_dir) / out.name
        torch.save(packed, tmp)
        size = tmp.stat().st_size
        if size > MAX_BYTES:
            raise SystemExit(f"{out}: {size / 2**20:.1f} MB is over the 20 MB limit for shipped weights")
        os.chmod(tmp, 0o644)  # installed package data must be readable by every user
        os.replace(tmp, out)

    ours = effseg.load(out)
    agree = [float(np.mean(ref == ours.predict(p))) for ref, p in zip(ref_labels, photos, strict=True)]
    print(f"wrote {out} ({size / 2**20:.2f} MB) from {src}")
    print(f"argmax agreement with the source on the sample photos: {min(agree) * 100:.3f}% (worst photo)")
    training = ckpt.get("training") or {}
    minutes = training.get("train_time_s", 0) / 60
    print(f"iterations {training.get('iterations')}, train time {minutes:.1f} min")
    print(f"best val mIoU during training: {ckpt.get('best_miou')}")


if __name__ == "__main__":
    main()
