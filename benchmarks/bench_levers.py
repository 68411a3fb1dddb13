"""Which onnxruntime settings matter: optimisation level, threads, which ops go int8.

    python benchmarks/bench_levers.py [--models pspnet_resnet18 pspnet_mobilenetv2] [--input-size 512x256]

For each model (random weights): one fp32 ONNX export, then onnxruntime sessions with
graph optimisation disabled / basic / extended / all, with 1 thread and with all
cores, and int8 QDQ variants (every quantisable op; Conv only; everything but
Resize), all timed interleaved (one call of each per round), median of ``--runs``.
Results: ``docs/bench/levers.json`` (rendered by write_benchmarks_md.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_latency.py

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["pspnet_resnet18", "pspnet_mobilenetv2"])
    parser.add_argument("--input-size", default="512x256")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "docs/bench/levers.json"))
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from effseg.bench.measure import resolve_model
    from effseg.bench.sysinfo import machine_info
    from effseg.bench.timing import latency_stats
    from effseg.deploy.export import export_onnx
    from effseg.deploy.onnx_io import ort_session
    from effseg.deploy.quantize import quantize_onnx
    from effseg.size import parse_size

    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    h, w = parse_size(args.input_size, "--input-size")
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    calib = [np.random.default_rng(i).standard_normal((1, 3, h, w)).astype(np.float32) for i in range(4)]
    result: dict = {
        "machine": machine_info(),
        "input_size": [h, w],
        "runs": args.runs,
        "models": {},
        "fp32_logits": True,
    }  # quantize_onnx's default: classifier conv + upsample stay fp32
    for spec in args.models:
        print(f"== {spec}", flush=True)
        model = resolve_model(spec).model
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            export_onnx(model, fp32, (h, w), check_parity=False)
            variants = {
                "int8 all ops": None,
                "int8 Conv only": ("Conv",),
                "int8 all but Resize": "exclude-resize",
            }
            files = {}
            for label, ops in variants.items():
                path = Path(tmp) / f"{len(files)}.onnx"
                if ops == "exclude-resize":
                    quantize_onnx(fp32, path, calib, exclude_op_types=("Resize",))
                else:
                    quantize_onnx(fp32, path, calib, op_types=ops)
                files[label] = path
            sessions = {
                f"fp32 opt={lvl}, {cores} threads": ort_session(fp32, cores, lvl)
                for lvl in ("disable", "basic", "extended", "all")
            }
            sessions["fp32 opt=all, 1 thread"] = ort_session(fp32, 1, "all")
            for label, path in files.items():
                sessions[f"{label}, {cores} threads"] = ort_session(path, cores, "all")

            def eager(m: torch.nn.Module = model) -> None:
                with torch.inference_mode():
                    m(torch.from_numpy(x))

            calls = {"eager PyTorch fp32": eager}
            for label, sess in sessions.items():
                name = sess.get_inputs()[0].name
                calls[label] = lambda s=sess, n=name: s.run(None, {n: x})
            for fn in calls.values():
                fn()
            times: dict[str, list[float]] = {k: [] for k in calls}
            for _ in range(args.runs):
                for label, fn in calls.items():
                    t0 = time.perf_counter()
                    fn()
                    times[label].append((time.perf_counter() - t0) * 1000)
        eager_ms = latency_stats(times["eager PyTorch fp32"])["latency_ms_median"]
        rows = {}
        for label, t in times.items():
            st = latency_stats(t)
            rows[label] = {
                "median_ms": st["latency_ms_median"],
                "p90_ms": st["latency_ms_p90"],
                "vs_eager": st["latency_ms_median"] / eager_ms,
            }
            print(
                f"   {label:>34}: {st['latency_ms_median']:.0f} ms ({rows[label]['vs_eager']:.2f}x)",
                flush=True,
            )
        result["models"][spec] = rows
        Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
