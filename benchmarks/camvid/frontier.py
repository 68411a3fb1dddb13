"""The CamVid frontier of docs/camvid.md: val mIoU of each architecture under one training budget
beside its latency on this CPU, as one table and one Pareto plot (mIoU vs onnxruntime latency).

    python benchmarks/camvid/frontier.py --study runs/camvid_study \\
        --bench runs/bench/480x360/bench.json runs/bench/1024x512/bench.json \\
        --plot docs/img/camvid_pareto.png

Inputs are what other commands wrote, nothing is re-measured here:

- ``--study``: the folder of ``benchmarks/camvid/study.py`` rows; each architecture row's
  ``eval/eval.json`` (``effseg eval`` on CamVid val, 101 images at 480x360) gives the mIoU and
  the training record (iterations, minutes), and ``int8.json`` the int8 mIoU. A row may also be
  a folder of just those two files (``eval.json`` at its top: the committed copies in
  ``benchmarks/camvid/results/``, where the run folder itself is not kept);
- ``--bench``: ``bench.json`` files of one ``effseg bench`` run each (params, GFLOPs and median
  latency per runtime); the first one's input size is the plot's.

An architecture row's latency is its bench row's: latency does not depend on the weights, so
the bench may time random weights (or the shipped model for DDRNet-23-slim).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from effseg.bench.models_table import count_params
from effseg.bench.pareto import plot_pareto
from effseg.engine.checkpoint import load_checkpoint
from effseg.models import build_model

# study row -> (label, name of its `effseg bench` row)
ARCHITECTURES = {
    "ddrnet23_slim": ("DDRNet-23-slim", "camvid-ddrnet23_slim"),
    "pidnet_s": ("PIDNet-S", "pidnet_s"),
    "regseg": ("RegSeg", "regseg"),
    "bisenetv2": ("BiSeNetV2", "bisenetv2"),
    "lraspp_mbv3_large_os16": ("LR-ASPP-MobileNetV3-Large OS16", "lraspp_mobilenetv3_large_os16"),
    "pspnet_mbv2": ("PSPNet-MobileNetV2 OS8", "pspnet_mobilenetv2"),
}
RUNTIMES = ("eager", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8")


def load_bench(path: Path) -> tuple[str, dict[str, dict[str, dict]]]:
    """``(WIDTHxHEIGHT, {model: {runtime: row}})`` of one bench.json."""
    report = json.loads(path.read_text())
    h, w = report["settings"]["input_size"]
    rows: dict[str, dict[str, dict]] = {}
    for r in report["results"]:
        rows.setdefault(r["model"], {})[r["runtime"]] = r
    return f"{w}x{h}", rows


def inference_params_m(run: Path) -> float | None:
    """Parameters (M) of a row's inference network (its ``last.pt``), counted now by effseg's rule
    (a bench.json written before a counting fix would disagree with docs/models.md); None when
    the row keeps no checkpoint."""
    if not (run / "last.pt").is_file():
        return None
    ckpt = load_checkpoint(run / "last.pt")
    cfg = ckpt.get("model_config")
    return count_params(build_model(**cfg))["params_m"] if cfg else None


def _ms(rows: dict[str, dict], runtime: str) -> float | None:
    return (rows.get(runtime) or {}).get("latency_ms_median")


def _fmt(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def int8_miou_of(run: Path) -> float | None:
    """The int8 val mIoU (%) that ``effseg export RUN --int8 --json RUN/int8.json`` measured."""
    path = run / "int8.json"
    if not path.is_file():
        return None
    v = (json.loads(path.read_text()).get("int8") or {}).get("miou_int8")
    return None if v is None else (v * 100 if v <= 1 else v)


def frontier(
    study: Path, benches: list[Path]
) -> tuple[str, list[tuple[float, float, str]], list[str], list[str]]:
    """Markdown table, plot points ``(ms, mIoU, label)``, their markers and colours."""
    loaded = [load_bench(p) for p in benches]
    head = [
        "model",
        "params (M)",
        f"GFLOPs {loaded[0][0]}",
        "val mIoU",
        "int8 val mIoU",
        "iterations",
        "train min",
    ]
    for size, _ in loaded:
        head += [f"{rt} ms {size}" for rt in RUNTIMES]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    points: list[tuple[float, float, str]] = []
    markers: list[str] = []
    colors: list[str] = []
    for row, (label, bench_name) in ARCHITECTURES.items():
        found = [p for p in (study / row / "eval" / "eval.json", study / row / "eval.json") if p.is_file()]
        path = found[0] if found else None
        if path is None:
            continue
        ev = json.loads(path.read_text())
        miou, tr = ev["miou"] * 100, ev.get("training") or {}
        first = loaded[0][1].get(bench_name, {})
        any_row = next(iter(first.values()), {})
        int8_miou = int8_miou_of(study / row)
        cells = [
            label, _fmt(inference_params_m(study / row) or any_row.get("params_m"), 2),
            _fmt(any_row.get("gflops"), 2), f"{miou:.2f}",
            _fmt(int8_miou, 2), str(tr.get("iterations", "-")),
            _fmt(tr.get("train_time_s", 0) / 60),
        ]  # fmt: skip
        for _, rows in loaded:
            cells += [_fmt(_ms(rows.get(bench_name, {}), rt)) for rt in RUNTIMES]
        lines.append("| " + " | ".join(cells) + " |")
        colour = f"C{len(lines) - 3}"
        for rt, marker in (("onnxruntime", "o"), ("onnxruntime-int8", "s")):
            ms = _ms(first, rt)
            y = int8_miou if rt.endswith("int8") else miou
            if ms is not None and y is not None:  # int8 only where its own mIoU was measured
                points.append((ms, y, "" if rt.endswith("int8") else label))
                markers.append(marker)
                colors.append(colour)
    return "\n".join(lines), points, markers, colors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--study", type=Path, required=True, help="folder of benchmarks/camvid/study.py rows")
    ap.add_argument("--bench", type=Path, nargs="+", required=True, help="bench.json of `effseg bench`")
    ap.add_argument("--plot", type=Path, default=None, help="Pareto plot PNG to write")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    for p in args.bench:
        if not p.is_file():
            sys.exit(f"--bench {p}: no such file (expected the bench.json of an `effseg bench` run)")
    table, points, markers, colors = frontier(args.study, args.bench)
    print(table)
    if args.plot and points:
        size = load_bench(args.bench[0])[0]
        plot_pareto(
            points,
            args.plot,
            xlabel=f"onnxruntime latency, median (ms, batch 1, {size}); circle fp32, square int8 (own mIoU)",
            ylabel="CamVid val mIoU (%)",
            title=args.title,
            markers=markers,
            colors=colors,
        )
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
