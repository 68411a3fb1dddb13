"""Generate docs/efficiency.md (+ PNG plots in docs/efficiency/) from effseg's own models.

    python benchmarks/efficiency_report.py                 # measure, then write the page
    python benchmarks/efficiency_report.py --render-only   # rewrite the page from the saved JSON

Measures, per model of configs/cityscapes (random weights; timing does not depend on them):
parameters and GFLOPs per stage, eager time per layer type (torch.profiler), FLOPs / time /
GFLOP/s per kind of convolution (forward hooks), onnxruntime time per operator type for the
dense ResNet models (onnxruntime's profiler); the MobileNetV2 depthwise-separable accounting;
and what output stride 8 / 16 / 32 costs.  Per-stage latencies come from
``docs/bench/latency.json`` (benchmarks/bench_latency.py) when present.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_latency.py

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "efficiency.md"
IMG = ROOT / "docs" / "efficiency"
DATA = IMG / "efficiency.json"
LATENCY = ROOT / "docs" / "bench" / "latency.json"
ORT_PROFILED = ["pspnet_r18", "aspp_r18", "pspnet_r50"]


def measure(size: tuple[int, int], models: list[str], threads: int, dilation_runs: int) -> dict:
    import torch
    from efficiency import conv_kind_stats, depthwise_separable_table, layer_type_times, onnxruntime_op_times

    from effseg.bench.measure import resolve_model, stage_breakdown
    from effseg.bench.models_table import count_flops, count_params
    from effseg.bench.sysinfo import machine_info, peak_fp32_flops
    from effseg.bench.timing import time_callable
    from effseg.deploy.export import export_onnx
    from effseg.models import build_model

    torch.set_num_threads(threads)
    x = torch.randn(1, 3, *size)
    out: dict = {"input_size": list(size), "machine": machine_info(), "models": {}, "dilation": []}
    out["peak_fp32"] = peak_fp32_flops(out["machine"])
    for name in models:
        print(f"== {name}", flush=True)
        bm = resolve_model(name if "/" in name else f"cityscapes/{name}")  # a shipped config name
        m = bm.model
        rec = {**count_params(m), **count_flops(m, x), "config": m.config}
        rec["conv_kinds"] = conv_kind_stats(m, x)
        rec["layer_types_ms"] = layer_type_times(m, x, warmup=0)
        rec["stages"] = stage_breakdown(m, x, warmup=0, runs=3)
        if name in ORT_PROFILED:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "m.onnx"
                export_onnx(m, path, size, check_parity=False)
                rec["ort_op_ms"] = onnxruntime_op_times(path, x, threads=threads, runs=2)
        out["models"][name] = rec
        DATA.parent.mkdir(parents=True, exist_ok=True)
        DATA.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print("== mobilenetv2 depthwise-separable table", flush=True)
    mbv2 = build_model("pspnet", backbone="mobilenetv2").eval()
    out["mbv2_blocks"] = depthwise_separable_table(mbv2, x)
    for backbone in ("resnet18", "mobilenetv2"):
        for os_ in (8, 16, 32):
            print(f"== dilation {backbone} OS{os_}", flush=True)
            m = build_model("pspnet", backbone=backbone, output_stride=os_).eval()
            with torch.inference_mode():
                ms = time_callable(lambda m=m: m(x), warmup=1, runs=dilation_runs)
            fl = count_flops(m, x)
            out["dilation"].append(
                {
                    "backbone": backbone,
                    "output_stride": os_,
                    "gflops": fl["gflops"],
                    "gflops_stages": fl["gflops_stages"],
                    "eager_ms": sorted(ms)[len(ms) // 2],
                    "feature_hw": [size[0] // os_, size[1] // os_],
                }
            )
            DATA.write_text(json.dumps(out, indent=1, default=str) + "\n")
    return out


def _plots(data: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    files = {}
    # 1. eager time per layer type (share of the profiled total)
    names = list(data["models"])
    groups = sorted(
        {g for n in names for g in data["models"][n]["layer_types_ms"]},
        key=lambda g: -sum(data["models"][n]["layer_types_ms"].get(g, 0) for n in names),
    )
    fig, ax = plt.subplots(figsize=(8, 4.5))
    left = [0.0] * len(names)
    for g in groups:
        vals = []
        for n in names:
            lt = data["models"][n]["layer_types_ms"]
            vals.append(100 * lt.get(g, 0) / max(sum(lt.values()), 1e-9))
        ax.barh(names, vals, left=left, label=g)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_xlabel("% of eager CPU time (torch.profiler, self time per aten op)")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    files["layers"] = "layer_types.png"
    fig.savefig(IMG / files["layers"], dpi=110)
    plt.close(fig)
    # 2. dilation: GFLOPs and latency vs output stride
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for bb in ("resnet18", "mobilenetv2"):
        rows = [r for r in data["dilation"] if r["backbone"] == bb]
        axes[0].plot(
            [r["output_stride"] for r in rows], [r["gflops"] for r in rows], "o-", label=f"pspnet_{bb}"
        )
        axes[1].plot(
            [r["output_stride"] for r in rows], [r["eager_ms"] for r in rows], "o-", label=f"pspnet_{bb}"
        )
    for ax, lab in zip(axes, ("GFLOPs", "eager latency (ms)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks([8, 16, 32], ["8", "16", "32"])
        ax.set_xlabel("output stride")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    files["dilation"] = "dilation.png"
    fig.savefig(IMG / files["dilation"], dpi=110)
    plt.close(fig)
    # 3. MobileNetV2: separable vs standard conv FLOPs per block
    rows = data["mbv2_blocks"]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    idx = range(len(rows))
    ax.bar(
        [i - 0.2 for i in idx],
        [r["standard_gflops"] for r in rows],
        0.4,
        label="standard 3x3 conv hidden->out",
    )
    ax.bar(
        [i + 0.2 for i in idx],
        [r["separable_gflops"] for r in rows],
        0.4,
        label="depthwise 3x3 + 1x1 project",
    )
    ax.set_xticks(list(idx), [r["block"].split(".")[-1] for r in rows])
    ax.set_xlabel("backbone.features block")
    ax.set_ylabel("GFLOPs")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    files["mbv2"] = "mbv2_separable.png"
    fig.savefig(IMG / files["mbv2"], dpi=110)
    plt.close(fig)
    return files


def _f(v: float, nd: int = 1) -> str:
    return f"{v:.{nd}f}"


def render(data: dict) -> str:
    from effseg.bench.sysinfo import describe

    files = _plots(data)
    h, w = data["input_size"]
    peak = data["peak_fp32"]
    lat = json.loads(LATENCY.read_text()) if LATENCY.is_file() else {"runs": {}}
    L = [
        "# Where the time goes",
        "",
        "Generated by `python benchmarks/efficiency_report.py` from effseg's own models (random weights: "
        f"time and FLOPs do not depend on them), input 1x3x{h}x{w}, CPU.",
        f"Machine: {describe(data['machine'])}.",
        f"FLOPs: torch.utils.flop_counter, 1 multiply-add = 2 FLOPs. Peak fp32 of this CPU: "
        f"{peak['peak_gflops']:.0f} GFLOP/s = {peak['formula']} ({peak['reason']}).",
        "Timings come from a machine shared with other jobs: compare numbers measured in the same run.",
        "",
        "## Per model: parameters, FLOPs and time per stage",
        "",
        "| model | params (M) | GFLOPs | backbone GFLOPs | head GFLOPs | eager backbone ms | eager head ms "
        "| final upsample ms | stage times measured at |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in data["models"].items():
        st = r.get("gflops_stages", {})
        stages, where = r.get("stages") or {}, f"{w}x{h}"
        for row in lat["runs"].get(n, {}).get("results", []):
            if row.get("stages") and not stages:
                stages, where = row["stages"], f"{row['input_size'][1]}x{row['input_size'][0]} (latency.json)"
        L.append(
            f"| {n} | {_f(r['params_m'], 2)} | {_f(r['gflops'])} | {_f(st.get('backbone', 0))} | "
            f"{_f(st.get('head', 0))} | {_f(stages.get('backbone_ms', float('nan')), 0)} | "
            f"{_f(stages.get('head_ms', float('nan')), 0)} | {_f(stages.get('upsample_ms', float('nan')))} | "
            f"{where if stages else '-'} |"
        )
    L += ["", "Findings (computed from the tables on this page):", ""]
    for n, r in data["models"].items():
        st = r.get("gflops_stages", {})
        kinds = r["conv_kinds"]
        conv_ms = sum(k["ms"] for k in kinds.values()) or 1.0
        top, tk = max(kinds.items(), key=lambda kv: kv[1]["ms"])
        lt = r["layer_types_ms"]
        L.append(
            f"- **{n}**: the head is {100 * st.get('head', 0) / r['gflops']:.0f}% of the FLOPs; "
            f"convolutions are "
            f"{100 * lt.get('convolution', 0) / max(sum(lt.values()), 1e-9):.0f}% of eager time, and the "
            f"largest share of convolution time goes to {top} convolutions ({100 * tk['ms'] / conv_ms:.0f}%, "
            f"{tk['gflops']:.1f} GFLOPs at {tk['gflops_per_s']:.1f} GFLOP/s)."
        )
    L += [
        "",
        "Per-stage times are medians of separate calls of `model.backbone`, `model.head` and the "
        "final bilinear upsample (measured by this script, or taken from `docs/bench/latency.json` at the "
        "size shown; `nan` where neither has the model).",
        "",
        "## Per layer type (eager, torch.profiler)",
        "",
        f"![layer types](efficiency/{files['layers']})",
        "",
        "| model | "
        + " | ".join(
            [
                "convolution",
                "batchnorm",
                "concat",
                "upsample",
                "pooling",
                "activation",
                "elementwise",
                "matmul",
                "other",
            ]
        )
        + " |",
        "|---" * 10 + "|",
    ]
    for n, r in data["models"].items():
        lt = r["layer_types_ms"]
        tot = sum(lt.values())
        cells = [
            f"{100 * lt.get(g, 0) / tot:.1f}%"
            for g in [
                "convolution",
                "batchnorm",
                "concat",
                "upsample",
                "pooling",
                "activation",
                "elementwise",
                "matmul",
                "other",
            ]
        ]
        L.append(f"| {n} | " + " | ".join(cells) + " |")
    L += [
        "",
        "Share of the profiled eager CPU time (self time of each aten op, one forward after warm-up).",
        "",
        "## Per kind of convolution",
        "",
        "Forward hooks on every `nn.Conv2d`: FLOPs, time and achieved GFLOP/s per kind "
        f"(peak {peak['peak_gflops']:.0f} GFLOP/s).",
        "",
        "| model | conv kind | count | GFLOPs | ms | GFLOP/s | % of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, r in data["models"].items():
        for kind, s in r["conv_kinds"].items():
            L.append(
                f"| {n} | {kind} | {s['count']} | {_f(s['gflops'])} | {_f(s['ms'], 0)} | "
                f"{_f(s['gflops_per_s'])} | {100 * s['gflops_per_s'] / peak['peak_gflops']:.0f}% |"
            )
    L += ["", "## onnxruntime, per operator type (its own profiler)", ""]
    for n, r in data["models"].items():
        if "ort_op_ms" not in r:
            continue
        ops = r["ort_op_ms"]
        tot = sum(ops.values())
        conv = ops.get("Conv", 0.0) + ops.get("FusedConv", 0.0)
        conv_gflops = sum(s["gflops"] for s in r["conv_kinds"].values())
        top = ", ".join(f"{k} {v:.0f} ms ({100 * v / tot:.0f}%)" for k, v in list(ops.items())[:6])
        L.append(
            f"- **{n}**: {tot:.0f} ms of kernel time per run; {top}. Convolutions: {conv_gflops:.0f} GFLOPs "
            f"in {conv:.0f} ms = {conv_gflops / (conv / 1000):.0f} GFLOP/s "
            f"({100 * conv_gflops / (conv / 1000) / peak['peak_gflops']:.0f}% of peak)."
        )
    rows = data["mbv2_blocks"]
    sep = sum(r["separable_gflops"] for r in rows)
    std = sum(r["standard_gflops"] for r in rows)
    sep_p = sum(r["separable_params"] for r in rows)
    std_p = sum(r["standard_params"] for r in rows)
    L += [
        "",
        "## Why MobileNetV2 is cheap",
        "",
        "Each inverted residual replaces a standard 3x3 convolution (hidden -> out channels) by a depthwise "
        "3x3 convolution (one 3x3 filter per channel) followed by a 1x1 projection. Per output pixel that is "
        "`9*hidden + hidden*out` multiply-adds instead of `9*hidden*out`: a ratio of `1/out + 1/9`. Computed "
        f"from the real layers of `pspnet_mobilenetv2` at {w}x{h} (output stride 8, so the last blocks run "
        "dilated at 1/8 resolution):",
        "",
        f"![separable](efficiency/{files['mbv2']})",
        "",
        "| block | in HxW | hidden | out | stride | dilation | separable GFLOPs | standard GFLOPs | ratio "
        "| 1/out+1/9 | separable params | standard params |",
        "|---" * 12 + "|",
    ]
    for r in rows:
        L.append(
            f"| {r['block'].split('.')[-1]} | {r['in_hw'][0]}x{r['in_hw'][1]} | {r['hidden']} | {r['out']} | "
            f"{r['stride']} | {r['dilation']} | {r['separable_gflops']:.3f} | {r['standard_gflops']:.3f} | "
            f"{r['flops_ratio']:.3f} | {r['theory_ratio']:.3f} | {r['separable_params']} | "
            f"{r['standard_params']} |"
        )
    L += [
        "",
        f"Over all {len(rows)} blocks: {sep:.1f} GFLOPs and {sep_p / 1e6:.2f} M parameters instead of "
        f"{std:.1f} GFLOPs and {std_p / 1e6:.2f} M ({std / sep:.1f}x fewer FLOPs, {std_p / sep_p:.1f}x fewer "
        "parameters). The catch is visible in the convolution table above: depthwise convolutions do almost "
        "no arithmetic per byte moved, so they run at a small fraction of the CPU's peak GFLOP/s; the saving "
        "in time is smaller than the saving in FLOPs.",
        "",
    ]
    L += [
        "## What dilation costs (output stride 8 vs 16 vs 32)",
        "",
        "Dilating the last stages keeps the feature map at 1/8 of the input instead of 1/32: every layer "
        "after the removed strides, and the whole head, runs on 4x (OS16) or 16x (OS8) more pixels.",
        "",
        f"![dilation](efficiency/{files['dilation']})",
        "",
        "| model | output stride | feature map | GFLOPs | backbone GFLOPs | head GFLOPs | eager ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["dilation"]:
        st = r["gflops_stages"]
        L.append(
            f"| pspnet_{r['backbone']} | {r['output_stride']} | {r['feature_hw'][0]}x{r['feature_hw'][1]} | "
            f"{r['gflops']:.1f} | {st.get('backbone', 0):.1f} | {st.get('head', 0):.1f} | "
            f"{r['eager_ms']:.0f} |"
        )
    L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", default="1024x512")
    parser.add_argument("--models", nargs="+", help="config stems (default: benchmarks/models.py's list)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--dilation-runs", type=int, default=3)
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    from effseg.size import parse_size
    from models import benchmark_names

    data = (
        json.loads(DATA.read_text())
        if args.render_only
        else measure(
            parse_size(args.input_size, "--input-size"),
            args.models or benchmark_names(),
            args.threads,
            args.dilation_runs,
        )
    )
    DOC.write_text(render(data))
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
