"""The open-challenge result table and plot from the runs and the latency JSON.

Reads ``runs/oc/<name>/eval/eval.json`` (written by ``effseg eval runs/oc/<name>``) and the
latency file of ``latency.py``; prints a markdown table (mIoU, latency at 1024x512, mIoU per
10 ms, both relative to the baseline) and draws ``docs/img/open_challenge_pareto.png``.

    python benchmarks/open_challenge/table.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# run name -> (label in the table, architecture name timed by latency.py)
ROWS = {
    "pspnet_mbv2": ("PSPNet-MobileNetV2 OS8 (baseline)", "pspnet_mobilenetv2"),
    "lraspp_mbv3_large_project": ("LR-ASPP-MobileNetV3-L OS8, project recipe", "lraspp_mobilenetv3_large"),
    "lraspp_mbv3_large_os16_bnm001": (
        "LR-ASPP-MobileNetV3-L OS16, BN momentum 0.01",
        "lraspp_mobilenetv3_large_os16",
    ),
    "lraspp_mbv3_large_os16": ("LR-ASPP-MobileNetV3-L OS16, fixed recipe", "lraspp_mobilenetv3_large_os16"),
    "lraspp_mbv3_large_os16_kd": (
        "LR-ASPP-MobileNetV3-L OS16, fixed recipe + KD from PSPNet-R18",
        "lraspp_mobilenetv3_large_os16",
    ),
    "lraspp_mbv3_large_os16_kd_self": (
        "LR-ASPP-MobileNetV3-L OS16, fixed recipe + KD from itself (born-again)",
        "lraspp_mobilenetv3_large_os16",
    ),
    "pspnet_r18_teacher": ("PSPNet-ResNet18 OS16 (teacher)", "pspnet_resnet18_os16"),
}
BASELINE = "pspnet_mbv2"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/oc")
    p.add_argument("--latency", default="benchmarks/open_challenge/results/latency_1024x512.json")
    p.add_argument("--plot", default="docs/img/open_challenge_pareto.png")
    a = p.parse_args()
    lat = {r["model"]: r for r in json.loads(Path(a.latency).read_text())["rows"]}
    rows = []
    for name, (label, arch) in ROWS.items():
        ev = Path(a.runs) / name / "eval" / "eval.json"
        if not ev.is_file() or arch not in lat:
            continue
        miou = json.loads(ev.read_text())["miou"] * 100
        ms = lat[arch]["latency_ms_median"]
        rows.append(
            {
                "name": name,
                "label": label,
                "miou": miou,
                "ms": ms,
                "gflops": lat[arch]["gflops"],
                "per10": miou / ms * 10,
            }
        )
    base = next(r for r in rows if r["name"] == BASELINE)
    print("| model | config | mIoU (%) | GFLOPs | latency (ms) | mIoU per 10 ms | vs baseline |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rel = (r["per10"] / base["per10"] - 1) * 100
        d = r["miou"] - base["miou"]
        print(
            f"| {r['label']} | `{r['name']}.yaml` | {r['miou']:.2f} ({d:+.2f}) | {r['gflops']:.1f} | "
            f"{r['ms']:.0f} | {r['per10']:.3f} | {rel:+.0f}% |"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.scatter(r["ms"], r["miou"], s=40)
        ax.annotate(r["label"], (r["ms"], r["miou"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    xs = sorted(r["ms"] for r in rows)
    ax.plot(xs, [base["per10"] * x / 10 for x in xs], "k--", lw=0.8, label="baseline mIoU per 10 ms")
    ax.plot(xs, [1.1 * base["per10"] * x / 10 for x in xs], "g:", lw=0.8, label="+10% (the goal)")
    ax.set_xlabel("CPU latency at 1024x512, batch 1 (ms, median)")
    ax.set_ylabel("mIoU on the synthetic val set (%)")
    ax.set_title("Open challenge: accuracy vs latency (same data and budget)")
    ax.set_xlim(min(xs) * 0.9, max(xs) * 1.45)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    Path(a.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.plot, dpi=120)
    print(f"wrote {a.plot}")


if __name__ == "__main__":
    main()
