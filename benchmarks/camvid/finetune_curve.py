"""Fine-tuning on a few labelled frames of a new street (docs/camvid.md, issue "Start from trained
weights"): a model trained on two CamVid drives, fine-tuned on N frames of the third drive for a
few CPU-minutes, against training from scratch on the same frames for the same minutes and against
no fine-tuning; every row is scored on the same frames of the third drive, those after the largest N.

    python benchmarks/camvid/finetune_curve.py --data ../shared/camvid --base runs/two_drives \\
        --minutes 5 --out runs/finetune_curve
    python benchmarks/camvid/finetune_curve.py --out runs/finetune_curve --table   # table + plot only

``--base`` is a run folder (its ``last.pt``) or a checkpoint trained with ``data.train_drives``
set to two drives of CamVid's ``trainval`` (e.g. ``effseg train camvid/ddrnet23_slim --set
data.root=../shared/camvid data.train_split=trainval data.val_split=trainval
data.train_drives=[0006R0,0016E5] data.val_drives=[0001TP]``); the held-out drive is the one it
did not train on (``--drive`` to name it). Each fine-tuning / from-scratch row is
``effseg train`` with the base's own recipe (its stored config) and ``data.train_frames=N``
(the first N frames of the drive, file-name order), ``train.time_budget=MINUTES``, the batch size
capped at N, one validation at the end; fine-tuning adds ``--init BASE`` and ``--finetune-set``
(default ``train.loaded_lr_mult=0.1``: the loaded weights learn at a tenth of the recipe's rate).
Scores are ``effseg eval`` of each final ``last.pt`` (and of the base) on ``data.val_frames=after:
max(N)``. A row whose ``eval/eval.json`` exists is not run again. Writes ``finetune_curve.md``
(the table), ``finetune_curve.json`` and ``finetune_curve.png`` (mIoU against N) into ``--out``.
``--dry-run`` prints the commands and stops.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

CAMVID_SPLIT = "trainval"  # train + val: every frame of the three drives


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data", type=Path, help="CamVid root (SegNet layout: train/ trainannot/ val/ valannot/)"
    )
    ap.add_argument("--base", type=Path, help="run folder or .pt trained on two drives (data.train_drives)")
    ap.add_argument("--minutes", type=float, default=5.0, help="train.time_budget of every training row")
    ap.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per row)")
    ap.add_argument("--frames", default="5,10,30", help="comma-separated N: labelled frames of the new drive")
    ap.add_argument(
        "--drive", help="the held-out drive (default: the CamVid drive the base did not train on)"
    )
    ap.add_argument(
        "--set", nargs="*", default=[], dest="overrides", help="extra --set for every training row"
    )
    ap.add_argument(
        "--finetune-set",
        nargs="*",
        default=["train.loaded_lr_mult=0.1"],
        help="extra --set for the fine-tuning rows only (default: train.loaded_lr_mult=0.1)",
    )
    ap.add_argument("--table", action="store_true", help="write the table and plot of finished rows and stop")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    args = ap.parse_args(argv)
    try:
        args.frames = sorted({int(n) for n in args.frames.split(",")})
    except ValueError:
        ap.error(f"--frames {args.frames!r}: expected comma-separated integers, e.g. 5,10,30")
    if not args.frames or args.frames[0] < 1:
        ap.error("--frames: every N must be >= 1")
    if not args.table:
        for name in ("data", "base"):
            if getattr(args, name) is None:
                ap.error(f"--{name} is required (except with --table)")
        if not (args.data / "train").is_dir():
            ap.error(f"--data {args.data}: no train/ folder (expected CamVid's SegNet layout)")
        if args.minutes <= 0:
            ap.error("--minutes must be positive")
    return args


def base_checkpoint(base: Path) -> Path:
    """A run folder's final weights (``last.pt``, else ``best.pt``) or the file itself."""
    if base.is_dir():
        for name in ("last.pt", "best.pt"):
            if (base / name).is_file():
                return base / name
        sys.exit(f"finetune_curve: {base} has neither last.pt nor best.pt")
    if not base.is_file():
        sys.exit(f"finetune_curve: --base {base}: no such run folder or checkpoint")
    return base


