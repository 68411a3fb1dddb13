"""The open-challenge result table and plot from one ``effseg bench`` run over the trained runs.

``effseg bench runs/oc/<name> ... --runtime eager,onnxruntime --out DIR`` times every run's
network and reads its mIoU from ``runs/oc/<name>/eval/eval.json`` (written by ``effseg eval``);
this script prints the markdown table of docs/open_challenge.md (mIoU, latency, mIoU per 10 ms,
each relative to the PSPNet-MobileNetV2 baseline, per runtime) and draws
``docs/img/open_challenge_pareto.png``.  Repeats of a row with other seeds
(``runs/oc/<name>_seed<N>``, scored by ``effseg eval``) are averaged into its mIoU: a single
short run from scratch moves by several points from seed to seed.

    python benchmarks/open_challenge/table.py --bench benchmarks/open_challenge/results/bench/bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

# run name (runs/oc/<name>, configs/synthetic/open_challenge/<name>.yaml) -> label, in table order
ROWS = {
    "pspnet_mbv2": "PSPNet-MobileNetV2 OS8 (baseline)",
    "pspnet_mbv2_kd_r50": "PSPNet-MobileNetV2 OS8 + pixel KD from PSPNet-R50",
    "lraspp_mbv3_large_project": "LR-ASPP-MobileNetV3-L OS8, project recipe (BN momentum 0.01, wd on all)",
    "lraspp_mbv3_large_os8_bnm": "LR-ASPP-MobileNetV3-L OS8, BN momentum 0.1",
    "lraspp_mbv3_large_os16_bnm001": "LR-ASPP-MobileNetV3-L OS16, BN momentum 0.01",
    "lraspp_mbv3_large_os16": "LR-ASPP-MobileNetV3-L OS16, fixed recipe",
    "lraspp_mbv3_large_os16_kd_r50": "LR-ASPP-MobileNetV3-L OS16, fixed recipe + pixel KD from PSPNet-R50",
    "lraspp_mbv3_large_os16_cwd_r50": "LR-ASPP-MobileNetV3-L OS16, fixed recipe + CWD from PSPNet-R50",
    "lraspp_mbv3_large_os16_rt": "LR-ASPP-MobileNetV3-L OS16 reduced tail, fixed recipe",
    "lraspp_mbv3_small_os16": "LR-ASPP-MobileNetV3-S OS16, fixed recipe",
    "pspnet_r50_teacher": "PSPNet-ResNet50 OS8 (the teacher; 2x the iterations)",
}
BASELINE = "pspnet_mbv2"


def seed_mious(runs: Path, name: str, first: float) -> list[float]:
    """mIoU (%) of the bench's run (``first``) and of ``runs/<name>_seed<N>`` repeats, in that order."""
    mious = [first]
    for ev in sorted(runs.glob(f"{name}_seed*/eval/eval.json")):
        mious.append(json.loads(ev.read_text())["miou"] * 100)
    return mious


def pooled_latency(results: list[dict]) -> dict[tuple[str, str], float]:
    """Median latency (ms) per (architecture, runtime), pooling the timed calls of every run
    with the same ``model_config``: the distilled students and the BatchNorm ablation share
    their network with another row, and on a 2-core machine two timings of one network differ
    by 10-20% from call to call, which would otherwise show up as fake speed differences."""
    pools: dict[tuple[str, str], list[float]] = {}
    for r in results:
        key = (json.dumps(r["model_config"], sort_keys=True), r["runtime"])
        pools.setdefault(key, []).extend(r["times_ms"])
    return {k: statistics.median(v) for k, v in pools.items()}


