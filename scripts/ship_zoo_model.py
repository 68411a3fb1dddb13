"""Package a trained run as a shipped model: ``src/effseg/zoo/<name>.pt`` (at most 20 MB).

    python scripts/ship_zoo_model.py runs/cpu_40min --name camvid-ddrnet23_slim

Takes the run's ``last.pt`` (the final weights: val selects nothing; a ``.pt`` path is used as
given), drops the optimizer, scheduler and RNG state, stores floating-point weights as float16
(half the bytes; the loader copies them into the float32 model, see
:func:`effseg.engine.checkpoint.load_state_dict_checked`) and checks that the packaged model
predicts the same labels as the run on the shipped sample photos (argmax agreement printed;
float16 rounding of the weights moves a handful of pixels).
The registry entry (``src/effseg/zoo/models.yaml``) is written by hand with the figures of
docs/camvid.md: this script prints the values it knows.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

import effseg
from effseg.engine.checkpoint import load_checkpoint, resolve_checkpoint

KEEP = ("model_config", "classes", "palette", "mean", "std", "config", "iteration", "best_miou", "val",
        "training")  # fmt: skip
MAX_BYTES = 20 * 1024 * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="run folder or checkpoint")
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
    out = args.out_dir / f"{args.name}.pt"
    fd, tmp = tempfile.mkstemp(dir=args.out_dir, suffix=".tmp")
    os.close(fd)
    torch.save(packed, tmp)
    size = Path(tmp).stat().st_size
    if size > MAX_BYTES:
        Path(tmp).unlink()
        raise SystemExit(f"{out}: {size / 2**20:.1f} MB is over the 20 MB limit for shipped weights")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; installed package data must be readable
    os.replace(tmp, out)

    ref, ours = effseg.load(src), effseg.load(out)
    agree = [float(np.mean(ref.predict(p) == ours.predict(p))) for p in effseg.sample_images()]
    print(f"wrote {out} ({size / 2**20:.2f} MB) from {src}")
    print(f"argmax agreement with the run on the sample photos: {min(agree) * 100:.3f}% (worst photo)")
    training = ckpt.get("training") or {}
    minutes = training.get("train_time_s", 0) / 60
    print(f"iterations {training.get('iterations')}, train time {minutes:.1f} min")
    print(f"best val mIoU during training: {ckpt.get('best_miou')}")


if __name__ == "__main__":
    main()
