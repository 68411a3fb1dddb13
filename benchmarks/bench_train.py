"""Training throughput and peak memory per model (512x512 crops, batch 2 unless told).

    python benchmarks/bench_train.py                               # print the table
    python benchmarks/bench_train.py --write docs/bench/training.md

One training step = forward in train mode (main + aux logits), the trainer's loss
(cross-entropy, ignore 255, aux weight 0.4), backward and an SGD step with the
backbone/head parameter groups: what ``effseg train`` does per iteration, minus data
loading (random tensors, so the data pipeline is not measured here: see
benchmarks/bench_data.py). Each model runs in a fresh child process so its peak
resident memory (``ru_maxrss``) is its own; on CUDA ``torch.cuda.max_memory_allocated``
is reported instead. The machine may be shared: images/s are given per wall-clock
second and per CPU-second of the process (the latter is what idle cores would do).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

MODELS = [
    ("pspnet", "resnet18"),
    ("pspnet", "resnet50"),
    ("pspnet", "resnet101"),
    ("aspp", "resnet18"),
    ("ocr", "resnet18"),
    ("pspnet", "mobilenetv2"),
    ("lraspp", "mobilenetv3_large"),
]


def measure_one(head: str, backbone: str, crop: tuple[int, int], batch: int, steps: int, warmup: int) -> dict:
    import torch

    from effseg.config import TrainConfig
    from effseg.engine.losses import build_criterion
    from effseg.models import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = build_model(head, backbone=backbone, num_classes=19).to(device).train()
    groups = model.parameter_groups()
    opt = torch.optim.SGD(
        [{"params": groups["backbone"], "lr": 0.01}, {"params": groups["head"], "lr": 0.1}],
        lr=0.01,
        momentum=0.9,
        weight_decay=1e-4,
    )
    criterion = build_criterion(TrainConfig(), model.loss_terms).to(device)
    x = torch.randn(batch, 3, *crop, device=device)
    y = torch.randint(0, 19, (batch, *crop), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        loss, _ = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "model": f"{head}_{backbone}",
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "s_per_step": wall / steps,
        "img_per_s": batch * steps / wall,
        "img_per_cpu_s": batch * steps / cpu if cpu > 0 else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_model_mb": rss_before,
        "cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0],
    }


def markdown(rows: list[dict], args: argparse.Namespace, machine: str) -> str:
    h, w = args.crop
    lines = [
        "# Training throughput",
        "",
        f"Measured by `benchmarks/bench_train.py`: one training step (forward with aux, CE + 0.4 aux loss, "
        f"backward, SGD) on random {h}x{w} (HxW) crops, batch {args.batch}, {args.warmup} warm-up + "
        f"{args.steps} timed steps, no data loading. Each model in its own process.",
        "",
        f"Machine: {machine}",
        "",
        "| model | params (M) | s / step | img/s (wall) | img/s per CPU-second | peak RSS (MB) | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | - | - | - | - | - | {r['error']} |")
            continue
        mem = r["cuda_max_allocated_mb"] if r["cuda_max_allocated_mb"] is not None else r["peak_rss_mb"]
        lines.append(
            f"| {r['model']} | {r['params_m']:.1f} | {r['s_per_step']:.2f} | {r['img_per_s']:.2f} | "
            f"{r['img_per_cpu_s']:.2f} | {mem:.0f} | {r['load_avg_1m']:.1f} |"
        )
    lines += [
        "",
        "Peak RSS is the whole process (Python, torch and the model's weights, activations, "
        "gradients and momentum); on CUDA the column is `torch.cuda.max_memory_allocated`. "
        "`img/s per CPU-second` divides by the process's CPU time, so it is less sensitive "
        "to other processes on a shared machine than the wall-clock rate.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="*", help="head:backbone pairs (default: the reference rows)")
    parser.add_argument("--crop", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads in each child (default: torch's)"
    )
    parser.add_argument("--write", metavar="MD", help="write the markdown table here")
    parser.add_argument("--json", metavar="FILE", help="write the raw results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: head:backbone
    args = parser.parse_args()

    if args.one:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        head, backbone = args.one.split(":")
        print(json.dumps(measure_one(head, backbone, tuple(args.crop), args.batch, args.steps, args.warmup)))
        return 0

    models = [tuple(m.split(":")) for m in args.models] if args.models else MODELS
    rows = []
    for head, backbone in models:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            f"{head}:{backbone}",
            "--crop",
            *map(str, args.crop),
            "--batch",
            str(args.batch),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            rows.append({"model": f"{head}_{backbone}", "error": out.stderr.strip().splitlines()[-1][:80]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)

    from effseg.tools.sysinfo import describe, machine_info

    info = machine_info()
    if args.threads:
        info["torch_threads"] = args.threads
    text = markdown(rows, args, describe(info))
    print(text)
    if args.write:
        path = Path(args.write)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and "<!-- synthetic -->" in path.read_text():
            keep = path.read_text().split("<!-- synthetic -->", 1)[1]
            text = text + "<!-- synthetic -->" + keep
        path.write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