def base_config(ckpt: Path) -> dict[str, Any]:
    import torch

    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    config = obj.get("config") if isinstance(obj, dict) else None
    if not isinstance(config, dict) or config.get("data", {}).get("dataset") != "camvid":
        sys.exit(
            f"finetune_curve: {ckpt} holds no CamVid training config (an effseg checkpoint of a camvid run)"
        )
    return config


def held_out_drive(config: dict[str, Any], data: Path, drive: str | None) -> tuple[str, dict[str, int]]:
    """The drive to fine-tune on and the frame count of every drive of ``trainval``."""
    from effseg.data import build_dataset, drive_counts

    counts = drive_counts(build_dataset("camvid", data, CAMVID_SPLIT))
    if drive is None:
        trained = set(config.get("data", {}).get("train_drives") or [])
        left = [d for d in counts if d not in trained]
        if not trained or len(left) != 1:
            sys.exit(
                f"finetune_curve: the base trained on drives {sorted(trained) or 'all'}; name the new one "
                f"with --drive (drives: {', '.join(counts)})"
            )
        drive = left[0]
    if drive not in counts:
        sys.exit(f"finetune_curve: --drive {drive}: not a drive of {data} ({', '.join(counts)})")
    return drive, counts


def plan(args: argparse.Namespace, ckpt: Path, drive: str, batch: int) -> dict[str, list[list[str]]]:
    """Row name -> its commands (``effseg train`` then ``effseg eval``, or ``effseg eval`` alone)."""
    score = max(args.frames)
    scored = [
        f"data.root={args.data}", f"data.val_split={CAMVID_SPLIT}", f"data.val_drives=[{drive}]",
        f"data.val_frames=after:{score}",
    ]  # fmt: skip
    config = args.out / "base_config.yaml"
    rows: dict[str, list[list[str]]] = {
        "no_finetune": [
            ["effseg", "eval", str(ckpt), "--out", str(args.out / "no_finetune" / "eval"), "--set", *scored]
        ]
    }
    for n in args.frames:
        sets = [
            *scored, f"data.train_split={CAMVID_SPLIT}", f"data.train_drives=[{drive}]",
            f"data.train_frames={n}", f"train.time_budget={args.minutes:g}", "train.iterations=null",
            "train.warmup_iters=0", f"train.batch_size={min(batch, n)}", "train.val_interval=1000000000",
            "train.checkpoint_interval=0", *args.overrides,
        ]  # fmt: skip
        for kind in ("finetune", "scratch"):
            run = args.out / f"{kind}_{n}"
            extra = (
                ["--init", str(ckpt), "--set", *sets, *args.finetune_set]
                if kind == "finetune"
                else ["--set", *sets]
            )
            resume = ["--resume"] if (run / "last.pt").is_file() else []
            train = ["effseg", "train", str(config), "--run-dir", str(run), *resume, *extra]
            evaluate = ["effseg", "eval", str(run / "last.pt"), "--out", str(run / "eval"), "--set", *scored]
            rows[f"{kind}_{n}"] = [train, evaluate]
    return rows


def run_rows(rows: dict[str, list[list[str]]], out: Path) -> None:
    for name, commands in rows.items():
        if (out / name / "eval" / "eval.json").is_file():
            continue
        for command in commands:
            print("+", shlex.join(command), flush=True)
            argv = [sys.executable, "-m", "effseg", *command[1:]]  # this interpreter's effseg
            if subprocess.run(argv).returncode != 0:  # a failed row must not stop the others
                print(f"finetune_curve: row {name} failed (its error is above)", file=sys.stderr)
                break