def load_rows(bench_json: Path, runs: Path) -> list[dict]:
    """One dict per run of :data:`ROWS` found in the bench file, with per-runtime latencies."""
    results = json.loads(bench_json.read_text())["results"]
    latency = pooled_latency(results)
    rows = []
    for name, label in ROWS.items():
        found = {r["runtime"]: r for r in results if r["model"] == name}
        if "eager" not in found or found["eager"].get("miou") is None:
            continue
        eager = found["eager"]
        mious = seed_mious(runs, name, eager["miou"])
        row = {"name": name, "label": label, "mious": mious, "miou": sum(mious) / len(mious)}
        row["gflops"] = eager["gflops"]
        for runtime, r in found.items():
            row[runtime] = latency[(json.dumps(r["model_config"], sort_keys=True), runtime)]
        rows.append(row)
    if not any(r["name"] == BASELINE for r in rows):
        raise SystemExit(f"{bench_json}: no result with an mIoU for the baseline {BASELINE}")
    return rows


def markdown(rows: list[dict], runtimes: list[str]) -> str:
    base = next(r for r in rows if r["name"] == BASELINE)
    head = ["model", "config", "mIoU (%) per seed", "mIoU (%) mean", "GFLOPs"]
    for rt in runtimes:
        head += [f"{rt} (ms)", f"mIoU per 10 ms ({rt})", "vs baseline"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        seeds = " / ".join(f"{m:.2f}" for m in r["mious"])
        mean = f"{r['miou']:.2f} ({r['miou'] - base['miou']:+.2f})"
        cells = [r["label"], f"`{r['name']}.yaml`", seeds, mean]
        cells.append(f"{r['gflops']:.1f}")
        for rt in runtimes:
            if rt not in r:
                cells += ["-", "-", "-"]
                continue
            per10, base10 = r["miou"] / r[rt] * 10, base["miou"] / base[rt] * 10
            cells += [f"{r[rt]:.0f}", f"{per10:.3f}", f"{(per10 / base10 - 1) * 100:+.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], runtimes: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    base = next(r for r in rows if r["name"] == BASELINE)
    markers = "osD^v<>pP*Xh"
    fig, axes = plt.subplots(1, len(runtimes), figsize=(6 * len(runtimes), 5.6), squeeze=False)
    top = max(r["miou"] for r in rows) * 1.25
    for ax, rt in zip(axes[0], runtimes, strict=True):
        pts = [r for r in rows if rt in r]
        for i, r in enumerate(pts):
            style = {"color": f"C{i % 10}", "marker": markers[i % len(markers)]}
            ax.scatter(r[rt], r["miou"], s=42, label=r["label"], **style)
        xs = np.geomspace(min(r[rt] for r in pts) * 0.8, max(r[rt] for r in pts) * 1.25, 100)
        per10 = base["miou"] / base[rt] * 10
        ax.plot(xs, per10 * xs / 10, "k--", lw=0.8, label="baseline mIoU per 10 ms")
        ax.plot(xs, 1.1 * per10 * xs / 10, "g:", lw=0.8, label="+10% (the goal): above it wins")
        ax.set_xscale("log")
        ax.set_ylim(0, top)
        ax.set_xlabel(f"CPU latency at 1024x512, batch 1, {rt} (ms, median, log scale)")
        ax.set_ylabel("mIoU on the synthetic val set (%)")
        ax.set_title(f"accuracy vs latency ({rt})")
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.suptitle("Open challenge: same data and budget for every student (synthetic city, CPU)")
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", default="benchmarks/open_challenge/results/bench/bench.json")
    p.add_argument("--runs", default="runs/oc", help="folder of the runs (for the seed repeats)")
    p.add_argument("--runtimes", default="eager,onnxruntime")
    p.add_argument("--plot", default="docs/img/open_challenge_pareto.png")
    p.add_argument("--out", default="benchmarks/open_challenge/results/table.md")
    a = p.parse_args()
    runtimes = a.runtimes.split(",")
    rows = load_rows(Path(a.bench), Path(a.runs))
    table = markdown(rows, runtimes)
    print(table)
    Path(a.out).write_text(table + "\n", encoding="utf-8")
    plot(rows, runtimes, Path(a.plot))
    print(f"wrote {a.out} and {a.plot}")


if __name__ == "__main__":
    main()
