"""effseg's trainer against a plain PyTorch loop: training images/s and pixels/s on one model.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_train_loop.py \
        --config configs/camvid/cpu_40min.yaml --data /path/to/CamVid --iters 40

Both sides train the same effseg model (``build_model(**cfg.model.build_kwargs())``) on
CamVid train crops of the config's crop size and batch, with the config's AMP dtype and
memory format, for ``--iters`` steps after ``--warmup`` steps:

- the plain loop: the kind of 60-line loop a user writes (OpenCV random scale / crop /
  flip / brightness in a DataLoader, AdamW, CE with ignore 255 on the main output only);
- effseg: ``effseg train CONFIG --set train.iterations=N ...`` in a child process; its
  images/s are the ones its ``log.jsonl`` records per logging window (data loading,
  augmentation, auxiliary outputs, logging and checkpoint writes included; validation
  excluded).

The ratio is what ``docs/bench/training.md`` records. Run it on a quiet machine
(``uptime`` first); the printout names the CPU and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class PlainCamVid:
    """Random scale, crop, flip and brightness with OpenCV: a typical hand-written pipeline."""

    def __init__(self, root: Path, crop_hw: tuple[int, int], scale: tuple[float, float]):
        import cv2

        self.cv2 = cv2
        self.images = sorted((root / "train").iterdir())
        self.labels = [root / "trainannot" / (p.stem + ".png") for p in self.images]
        self.crop, self.scale = crop_hw, scale

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        import torch

        cv2, rng = self.cv2, np.random.default_rng()
        img = cv2.cvtColor(cv2.imread(str(self.images[i])), cv2.COLOR_BGR2RGB)
        lab = cv2.imread(str(self.labels[i]), cv2.IMREAD_GRAYSCALE)
        lab = np.where(lab == 11, 255, lab).astype(np.uint8)
        s = rng.uniform(*self.scale)
        img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
        lab = cv2.resize(lab, None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
        ch, cw = self.crop
        ph, pw = max(ch - img.shape[0], 0), max(cw - img.shape[1], 0)
        img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
        lab = cv2.copyMakeBorder(lab, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=255)
        y, x = rng.integers(0, img.shape[0] - ch + 1), rng.integers(0, img.shape[1] - cw + 1)
        img, lab = img[y : y + ch, x : x + cw], lab[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        img = np.clip(img.astype(np.float32) * rng.uniform(0.75, 1.25), 0, 255) / 255.0
        img = (img - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
        image = torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32))
        return image, torch.from_numpy(lab.astype(np.int64))


def plain_loop(cfg, data: Path, iters: int, warmup: int, workers: int) -> float:
    """Images/s of a plain AdamW loop on the config's model, crop, batch, AMP and memory format."""
    import torch
    import torch.nn.functional as F

    from effseg.models import build_model

    torch.manual_seed(0)
    model = build_model(**cfg.model.build_kwargs()).train()
    channels_last = bool(getattr(cfg.train, "channels_last", False))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    crop = cfg.data.crop_size
    crop_hw = (crop.h, crop.w) if hasattr(crop, "h") else tuple(crop)
    ds = PlainCamVid(data, crop_hw, tuple(cfg.data.scale_range))
    loader = torch.utils.data.DataLoader(
        ds, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
        num_workers=workers, persistent_workers=workers > 0,
    )  # fmt: skip
    done, start, it = 0, None, iter(loader)
    for step in range(warmup + iters):
        if step == warmup:
            start = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            out = model(x)
            out = out["out"] if isinstance(out, dict) else out
        loss = F.cross_entropy(out.float(), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += x.shape[0] if step >= warmup else 0
    return done / (time.perf_counter() - start)


def effseg_trainer(config: str, data: Path, iters: int, warmup: int, extra: list[str], batch: int) -> float:
    """Images/s of ``effseg train`` after the warm-up steps, from the times its log records."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [
            sys.executable, "-m", "effseg", "train", config, "--run-dir", str(run), "--set",
            f"data.root={data}", f"train.iterations={warmup + iters}", "train.time_budget=null",
            "train.warmup_fraction=0", "train.val_interval=0", "train.log_interval=5", *extra,
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        rows = [r for r in rows if "img_per_s" in r]
        # images over wall time from the end of the warm-up window to the last one, as the plain
        # loop counts them (log_interval divides the warm-up, so a window ends exactly there)
        first = next(r for r in rows if r["iteration"] == warmup)
        last = rows[-1]
        return (last["iteration"] - first["iteration"]) * batch / (last["time"] - first["time"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/camvid/cpu_40min.yaml")
    ap.add_argument("--data", type=Path, default=Path("../shared/camvid"))
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1, help="plain loop's DataLoader workers")
    ap.add_argument("--set", nargs="*", default=[], help="extra overrides for both sides")
    ap.add_argument("--repeats", type=int, default=1, help="alternating runs of each side (mean)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from effseg.config import load_config

    cfg = load_config(args.config, [f"data.root={args.data}", *args.set])
    if args.warmup % 5:
        sys.exit("--warmup: expected a multiple of 5 (effseg logs every 5 iterations here)")
    plains, ours_all = [], []
    for _ in range(args.repeats):  # alternate the two so a drifting load hits both alike
        plains.append(plain_loop(cfg, args.data, args.iters, args.warmup, args.workers))
        ours_all.append(
            effseg_trainer(args.config, args.data, args.iters, args.warmup, args.set, cfg.train.batch_size)
        )
    print("runs, images/s: plain", [round(v, 2) for v in plains], "effseg", [round(v, 2) for v in ours_all])
    plain, ours = float(np.mean(plains)), float(np.mean(ours_all))
    crop = cfg.data.crop_size
    h, w = (crop.h, crop.w) if hasattr(crop, "h") else tuple(crop)
    threads = __import__("torch").get_num_threads()
    print(f"machine: {cpu_model()}; load {os.getloadavg()[0]:.2f}; torch threads {threads}")
    print(f"model {cfg.model.build_kwargs()}, crop {w}x{h}, batch {cfg.train.batch_size}")
    print(f"amp {cfg.train.amp}, channels_last {cfg.train.channels_last}")
    print("| loop | images/s | Mpixel/s | vs plain |\n|---|---:|---:|---:|")
    for name, ips in (("plain PyTorch loop", plain), ("effseg train", ours)):
        print(f"| {name} | {ips:.2f} | {ips * h * w / 1e6:.3f} | {ips / plain:.2f}x |")


if __name__ == "__main__":
    main()
