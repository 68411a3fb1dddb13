"""int8 accuracy and speed of trained models: export, quantize, evaluate, time.

    python benchmarks/bench_export.py RUN_DIR [RUN_DIR ...] [--calib-images 16] [--runs 5]

For each trained run (e.g. ``effseg train configs/synthetic/pspnet_r18.yaml``):

1. ``effseg.deploy.export_run.run_export``: fp32 ONNX at 1024x512, static int8 QDQ
   calibrated on images of the run's *train* split, argmax agreement int8 vs fp32
   and mIoU of both on the *val* split (the ONNX files are what is evaluated);
2. latency of eager fp32 PyTorch, onnxruntime fp32 and onnxruntime int8 on those
   very files, timed interleaved at batch 1, 3x512x1024.

Results go to ``docs/bench/export.json``; ``write_benchmarks_md.py`` renders them.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_latency.py

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--input-size", default="1024x512")
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", default="/tmp/effseg_bench_export")
    parser.add_argument("--out", default=str(ROOT / "docs/bench/export.json"))
    args = parser.parse_args(argv)

    import torch

    from effseg.bench.measure import bench_models
    from effseg.deploy.export_run import run_export
    from effseg.size import parse_size

    torch.set_num_threads(args.threads)
    h, w = parse_size(args.input_size, "--input-size")
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {}
    for run in args.runs_dirs:
        name = Path(run).name
        work = Path(args.work) / name
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        print(f"== {name}: export + int8 + eval", flush=True)
        rep = run_export(
            run,
            work / "int8.onnx",
            input_size=(h, w),
            int8=True,
            calib="train",
            calib_images=args.calib_images,
            eval_split="val",
        )
        rep["export_wall_seconds"] = round(time.perf_counter() - t0, 1)
        q = rep["int8"]
        print(
            f"   agreement {q['argmax_agreement_vs_fp32']:.4f}, mIoU fp32 {q.get('miou_fp32')} "
            f"int8 {q.get('miou_int8')}",
            flush=True,
        )
        # bench_models looks for model_HxW.onnx / model_HxW_int8.onnx in its work dir: time these files.
        bench_dir = work / "bench"
        (bench_dir / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(rep["fp32_path"], bench_dir / name / f"model_{h}x{w}.onnx")
        shutil.copy(rep["path"], bench_dir / name / f"model_{h}x{w}_int8.onnx")
        lat = bench_models(
            [run],
            input_size=(h, w),
            runtimes="eager,onnxruntime,onnxruntime-int8",
            threads=args.threads,
            warmup=1,
            runs=args.runs,
            work_dir=bench_dir,
            stages=False,
            progress=False,
        )
        for r in lat["results"]:
            print(
                f"   {r['runtime']:>17}: {r.get('latency_ms_median', float('nan')):.0f} ms, "
                f"{r.get('vs_eager', float('nan')):.2f}x eager {r.get('error', '')}",
                flush=True,
            )
        data[name] = {"export": rep, "latency": lat}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
