"""``effseg crossdrive CONFIG``: the cross-drive figure of a recipe (leave one drive out, score it).

For each held-out drive (the file-name prefix before the first ``_``: CamVid's 0001TP, 0006R0,
0016E5), trains CONFIG on the other drives of the pool split (CamVid: trainval = train + val;
folder datasets: all) and scores the final weights on the held-out drive only. Writes
OUT/crossdrive.json and OUT/crossdrive.md: one row per fold and the mean over folds (the
cross-drive figure) beside the frame-weighted mean. Run it again to resume: finished folds are
skipped, a killed fold continues from its last.pt.

    effseg crossdrive camvid/cpu_40min --set data.root=/data/CamVid --minutes 10
    effseg crossdrive camvid/ddrnet23_slim_4k --set data.root=/data/CamVid --folds 0001TP
    effseg crossdrive camvid/cpu_40min --set data.root=/data/CamVid --minutes 10 --tta flip
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from effseg.cli._options import add_set_option, add_tta_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="YAML file or shipped config name (effseg configs)")
    add_set_option(parser, "data.root=/data/CamVid train.lr=0.002 (values are YAML)")
    parser.add_argument(
        "--drives",
        metavar="A,B,C",
        help="the drives to rotate (default: every drive of the pool split); each fold holds one out "
        "and trains on the others",
    )
    parser.add_argument(
        "--folds", metavar="A[,B]", help="run only these held-out drives (default: all of --drives)"
    )
    parser.add_argument(
        "--split",
        help="the pool split the drives come from (default: trainval for CamVid, all for a folder "
        "dataset, else the config's data.train_split)",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=int, metavar="N", help="train every fold N steps")
    length.add_argument("--minutes", type=float, metavar="M", help="train every fold M minutes by the clock")
    add_tta_option(parser, "; the held-out drives are scored with it")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: runs/crossdrive/<config stem>)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="retrain the selected folds from scratch (default: resume, skip finished folds)",
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from effseg.app.crossdrive import markdown, run_crossdrive
    from effseg.config import load_config
    from effseg.zoo.configs import find_config

    overrides = [item for group in args.overrides for item in group]
    cfg_file = find_config(args.config)
    cfg = load_config(cfg_file, overrides)
    out = Path(args.out) if args.out else Path("runs") / "crossdrive" / cfg_file.stem
    console = Console(stderr=True, soft_wrap=True)
    summary = run_crossdrive(
        cfg,
        out,
        drives=args.drives,
        folds=args.folds,
        split=args.split,
        iterations=args.iterations,
        minutes=args.minutes,
        tta=args.tta,
        force=args.force,
        command=_command(args, overrides),
        source=args.config,
        log=lambda msg: console.print(f"effseg: {msg}", markup=False, highlight=False),
    )
    print(markdown(summary), end="")
    print(f"wrote {out / 'crossdrive.json'} and {out / 'crossdrive.md'}")
    return 0


def _command(args: argparse.Namespace, overrides: list[str]) -> str:
    """The command line that reproduces this run (written into crossdrive.json and .md)."""
    words = ["effseg", "crossdrive", args.config]
    if overrides:
        words += ["--set", *overrides]
    for option in ("drives", "folds", "split", "iterations", "minutes", "tta", "out"):
        value = getattr(args, option)
        if value is not None:
            words += [f"--{option}", f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(words)
