"""ONNX files timed one engine per process: onnxruntime against OpenVINO without sharing a process.

    python benchmarks/engine_isolated.py --work /tmp/effseg-int8-study      # the files int8_study wrote
    python benchmarks/engine_isolated.py --file tv=/tmp/tv.onnx --file ours=/tmp/ours.onnx --runs 20

``benchmarks/int8_study.py --openvino`` interleaves both engines in one process (the project's usual
way to keep ratios honest on a shared machine). OpenVINO's threads and caches then share the
process with onnxruntime's, and it ran slower there than alone. This script gives the other view:
each (file, engine) gets a fresh process that compiles the file once, makes ``--warmup`` untimed
calls and ``--runs`` timed ones, and reports its median. The processes run in turn, ``--rounds``
times (A B C ... A B C ...), so drift on the machine hits all of them alike; the figure per row is
the median over the rounds. Input: seeded random normal (1, 3, H, W) at the file's size, or
``--image`` resized to it.
Sets ``OMP_WAIT_POLICY=PASSIVE`` unless set; onnxruntime without spinning, OpenVINO with one
stream and the latency hint (effseg's settings, ``effseg.deploy.onnx_io.onnx_session``).

``--labels`` times what a segmentation user needs instead of the graph alone: input -> ``(H, W)``
uint8 class ids. Each file then runs in three forms: as given (``full``: full-resolution logits,
then ``argmax`` in PyTorch, what a torchvision user writes), with the argmax in the graph
(``argmax``: uint8 out, ``effseg.pipeline.postprocess.add_argmax_to_onnx``) and without its final
upsample (``lowres``: ``cut_final_resize``, then the exact boundary-only
``upsample_argmax``): the three ways effseg's predict pipeline chooses from. Every row's labels
on the timed input are compared with those of the same file's ``full`` form in onnxruntime
(the ``agreement`` column; 100 % means identical ids).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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


def child(
    path: str,
    engine: str,
    warmup: int,
    runs: int,
    threads: int | None,
    labels_out: str | None,
    image: str | None,
) -> None:
    """Runs in the fresh process: prints one JSON line ``{"ms": median, "precision": ...}``.
    With ``labels_out``, each timed call also turns the output into ``(H, W)`` uint8 ids
    (:func:`effseg.pipeline.postprocess.upsample_argmax`; a uint8 output is taken as is), and the
    ids of the last call are saved there (``.npy``)."""
    import time

    import numpy as np
    import torch

    from effseg.deploy.onnx_io import onnx_session
    from effseg.pipeline.postprocess import upsample_argmax

    backend, precision = ENGINES[engine]
    session = onnx_session(path, backend, threads=threads, precision=precision)
    inp = session.get_inputs()[0]
    size = (int(inp.shape[2]), int(inp.shape[3]))
    if image:  # a real frame: real class boundaries for the lowres form's exact upsample
        from effseg.config import IMAGENET_MEAN, IMAGENET_STD  # effseg's and torchvision's models
        from effseg.data.image import read_image
        from effseg.deploy.quantize import preprocess

        x = preprocess(read_image(image), size, IMAGENET_MEAN, IMAGENET_STD)
    else:
        x = np.random.default_rng(0).standard_normal([int(d) for d in inp.shape]).astype(np.float32)
    feed = {inp.name: x}

    def step():
        out = session.run(None, feed)[0]
        if labels_out is None:
            return out
        if out.dtype == np.uint8:  # argmax in the graph: (1, H, W) ids
            return out[0]
        return upsample_argmax(torch.from_numpy(out), size)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        ids = step()
        times.append((time.perf_counter() - t0) * 1000.0)
    if labels_out is not None:
        np.save(labels_out, ids)
    print(json.dumps({"ms": statistics.median(times), "precision": getattr(session, "precision", "f32")}))


def graph_forms(files: dict[str, Path], work: Path) -> list[tuple[str, str, Path]]:
    """``[(label, form, path)]``: each file as given (``full``), with the argmax in the graph
    (``argmax``) and without its final upsample (``lowres``, when the graph ends in one), the
    derived files written to ``work``."""
    from effseg.pipeline.postprocess import add_argmax_to_onnx, cut_final_resize

    forms = []
    for n, (label, path) in enumerate(files.items()):
        forms.append((label, "full", path))
        forms.append((label, "argmax", add_argmax_to_onnx(path, work / f"{n}.argmax.onnx")))
        if cut_final_resize(path, work / f"{n}.lowres.onnx"):
            forms.append((label, "lowres", work / f"{n}.lowres.onnx"))
    return forms


def agreement(rows: list[tuple[str, str, Path, str]], i: int, work: Path) -> str:
    """Share of row ``i``'s ids (last timed call) equal to those of the same file's ``full`` form
    in onnxruntime."""
    import numpy as np

    label = rows[i][0]
    ref = next((j for j, (lb, form, _, e) in enumerate(rows)
                if lb == label and form == "full" and e == "onnxruntime"), None)  # fmt: skip
    if ref is None:
        return "-"
    a, b = np.load(work / f"ids{ref}.npy"), np.load(work / f"ids{i}.npy")
    return f"{float((a == b).mean()):.2%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="a benchmarks/int8_study.py --work folder")
    parser.add_argument("--file", action="append", default=[], metavar="LABEL=PATH", help="an ONNX file")
    parser.add_argument("--engines", default="onnxruntime,openvino", help=f"some of {', '.join(ENGINES)}")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--labels", action="store_true",
                        help="time input -> (H, W) uint8 ids, three graph forms per file")  # fmt: skip
    parser.add_argument("--image", default=None,
                        help="time on this image (resized to the file's size; ImageNet mean/std) "
                             "instead of seeded random noise")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="markdown to write")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "ENGINE"), help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.child:
        child(*args.child, args.warmup, args.runs, args.threads, args.labels_out, args.image)
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
    work = Path(tempfile.mkdtemp(prefix="effseg-engine-isolated-"))
    forms = graph_forms(files, work) if args.labels else [(lb, "graph", p) for lb, p in files.items()]
    rows = [(label, form, path, engine) for label, form, path in forms for engine in engines]
    medians: dict[int, list[float]] = {i: [] for i in range(len(rows))}
    precision: dict[int, str] = {}
    for r in range(args.rounds):
        for i, (label, form, path, engine) in enumerate(rows):
            cmd = [sys.executable, __file__, "--child", str(path), engine, "--runs", str(args.runs),
                   "--warmup", str(args.warmup)]  # fmt: skip
            cmd += ["--threads", str(args.threads)] if args.threads else []
            cmd += ["--labels-out", str(work / f"ids{i}.npy")] if args.labels else []
            cmd += ["--image", args.image] if args.image else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise SystemExit(f"{label} ({form}) on {engine}: {out.stderr.strip().splitlines()[-1:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            medians[i].append(result["ms"])
            precision[i] = result["precision"]
            print(f"round {r + 1}: {label:18s} {form:6s} {engine:12s} {result['precision']:5s} "
                  f"{result['ms']:8.2f} ms")  # fmt: skip
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    base = next((statistics.median(medians[i]) for i, (lb, form, _, e) in enumerate(rows)
                 if lb == "torchvision fp32" and form in ("graph", "full") and e == "onnxruntime"),
                None)  # fmt: skip
    command = " ".join(sys.argv[1:] if argv is None else argv)
    what = "input -> (H, W) uint8 ids" if args.labels else "the graph alone"
    what += f", input {Path(args.image).name}" if args.image else ", input seeded random noise"
    md = [f"One engine per process, {args.rounds} rounds x {args.runs} runs after {args.warmup} warm-up, "
          f"timing {what}; {cpu}; load {os.getloadavg()[0]:.2f} at the end; "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}.", "",
          f"Command: `python benchmarks/engine_isolated.py {command}`", "",
          "| file | form | engine | precision | median ms (rounds) | vs torchvision onnxruntime "
          "| agreement |",
          "|---|---|---|---|---|---:|---:|"]  # fmt: skip
    for i, (label, form, _, engine) in enumerate(rows):
        med = statistics.median(medians[i])
        each = ", ".join(f"{m:.1f}" for m in medians[i])
        agree = agreement(rows, i, work) if args.labels else "-"
        md.append(f"| {label} | {form} | {engine} | {precision[i]} | **{med:.2f}** ({each}) | "
                  f"{f'{med / base:.2f}x' if base else '-'} | {agree} |")  # fmt: skip
    text = "\n".join(md) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
