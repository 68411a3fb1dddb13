"""Training throughput: effseg's trainer against a plain PyTorch loop, and where a step's time goes.

    nice -n 5 python benchmarks/bench_train_speed.py --data ../shared/camvid            # the ratio
    nice -n 5 python benchmarks/bench_train_speed.py --data ../shared/camvid --profile  # the profile

Both sides train the config's model (default the 40-minute CamVid recipe,
``configs/camvid/cpu_40min.yaml``: DDRNet-23-slim, batch 8, 480x352 crops) on CamVid train,
with the same loss (main + 0.4 aux, the recipe's class-weighted cross-entropy), AdamW and the
same precision and memory format, and are alternated (plain, effseg, plain, effseg, ...) so a
drifting load hits both alike:

- the plain loop (:func:`plain_loop`): the ~40 lines a user writes: images decoded once into
  RAM, random scale / crop / flip with OpenCV in the main process, a float batch, autocast,
  ``loss.backward()``, ``opt.step()``. Its precision is the one effseg's ``train.amp``
  resolves to on this machine unless ``--plain-amp`` says otherwise (bf16 + channels_last is
  the issue's loop, 7x slower than fp32 on a CPU without bf16 arithmetic);
- effseg: ``effseg train CONFIG --set train.iterations=N ...`` in a child process, as a user
  runs it (its DataLoader worker with colour jitter too, logging, the final checkpoint); its
  images/s are images over wall time from the end of the warm-up window to the last log
  record, as the plain loop counts them. Its first step (compilation, when
  ``train.compile``) is printed apart.

``--profile`` times one eager training step of effseg's trainer by phase (data: decode,
augment, collate, worker hand-off; forward, loss, backward, optimiser) and by operator
class (torch.profiler self time), and its achieved FLOP/s (``torch.utils.flop_counter``,
FLOP = 2 x multiply-add) against the peak given by ``--peak-gflops`` (state how you derived
it; docs/bench/training.md does). Results go to docs/bench/training.md with ``uptime``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else "?"


# ----------------------------------------------------------------------------- the plain loop


def plain_loop(cfg, data: Path, steps: int, warmup: int, amp: str, channels_last: bool) -> dict:
    """The plain loop: images/s over ``steps`` after ``warmup`` steps, and CPU-s per image."""
    import cv2

    from effseg.models import build_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(**cfg.model.build_kwargs()).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    weight = torch.tensor(cfg.train.class_weights) if cfg.train.class_weights else None
    files = sorted((data / "train").iterdir())
    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in files]
    labels = [cv2.imread(str(data / "trainannot" / (p.stem + ".png")), cv2.IMREAD_GRAYSCALE) for p in files]
    labels = [np.where(lab == 11, 255, lab).astype(np.uint8) for lab in labels]
    (ch, cw), (lo, hi), batch = tuple(cfg.data.crop_size), cfg.data.scale_range, cfg.train.batch_size
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    for step in range(warmup + steps):
        if step == warmup:
            start, cpu0 = time.perf_counter(), time.process_time()
        xs, ys = [], []
        for i in rng.choice(len(images), batch, replace=False):
            s = rng.uniform(lo, hi)
            img = cv2.resize(images[i], None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
            lab = cv2.resize(labels[i], None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
            ph, pw = max(ch - img.shape[0], 0), max(cw - img.shape[1], 0)
            img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
            lab = cv2.copyMakeBorder(lab, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=255)
            y, x = rng.integers(0, img.shape[0] - ch + 1), rng.integers(0, img.shape[1] - cw + 1)
            img, lab = img[y : y + ch, x : x + cw], lab[y : y + ch, x : x + cw]
            if rng.random() < 0.5:
                img, lab = img[:, ::-1], lab[:, ::-1]
            xs.append(img)
            ys.append(lab)
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float().div(255).sub(mean).div(std)
        target = torch.from_numpy(np.stack(ys)).long()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = model(x.contiguous(memory_format=fmt))
        loss = F.cross_entropy(out["out"].float(), target, weight=weight, ignore_index=255)
        loss = loss + 0.4 * F.cross_entropy(out["aux"].float(), target, weight=weight, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return {"img_per_s": steps * batch / wall, "cpu_s_per_img": cpu / (steps * batch)}


# ----------------------------------------------------------------------------- effseg's trainer


def effseg_train(config: str, data: Path, steps: int, warmup: int, extra: list[str], batch: int) -> dict:
    """``effseg train`` for ``warmup + steps`` iterations in a child process; images/s from its log."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [
            sys.executable, "-m", "effseg", "train", config, "--run-dir", str(run), "--set",
            f"data.root={data}", f"train.iterations={warmup + steps}", "train.time_budget=null",
            "train.warmup_fraction=0", "train.val_interval=0", f"train.log_interval={warmup}",
            "train.tensorboard=false", "data.val_frames=first:1", *extra,
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise SystemExit(f"effseg train failed: {' '.join(cmd)}")
        from effseg.engine.runlog import read_log  # skips a partial last line

        rows = read_log(run / "log.jsonl")
    train = [r for r in rows if "img_per_s" in r]
    first = next(r for r in train if r["iteration"] == warmup)
    last = train[-1]
    setup = next((r for r in rows if "first_step_s" in r), {})
    return {
        "img_per_s": (last["iteration"] - first["iteration"]) * batch / (last["time"] - first["time"]),
        "first_step_s": setup.get("first_step_s"),
        "amp": setup.get("amp"),
        "compile": setup.get("compile"),
        "child_cpu_s": usage.ru_utime + usage.ru_stime,
    }


