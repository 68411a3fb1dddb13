"""Data benchmarks: synthetic-city generation speed and data-loader throughput.

    python benchmarks/bench_data.py                      # print results
    python benchmarks/bench_data.py --write docs/bench/data.md

Measures (one process unless stated):
  * generation: images/s of ``effseg.data.synthetic`` at 1024x512, render only and
    render + PNG encode/write (what ``effseg data synth`` does per worker);
  * loading: images/s per worker process for PNG decode (image + label-id map) +
    train augmentation (random scale 0.5-2, pad, 512x512 crop, flip, jitter,
    normalise, to tensors) at 1024x512 input; then a torch DataLoader with K workers.
The machine is shared: each number is the median of --repeats runs, and the load
average at the start is recorded next to it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def machine() -> dict[str, str]:
    import albumentations
    import cv2
    import PIL
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    return {
        "cpu": cpu,
        "cores (os.cpu_count)": str(os.cpu_count()),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "pillow": PIL.__version__,
        "albumentations": albumentations.__version__,
        "torch": torch.__version__,
        "os": platform.platform(),
    }


def rate(fn, n: int, repeats: int) -> str:
    """Median images/s of ``repeats`` runs of ``fn(i)`` over ``n`` items: wall clock, and per
    CPU-second of this process (what one idle core would do; robust to a busy machine)."""
    wall, cpu = [], []
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            fn(r * n + i)
        wall.append(n / (time.perf_counter() - t0))
        cpu.append(n / (time.process_time() - c0))
    return f"{statistics.median(wall):.2f} images/s wall, {statistics.median(cpu):.2f} images/CPU-s"


def colour_lookup_baseline(root: str, levels: int = 16) -> tuple[float, float]:
    """Difficulty check: the best per-pixel *colour* classifier learnt on the train split
    (majority class of each RGB bin, ``levels``^3 bins) scored on val: (pixel acc, mIoU)."""
    from effseg.data import build_dataset

    train = build_dataset("synthetic", root, "train", n_train=48, n_val=12, size="512x256", seed=0)
    val = build_dataset("synthetic", root, "val")

    def key(img: np.ndarray) -> np.ndarray:
        b = (img // (256 // levels)).astype(np.int64)
        return ((b[..., 0] * levels + b[..., 1]) * levels + b[..., 2]).ravel()

    counts = np.zeros((levels**3, 19), np.int64)
    for i in range(len(train)):
        img, lab = train.load_raw(i)
        k, y = key(img), lab.ravel().astype(np.int64)
        m = y != 255
        np.add.at(counts, (k[m], y[m]), 1)
    lut = counts.argmax(1)
    conf = np.zeros((19, 19), np.int64)
    for i in range(len(val)):
        img, lab = val.load_raw(i)
        y, pred = lab.ravel().astype(np.int64), lut[key(img)]
        m = y != 255
        conf += np.bincount(y[m] * 19 + pred[m], minlength=361).reshape(19, 19)
    tp = np.diag(conf)
    iou = tp / np.maximum(conf.sum(0) + conf.sum(1) - tp, 1)
    return float(tp.sum() / conf.sum()), float(iou[conf.sum(1) > 0].mean())


def capacity_check(root: str, iters: int = 200, seed: int = 0) -> list[tuple[str, int, float]]:
    """Difficulty check 2: two plain CNNs of different capacity/receptive field trained the same
    way (Adam 1e-3, batch 8, ``iters`` steps, 128x256 inputs) on the default synthetic city.
    Returns ``[(name, parameters, val mIoU)]``; a harder-than-colour task shows a clear gap."""
    import torch
    from torch import nn

    from effseg.data import build_dataset, build_eval_transform, build_train_transform

    torch.manual_seed(seed)
    opts = {"n_train": 48, "n_val": 12, "size": "512x256", "seed": 0}
    tf = build_train_transform(crop_size=(128, 256), scale_range=(0.75, 1.25))
    tf.set_random_seed(seed)
    train = build_dataset("synthetic", root, "train", transform=tf, resize="256x128", **opts)
    val = build_dataset("synthetic", root, "val", transform=build_eval_transform(), resize="256x128")

    def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        pad = dilation
        conv = nn.Conv2d(cin, cout, 3, stride, pad, dilation=dilation, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def small() -> nn.Module:  # receptive field ~ 15 px
        return nn.Sequential(block(3, 16, 2), block(16, 16), block(16, 16), nn.Conv2d(16, 19, 1))

    def big() -> nn.Module:  # receptive field > 150 px
        layers = [block(3, 32, 2), block(32, 48, 2), block(48, 64)]
        layers += [block(64, 64, dilation=d) for d in (2, 4, 8, 2)]
        return nn.Sequential(*layers, nn.Conv2d(64, 19, 1))

    results = []
    for name, make in (("small CNN (3 conv, 16 ch)", small), ("bigger CNN (7 conv, dilated, 64 ch)", big)):
        torch.manual_seed(seed)
        net = make()
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        loader = torch.utils.data.DataLoader(train, batch_size=8, shuffle=True, drop_last=True)
        step = 0
        while step < iters:
            for x, y in loader:
                logits = nn.functional.interpolate(
                    net(x), size=y.shape[-2:], mode="bilinear", align_corners=False
                )
                loss = nn.functional.cross_entropy(logits, y, ignore_index=255)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step >= iters:
                    break
        net.eval()
        conf = torch.zeros(19 * 19, dtype=torch.int64)
        with torch.inference_mode():
            for i in range(len(val)):
                x, y = val[i]
                logits = nn.functional.interpolate(
                    net(x[None]), size=y.shape, mode="bilinear", align_corners=False
                )
                pred, m = logits[0].argmax(0), y != 255
                conf += torch.bincount(y[m] * 19 + pred[m], minlength=361)
        conf = conf.view(19, 19).double()
        tp = conf.diag()
        iou = tp / (conf.sum(0) + conf.sum(1) - tp).clamp(min=1)
        miou = float(iou[conf.sum(1) > 0].mean())
        results.append((name, sum(p.numel() for p in net.parameters()), miou))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12, help="images per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="1024x512")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--capacity-iters", type=int, default=200, help="0 skips the small-vs-big CNN check")
    parser.add_argument("--write", type=Path, default=None, help="write a markdown report here")
    args = parser.parse_args(argv)

    import torch

    from effseg.data import build_dataset, build_train_transform
    from effseg.data.synthetic import forced_classes, render_scene, write_scene
    from effseg.size import parse_size

    torch.set_num_threads(1)
    size = parse_size(args.size, "--size")
    h, w = size
    info = machine()
    results: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        gen_render = rate(lambda i: render_scene([0, 1, i], size, forced_classes(i)), args.n, args.repeats)
        results.append(("synthetic city: render", f"{w}x{h}, 1 process", gen_render))
        gen_write = rate(lambda i: write_scene(tmp, "train", i, size), args.n, args.repeats)
        results.append(("synthetic city: render + PNG write", f"{w}x{h}, 1 process", gen_write))
        print(results[-2], results[-1], flush=True)

        transform = build_train_transform(crop_size=(args.crop, args.crop))
        ds = build_dataset("cityscapes", tmp, "train", transform=transform)
        n = len(ds)
        decode = rate(lambda i: ds.load_raw(i % n), args.n, args.repeats)
        results.append(("decode (image + label ids -> train ids)", f"{w}x{h} PNG, 1 process", decode))
        full = rate(lambda i: ds[i % n], args.n, args.repeats)
        results.append(
            (
                "decode + train augment -> tensors",
                f"{w}x{h} -> {args.crop}x{args.crop} crop, per worker process",
                full,
            )
        )
        print(results[-2], results[-1], flush=True)
        k = args.loader_workers
        if k > 0:
            loader = torch.utils.data.DataLoader(
                ds, batch_size=4, shuffle=True, num_workers=k, persistent_workers=True
            )
            rates = []
            for _ in range(args.repeats):
                t0, count = time.perf_counter(), 0
                for x, _y in loader:
                    count += x.shape[0]
                rates.append(count / (time.perf_counter() - t0))
            results.append(
                (
                    "DataLoader (decode + augment, batch 4)",
                    f"{k} worker processes",
                    f"{statistics.median(rates):.2f} images/s",
                )
            )
            print(results[-1], flush=True)
        acc, miou = colour_lookup_baseline(str(Path(tmp) / "difficulty"))
        results.append(
            (
                "difficulty: per-pixel colour lookup (majority class per RGB bin, 16^3 bins)",
                "default synthetic city 48 train / 12 val, 512x256, seed 0",
                f"pixel acc {100 * acc:.1f} %, mIoU {100 * miou:.1f} % (val)",
            )
        )
        print(results[-1], flush=True)
        if args.capacity_iters > 0:
            torch.set_num_threads(os.cpu_count() or 1)
            for name, params, miou in capacity_check(str(Path(tmp) / "difficulty"), args.capacity_iters):
                results.append(
                    (
                        f"difficulty: {name}, {params / 1e3:.0f} k parameters",
                        f"same training: Adam 1e-3, batch 8, {args.capacity_iters} steps, 128x256",
                        f"mIoU {100 * miou:.1f} % (val)",
                    )
                )
                print(results[-1], flush=True)

    lines = [
        "# Data benchmarks",
        "",
        "Produced by `python benchmarks/bench_data.py --write docs/bench/data.md` "
        f"(median of {args.repeats} runs of {args.n} images). Rates are given per wall-clock second and "
        "per CPU-second of the benchmark process (`time.process_time`), which is what one idle core "
        "would do and barely moves when the machine is busy. torch threads = 1 for the timing rows; "
        "the difficulty rows train with all cores.",
        "",
        "| what | setting | result |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in results],
        "",
        "Machine:",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        "The machine is shared with other jobs (see the load average): treat the numbers as a "
        "lower bound of what an idle core does. Generation scales with `--workers` (one scene per "
        "process, output independent of the worker count).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
