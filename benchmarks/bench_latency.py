"""Latency of every shipped model under every runtime: CPU, batch 1, 3x512x1024.

    python benchmarks/bench_latency.py                      # every shipped Cityscapes architecture
    python benchmarks/bench_latency.py --models configs/cityscapes/pspnet_r18.yaml --runs 5

One ``effseg.bench.measure.bench_models`` call per model (its runtimes timed
interleaved), results appended to ``docs/bench/latency.json`` model by model so a
long run keeps what it measured; ``benchmarks/write_benchmarks_md.py`` turns that
file into ``docs/benchmarks.md``.  Weights are random: latency does not depend on
them (int8 calibration ranges come from random inputs here; accuracy of int8 is
measured by ``bench_export.py`` on a trained checkpoint).

OpenMP threads spin-wait by default; on a machine shared with other jobs that
makes 2-thread eager PyTorch up to 10x slower and erratic, so this script sets
``OMP_WAIT_POLICY=PASSIVE`` (recorded with the results) unless it is already set.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first torch import

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNTIMES = "eager,channels_last,compile,onnxruntime,onnxruntime-int8"
# Largest models get fewer timed runs (each eager call takes seconds on 2 cores).
FEW_RUNS = ("r50", "r101")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", help="configs or names (default: benchmarks/models.py's list, cheapest first)"
    )
    parser.add_argument("--runtime", default=DEFAULT_RUNTIMES)
    parser.add_argument("--input-size", default="1024x512")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", default=str(ROOT / "docs/bench/latency.json"))
    parser.add_argument("--fresh", action="store_true", help="discard earlier results in --out")
    args = parser.parse_args(argv)

    import torch

    from effseg.bench.measure import bench_models
    from effseg.bench.sysinfo import measured_gemm_gflops
    from models import benchmark_configs

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = {} if args.fresh or not out.is_file() else json.loads(out.read_text())
    data.setdefault("runs", {})
    data["gemm_gflops_measured"] = measured_gemm_gflops()
    for spec in args.models or [str(p) for p in benchmark_configs()]:
        name = Path(spec).stem
        runs = max(3, args.runs // 2) if any(k in name for k in FEW_RUNS) else args.runs
        t0 = time.perf_counter()
        print(f"== {name}: {args.runtime}, {runs} runs", flush=True)
        report = bench_models(
            [spec],
            input_size=args.input_size,
            runtimes=args.runtime,
            threads=args.threads,
            warmup=args.warmup,
            runs=runs,
            progress=False,
        )
        report["wall_seconds"] = round(time.perf_counter() - t0, 1)
        data["runs"][name] = report
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1, default=str) + "\n")
        for r in report["results"]:
            msg = r.get("error") or (
                f"{r['latency_ms_median']:.0f} ms (p90 {r['latency_ms_p90']:.0f}), "
                f"{r['vs_eager']:.2f}x eager, {r.get('achieved_gflops_per_s', 0):.0f} GFLOP/s"
            )
            print(f"   {r['runtime']:>17}: {msg}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