# ----------------------------------------------------------------------------- the profile

OP_CLASSES = (
    ("convolution", ("conv",)),
    ("batch norm", ("batch_norm",)),
    ("interpolation", ("upsample", "interpolate", "grid_sampler")),
    ("pooling", ("pool",)),
    ("loss (log-softmax, NLL)", ("log_softmax", "nll_loss", "cross_entropy", "softmax")),
    ("optimiser (AdamW)", ("adam", "_foreach", "lerp", "addcdiv", "addcmul")),
    ("copies / layout", ("copy", "contiguous", "clone", "_to_copy", "to_dense", "reorder", "cat", "stack")),
    ("elementwise", ("add", "mul", "relu", "threshold", "sigmoid", "div", "sub", "where", "fill", "clamp",
                     "sum", "mean", "sqrt", "neg", "exp", "zero", "masked", "ne", "eq", "max", "min")),
)  # fmt: skip


def op_class(name: str) -> str:
    low = name.lower()
    for cls, keys in OP_CLASSES:
        if any(k in low for k in keys):
            return cls
    return "other"


def profile(config: str, data: Path, extra: list[str], steps: int, peak_gflops: float | None) -> None:
    """Print the phase and operator-class profile of effseg's eager training step."""
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile
    from torch.utils.data import default_collate
    from torch.utils.flop_counter import FlopCounterMode

    from effseg.config import load_config
    from effseg.engine import distributed as du
    from effseg.engine.train import _Trainer

    overrides = [f"data.root={data}", "train.compile=false", "train.tensorboard=false", *extra]
    cfg = load_config(config, overrides)
    tmp = tempfile.TemporaryDirectory()
    trainer = _Trainer(cfg, Path(tmp.name) / "run", du.init_distributed("cpu"), resume=False)
    ds, batch = trainer.train_set, cfg.train.batch_size
    # data, in the main process: decode (first read), augment, collate; then the worker hand-off
    t0 = time.perf_counter()
    raw = [ds.load_raw(i) for i in range(batch)]
    decode = (time.perf_counter() - t0) / batch
    t0 = time.perf_counter()
    samples = [ds.transform(*r) for r in raw]
    augment = (time.perf_counter() - t0) / batch
    t0 = time.perf_counter()
    images, labels = default_collate(samples)
    collate = time.perf_counter() - t0
    loader = iter(trainer.loader)
    next(loader)  # the worker starts
    t0 = time.perf_counter()
    for _ in range(3):
        next(loader)
    per_batch_from_worker = (time.perf_counter() - t0) / 3
    print(  # fmt: skip
        f"data per image: decode {decode * 1e3:.1f} ms (first read; cached after), augment "
        f"{augment * 1e3:.1f} ms; collate {collate * 1e3:.1f} ms per batch; a batch from the worker "
        f"every {per_batch_from_worker:.2f} s when nothing else runs ({images.dtype} {tuple(images.shape)})"
    )

    step, opt = trainer.step, trainer.optimizer

    def one_step() -> None:
        with record_function("forward+loss"):
            _, _, loss, _ = step.forward_loss(images, labels)
        with record_function("backward"):
            opt.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("optimiser"):
            opt.step()

    one_step()  # warm-up
    with FlopCounterMode(display=False) as flops:
        _, _, loss, _ = step.forward_loss(images, labels)
        loss.backward()
    opt.zero_grad(set_to_none=True)
    total_flop = flops.get_total_flops()
    walls = []
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            t0 = time.perf_counter()
            one_step()
            walls.append(time.perf_counter() - t0)
    wall = float(np.median(walls))
    phases = {e.key: e.cpu_time_total / 1e6 / steps for e in prof.key_averages() if e.key in
              ("forward+loss", "backward", "optimiser")}  # fmt: skip
    by_class: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        if e.key.startswith("aten::") or e.key.startswith("mkldnn") or e.key.startswith("Optimizer"):
            by_class[op_class(e.key)] += e.self_cpu_time_total / 1e6 / steps
    total = sum(by_class.values())
    print(
        f"step (median of {steps}): {wall:.2f} s wall for batch {batch}; "
        f"torch threads {torch.get_num_threads()}"
    )
    print("phase seconds per step:", {k: round(v, 2) for k, v in phases.items()})
    print("| operator class | s per step | share |\n|---|---:|---:|")
    for cls, secs in sorted(by_class.items(), key=lambda kv: -kv[1]):
        print(f"| {cls} | {secs:.2f} | {secs / total * 100:.1f} % |")
    rate = total_flop / wall / 1e9
    per_image = total_flop / batch / 1e9
    line = f"FLOP per training image {per_image:.1f} G (2 x multiply-add); achieved {rate:.1f} GFLOP/s"
    print(
        line
        + (f" = {rate / peak_gflops * 100:.1f} % of the {peak_gflops:g} GFLOP/s peak" if peak_gflops else "")
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    tmp.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/camvid/cpu_40min.yaml")
    ap.add_argument("--data", type=Path, default=Path("../shared/camvid"))
    ap.add_argument("--iters", type=int, default=10, help="timed steps per run")
    ap.add_argument(
        "--warmup", type=int, default=2, help="untimed steps first (effseg compiles in its first)"
    )
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each side")
    ap.add_argument("--plain-amp", default="same", choices=["same", "none", "bf16"])
    ap.add_argument(
        "--set", nargs="*", default=[], help="extra overrides for effseg (and the shared settings)"
    )
    ap.add_argument(
        "--effseg",
        nargs="*",
        default=[""],
        help="effseg variants, each a comma-separated list of --set overrides (default: the config as is)",
    )
    ap.add_argument("--profile", action="store_true", help="profile effseg's eager step instead")
    ap.add_argument("--peak-gflops", type=float, default=None, help="the chip's peak, for --profile")
    args = ap.parse_args()

    from effseg.config import load_config
    from effseg.engine.speed import resolve_amp

    if args.profile:
        profile(args.config, args.data, args.set, max(args.iters // 4, 2), args.peak_gflops)
        return
    cfg = load_config(args.config, [f"data.root={args.data}", *args.set])
    amp = resolve_amp(cfg.train.amp, torch.device("cpu"))[0] if args.plain_amp == "same" else args.plain_amp
    variants = [[v for v in spec.split(",") if v] for spec in args.effseg]
    plains: list[dict] = []
    ours: list[list[dict]] = [[] for _ in variants]
    for _ in range(args.repeats):  # alternate the sides so a drifting load hits them alike
        plains.append(plain_loop(cfg, args.data, args.iters, args.warmup, amp, cfg.train.channels_last))
        print("plain", plains[-1], f"load {os.getloadavg()[0]:.2f}", flush=True)
        for runs, sets in zip(ours, variants, strict=True):
            extra = [*args.set, *sets]
            runs.append(
                effseg_train(args.config, args.data, args.iters, args.warmup, extra, cfg.train.batch_size)
            )
            print("effseg", sets, runs[-1], f"load {os.getloadavg()[0]:.2f}", flush=True)
    plain = float(np.mean([r["img_per_s"] for r in plains]))
    crop = cfg.data.crop_size
    print(f"machine: {cpu_model()}; load {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}")
    print(
        f"{cfg.model.name}, {crop.w}x{crop.h} crops, batch {cfg.train.batch_size}; plain loop amp {amp}, "
        f"channels_last {cfg.train.channels_last}; {args.warmup} warm-up + {args.iters} timed steps per run"
    )
    print("| loop | images/s (runs) | vs plain | effseg's first step (s) |\n|---|---:|---:|---:|")
    print(f"| plain PyTorch loop | {plain:.2f} ({', '.join(f'{r:.2f}' for r in _rates(plains))}) | 1.00x | |")
    for runs in ours:
        rate, first = float(np.mean(_rates(runs))), ", ".join(f"{r['first_step_s'] or 0:.0f}" for r in runs)
        name = f"effseg train (amp {runs[0]['amp']}, compile {runs[0]['compile']})"
        each = ", ".join(f"{r:.2f}" for r in _rates(runs))
        print(f"| {name} | {rate:.2f} ({each}) | {rate / plain:.2f}x | {first} |")


def _rates(runs: list[dict]) -> list[float]:
    return [r["img_per_s"] for r in runs]


if __name__ == "__main__":
    main()