def collect(out: Path) -> dict[str, Any]:
    """Finished rows: ``{"frames": [N], "no_finetune": row, "finetune": {N: row}, "scratch": {N: row}}``."""
    result: dict[str, Any] = {"finetune": {}, "scratch": {}, "no_finetune": None}
    for path in sorted(out.glob("*/eval/eval.json")):
        row = path.parent.parent.name
        ev = json.loads(path.read_text())
        entry = {"miou": ev["miou"], "iterations": (ev.get("training") or {}).get("iterations")}
        if row == "no_finetune":
            result["no_finetune"] = entry
        elif "_" in row and row.split("_")[0] in ("finetune", "scratch"):
            kind, n = row.rsplit("_", 1)
            result[kind][int(n)] = entry
    result["frames"] = sorted(set(result["finetune"]) | set(result["scratch"]))
    return result


def table(result: dict[str, Any], meta: dict[str, Any]) -> str:
    def cell(entry: dict[str, Any] | None) -> str:
        if entry is None:
            return "-"
        its = f" ({entry['iterations']} it)" if entry.get("iterations") else ""
        return f"{entry['miou'] * 100:.2f}{its}"

    base = cell(result["no_finetune"])
    lines = [
        f"Held-out drive {meta.get('drive', '?')}: fine-tuned / trained on its first N frames for "
        f"{meta.get('minutes', '?')} CPU-minutes, scored on its frames after the first "
        f"{meta.get('scored_after', '?')} (mIoU %, iterations).",
        "",
        "| N frames | no fine-tuning | from scratch | fine-tuned |",
        "|---:|---:|---:|---:|",
    ]
    for n in result["frames"]:
        lines.append(
            f"| {n} | {base} | {cell(result['scratch'].get(n))} | {cell(result['finetune'].get(n))} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    for kind, style, label in (("finetune", "o-", "fine-tuned"), ("scratch", "s--", "from scratch")):
        ns = sorted(result[kind])
        if ns:
            ax.plot(ns, [result[kind][n]["miou"] * 100 for n in ns], style, label=label)
    if result["no_finetune"] is not None:
        ax.axhline(result["no_finetune"]["miou"] * 100, color="grey", ls=":", label="no fine-tuning")
    ax.set_xlabel("labelled frames of the new drive (N)")
    ax.set_ylabel("mIoU on the rest of the drive (%)")
    ax.set_xscale("log")
    ax.set_xticks(result["frames"] or [1])
    ax.set_xticklabels([str(n) for n in result["frames"]] or ["1"])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(out: Path) -> str:
    meta_path = out / "finetune_curve_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    result = collect(out)
    text = table(result, meta)
    (out / "finetune_curve.md").write_text(text + "\n", encoding="utf-8")
    (out / "finetune_curve.json").write_text(
        json.dumps({"meta": meta, **result}, indent=1) + "\n", encoding="utf-8"
    )
    plot(result, out / "finetune_curve.png")
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        ckpt = base_checkpoint(args.base)
        config = base_config(ckpt)
        drive, counts = held_out_drive(config, args.data, args.drive)
        if max(args.frames) >= counts[drive]:
            sys.exit(
                f"finetune_curve: drive {drive} has {counts[drive]} frames; the largest N must leave some "
                "to score"
            )
        config["data"] = {**config["data"], "root": str(args.data), "train_drives": [], "val_drives": []}
        config["model"] = {**config["model"], "init": None}
        (args.out / "base_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        meta = {
            "base": str(ckpt), "drive": drive, "frames_in_drive": counts[drive], "minutes": args.minutes,
            "scored_after": max(args.frames), "scored_frames": counts[drive] - max(args.frames),
            "finetune_set": args.finetune_set, "set": args.overrides,
        }  # fmt: skip
        (args.out / "finetune_curve_meta.json").write_text(
            json.dumps(meta, indent=1) + "\n", encoding="utf-8"
        )
        rows = plan(args, ckpt, drive, int(config.get("train", {}).get("batch_size", 8)))
        if args.dry_run:
            for commands in rows.values():
                for command in commands:
                    print(shlex.join(command))
            return 0
        run_rows(rows, args.out)
    print(write_outputs(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
