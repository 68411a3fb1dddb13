"""Training throughput and peak memory per model (512x512 crops, batch 2 unless told).

    python benchmarks/bench_train.py                               # print the table
    python benchmarks/bench_train.py --write docs/bench/training.md

One training step = the trainer's own ``train_step`` (``effseg.engine.train``) on each
config's model and training settings: forward in train mode, the losses the model declares,
backward, the optimiser with its parameter groups, AMP and the LR schedule -- what
``effseg train`` does per iteration, minus data loading (random tensors, so the data
pipeline is not measured here: see benchmarks/bench_data.py). The models are
benchmarks/models.py's list (every shipped Cityscapes architecture). Each model runs in a
fresh child process so its peak resident memory (``ru_maxrss``) is its own; on CUDA
``torch.cuda.max_memory_allocated`` is reported instead. The machine may be shared:
images/s are given per wall-clock second and per CPU-second of the process (the latter is
what idle cores would do).
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


def measure_one(config: str, crop: tuple[int, int], batch: int, steps: int, warmup: int) -> dict:
    """Time the trainer's own step (``effseg.engine.train``) on the model and training settings
    of ``config`` (a shipped config name or a YAML path), fed random ``(batch, 3, H, W)`` crops.

    The trainer is built on a tiny synthetic dataset (it needs one to start); the timed calls are
    its ``train_step``: forward, the model's declared losses, backward, optimiser, AMP scaler, LR
    schedule -- everything ``effseg train`` does per iteration except loading data.
    """
    import tempfile

    import torch

    from effseg.bench.models_table import count_params
    from effseg.config import load_config
    from effseg.engine import distributed as du
    from effseg.engine.train import _Trainer  # the trainer itself: its step is what is measured
    from effseg.zoo.configs import find_config

    device = "cuda" if torch.cuda.is_available() else "cpu"
    h, w = crop
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            find_config(config),
            [
                "data.dataset=synthetic",
                f"data.root={tmp}/city",
                f"data.options={{n_train: {batch}, n_val: 1, size: 128x64, workers: 1}}",
                "data.num_workers=0",
                f"train.batch_size={batch}",
                "train.iterations=100000",
                f"train.device={device}",
                "train.tensorboard=false",
            ],
        )
        info = du.init_distributed(device)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        trainer = _Trainer(cfg, Path(tmp) / "run", info, resume=False)
        trainer.model.train()
        x = torch.randn(batch, 3, h, w)
        y = torch.randint(0, cfg.model.num_classes, (batch, h, w))
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def step() -> None:
            trainer.train_step(x, y)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()

        for _ in range(warmup):
            step()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        model = trainer.model
    return {
        "model": Path(config).stem,
        "params_m": count_params(model)["params_total_m"],
        "s_per_step": wall / steps,
        "img_per_s": batch * steps / wall,
        "img_per_cpu_s": batch * steps / cpu if cpu > 0 else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_model_mb": rss_before,
        "cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "device": device,
        "threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0],
    }


def markdown(rows: list[dict], args: argparse.Namespace, machine: str) -> str:
    h, w = args.crop
    lines = [
        "# Training throughput",
        "",
        f"Measured by `benchmarks/bench_train.py`: the trainer's step (forward, the model's losses, "
        f"backward, the config's optimiser) on random {w}x{h} crops, batch {args.batch}, "
        f"{args.warmup} warm-up + {args.steps} timed steps, no data loading. Each model in its own process.",
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
    parser.add_argument(
        "--models", nargs="*", help="config names or paths (default: benchmarks/models.py's list)"
    )
    parser.add_argument("--crop", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads in each child (default: torch's)"
    )
    parser.add_argument("--write", metavar="MD", help="write the markdown table here")
    parser.add_argument("--json", metavar="FILE", help="write the raw results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: one config
    args = parser.parse_args()

    if args.one:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(measure_one(args.one, tuple(args.crop), args.batch, args.steps, args.warmup)))
        return 0

    from models import benchmark_configs

    models = args.models or [str(p) for p in benchmark_configs()]
    rows = []
    for config in models:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            config,
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
            rows.append({"model": Path(config).stem, "error": out.stderr.strip().splitlines()[-1][:80]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)

    from effseg.bench.sysinfo import describe, machine_info

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
