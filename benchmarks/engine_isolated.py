"""ONNX files timed one engine per process: onnxruntime against OpenVINO without sharing a process.

    python benchmarks/engine_isolated.py --work /tmp/effseg-int8-study      # the files int8_study wrote
    python benchmarks/engine_isolated.py --file tv=/tmp/tv.onnx --file ours=/tmp/ours.onnx --runs 20

``benchmarks/int8_study.py --openvino`` interleaves both engines in one process (the project's usual
way to keep ratios honest on a shared machine). OpenVINO's threads and caches then share the
process with onnxruntime's, and it ran slower there than alone. This script gives the other view:
each (file, engine) gets a fresh process that compiles the file once, makes ``--warmup`` untimed
calls and ``--runs`` timed ones, and reports its median. The processes run in turn, ``--rounds``
times (A B C ... A B C ...), so drift on the machine hits all of them alike; the figure per row is
the median over the rounds. Input: seeded random normal (1, 3, H, W) at the file's size.
Sets ``OMP_WAIT_POLICY=PASSIVE`` unless set; onnxruntime without spinning, OpenVINO with one
stream and the latency hint (effseg's settings, ``effseg.deploy.onnx_io.onnx_session``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ENGINES = {
    "onnxruntime": ("onnxruntime", "auto"),
    "openvino": ("openvino", "auto"),  # OpenVINO's default precision: bf16 on CPUs with AMX
    "openvino-f32": ("openvino", "f32"),
}
# int8_study's file names -> row labels
STUDY_FILES = {
    "fp32.onnx": "effseg fp32",
    "qdq-pc.onnx": "effseg int8 (qdq-pc)",
    "torchvision_lraspp.onnx": "torchvision fp32",
}


def child(path: str, engine: str, warmup: int, runs: int, threads: int | None) -> None:
    """Runs in the fresh process: prints one JSON line ``{"ms": median, "precision": ...}``."""
    import time

    import numpy as np

    from effseg.deploy.onnx_io import onnx_session

    backend, precision = ENGINES[engine]
    session = onnx_session(path, backend, threads=threads, precision=precision)
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([int(d) for d in inp.shape]).astype(np.float32)
    feed = {inp.name: x}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    print(json.dumps({"ms": statistics.median(times), "precision": getattr(session, "precision", "f32")}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="a benchmarks/int8_study.py --work folder")
    parser.add_argument("--file", action="append", default=[], metavar="LABEL=PATH", help="an ONNX file")
    parser.add_argument("--engines", default="onnxruntime,openvino", help=f"some of {', '.join(ENGINES)}")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="markdown to write")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "ENGINE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.child:
        child(args.child[0], args.child[1], args.warmup, args.runs, args.threads)
        return 0
    files: dict[str, Path] = {}
    if args.work:
        found = {label: args.work / name for name, label in STUDY_FILES.items()}
        files.update({label: path for label, path in found.items() if path.is_file()})
    for item in args.file:
        label, _, path = item.partition("=")
        files[label] = Path(path)
    missing = [str(p) for p in files.values() if not p.is_file()]
    if not files or missing:
        hint = ", ".join(missing) or "give --work or --file LABEL=PATH"
        raise SystemExit(f"no ONNX files to time ({hint})")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES]
    if bad:
        raise SystemExit(f"--engines {','.join(bad)}: expected some of {', '.join(ENGINES)}")
    rows = [(label, path, engine) for label, path in files.items() for engine in engines]
    medians: dict[int, list[float]] = {i: [] for i in range(len(rows))}
    precision: dict[int, str] = {}
    for r in range(args.rounds):
        for i, (label, path, engine) in enumerate(rows):
            cmd = [sys.executable, __file__, "--child", str(path), engine, "--runs", str(args.runs),
                   "--warmup", str(args.warmup)]  # fmt: skip
            cmd += ["--threads", str(args.threads)] if args.threads else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise SystemExit(f"{label} on {engine}: {out.stderr.strip().splitlines()[-1:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            medians[i].append(result["ms"])
            precision[i] = result["precision"]
            print(f"round {r + 1}: {label:22s} {engine:12s} {result['precision']:5s} {result['ms']:8.2f} ms")  # noqa: E501
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    base = next((statistics.median(medians[i]) for i, (lb, _, e) in enumerate(rows)
                 if lb == "torchvision fp32" and e == "onnxruntime"), None)  # fmt: skip
    command = " ".join(sys.argv[1:] if argv is None else argv)
    md = [f"One engine per process, {args.rounds} rounds x {args.runs} runs after {args.warmup} warm-up; "
          f"{cpu}; load {os.getloadavg()[0]:.2f} at the end; "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}.", "",
          f"Command: `python benchmarks/engine_isolated.py {command}`", "",
          "| file | engine | precision | median ms (rounds) | vs torchvision onnxruntime |",
          "|---|---|---|---|---:|"]  # fmt: skip
    for i, (label, _, engine) in enumerate(rows):
        med = statistics.median(medians[i])
        each = ", ".join(f"{m:.1f}" for m in medians[i])
        md.append(f"| {label} | {engine} | {precision[i]} | **{med:.2f}** ({each}) | "
                  f"{f'{med / base:.2f}x' if base else '-'} |")  # fmt: skip
    text = "\n".join(md) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
