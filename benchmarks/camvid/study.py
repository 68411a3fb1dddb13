"""The CamVid study of docs/camvid.md: one row per run, each trained by the clock and scored by
``effseg eval`` on CamVid val (101 images at 480x360, no test-time augmentation).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/camvid/study.py --data /data/CamVid --rows screen
    python benchmarks/camvid/study.py --data /data/CamVid --rows screen --table   # table only

Rows are ``effseg train camvid/cpu_40min --set <overrides>`` runs (only what a row changes is
listed), written to ``runs/camvid_study/<row>``; a row whose ``eval/eval.json`` exists is not
run again. ``--budget`` sets ``train.time_budget`` (minutes) for every row of a set that does
not fix its own. Train on ``train`` only, report ``val``: the test split is never read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIG = "camvid/cpu_40min"
# fp32 for the MobileNets: their depthwise convolutions are slower under bf16 autocast on CPU
# (measured: PSPNet-MobileNetV2 training step 10x slower in bf16 than fp32 + channels_last).
MOBILE = ["train.amp=none"]
ROWS: dict[str, dict[str, list[str]]] = {
    # 40-minute rows: the recipe and its seed repeat.
    "main": {
        "ddrnet23_slim_40min_seed0": [],
        "ddrnet23_slim_40min_seed1": ["train.seed=1"],
    },
    # Screening rows: every lever and architecture under one short budget (--budget).
    "screen": {
        # architectures first (the real-time issue's comparison), then the levers on DDRNet
        "ddrnet23_slim": [],
        "pidnet_s": ["model.name=pidnet_s"],
        "regseg": ["model.name=regseg"],
        "bisenetv2": ["model.name=bisenetv2"],
        "lraspp_mbv3_large_os16": [
            "model.name=lraspp", "model.backbone=mobilenetv3_large", "model.output_stride=16",
            "model.head_options={inter_channels: 128}", *MOBILE,
        ],
        "pspnet_mbv2": ["model.name=pspnet", "model.backbone=mobilenetv2", *MOBILE],
        # the same LR-ASPP with MobileNetV3's own BatchNorm momentum (0.01) instead of the recipe's 0.1
        "lraspp_mbv3_large_os16_bn_momentum_0.01": [
            "model.name=lraspp", "model.backbone=mobilenetv3_large", "model.output_stride=16",
            "model.head_options={inter_channels: 128}", "train.bn_momentum=null", *MOBILE,
        ],
        "ddrnet23_slim_seed1": ["train.seed=1"],
        "ddrnet23_slim_sgd": ["train.optimizer=sgd", "train.lr=0.05", "train.weight_decay=5e-4"],
        "ddrnet23_slim_no_class_weights": ["train.class_weights=null"],
        "ddrnet23_slim_ohem": ["train.class_weights=null", "train.loss=ohem"],
        "ddrnet23_slim_fp32": ["train.amp=none", "train.channels_last=false"],
        # weight average; below ~900 steps its warmed-up decay (1 + n) / (10 + n) is what acts
        "ddrnet23_slim_ema": ["train.ema_decay=0.999"],
        "ddrnet23_slim_crop_320": ["data.crop_size=320x320"],  # the plain loop's crop, same batch
        "ddrnet23_slim_scale_0.5_2.0": ["data.scale_range=[0.5, 2.0]"],
    },
}  # fmt: skip


def run_row(name: str, overrides: list[str], data: Path, out: Path, budget: float | None) -> Path:
    """Train and evaluate one row unless its eval.json exists; returns the run folder."""
    run = out / name
    if (run / "eval" / "eval.json").is_file():
        return run
    sets = [f"data.root={data}", *overrides]
    if budget is not None and not any(s.startswith("train.time_budget=") for s in overrides):
        sets.append(f"train.time_budget={budget}")
    resume = ["--resume"] if (run / "last.pt").is_file() else []
    train = ["effseg", "train", CONFIG, "--run-dir", str(run), *resume, "--set", *sets]
    # one failed row (its error is on stderr) must not stop the rows after it
    if subprocess.run(train).returncode == 0:
        # the final weights (last.pt), never the best-on-val checkpoint: val selects nothing
        subprocess.run(
            ["effseg", "eval", str(run / "last.pt"), "--out", str(run / "eval"), "--set", f"data.root={data}"]
        )
    return run


def table(runs: dict[str, Path]) -> str:
    """Markdown: one row per run with mIoU, pixel accuracy, iterations, minutes and per-class IoU."""
    rows, classes = [], None
    for name, run in runs.items():
        path = run / "eval" / "eval.json"
        if not path.is_file():
            continue
        ev = json.loads(path.read_text())
        classes = classes or ev["classes"]
        tr = ev.get("training") or {}
        per = [f"{ev['per_class'][c]['iou'] * 100:.1f}" for c in classes]
        rows.append(
            f"| {name} | {ev['miou'] * 100:.2f} | {ev['pixel_acc'] * 100:.1f} | {tr.get('iterations', '-')} "
            f"| {tr.get('train_time_s', 0) / 60:.1f} | " + " | ".join(per) + " |"
        )
    if classes is None:
        return "(no finished rows)"
    head = "| row | mIoU | pixel acc | iterations | train min | " + " | ".join(classes) + " |"
    sep = "|---|---:|---:|---:|---:|" + "---:|" * len(classes)
    return "\n".join([head, sep, *rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="CamVid root (SegNet layout)")
    ap.add_argument("--rows", choices=sorted(ROWS), default="screen")
    ap.add_argument("--only", nargs="*", help="run only these rows of the set")
    ap.add_argument("--budget", type=float, default=None, help="train.time_budget (minutes) for every row")
    ap.add_argument("--out", type=Path, default=Path("runs/camvid_study"))
    ap.add_argument("--table", action="store_true", help="print the table of finished rows and stop")
    args = ap.parse_args()
    rows = {k: v for k, v in ROWS[args.rows].items() if not args.only or k in args.only}
    runs = {name: args.out / name for name in rows}
    if not args.table:
        for name, overrides in rows.items():
            run_row(name, overrides, args.data, args.out, args.budget)
    print(table(runs))


if __name__ == "__main__":
    sys.exit(main())
