"""``effseg data``: synthesise a city, prepare a downscaled Cityscapes, inspect a dataset.

effseg data synth --out data/synth --train 200 --val 50 --size 1024x512 --seed 0
effseg data prepare-cityscapes /data/cityscapes --out /data/cityscapes_1024 --scale 0.5
effseg data info /data/cityscapes --dataset cityscapes --split val
"""

from __future__ import annotations

import argparse
from pathlib import Path

from effseg.errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = sub.add_parser("synth", help="write synthetic street scenes in Cityscapes layout (label ids)")
    p.add_argument("--out", required=True, type=Path, help="output folder (Cityscapes layout)")
    p.add_argument("--train", type=int, default=200, help="number of train images (default 200)")
    p.add_argument("--val", type=int, default=50, help="number of val images (default 50)")
    p.add_argument("--size", default="1024x512", help="WIDTHxHEIGHT (default 1024x512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument(
        "--contact-sheet",
        type=Path,
        default=None,
        metavar="PNG",
        help="also save a PNG grid of a few scenes and their colour labels",
    )

    p = sub.add_parser("prepare-cityscapes", help="downscaled copy of Cityscapes with train-id labels")
    p.add_argument("root", type=Path, help="Cityscapes root (holding leftImg8bit/ and gtFine/)")
    p.add_argument("--out", required=True, type=Path, help="output root (same layout)")
    p.add_argument("--scale", type=float, default=0.5, help="scale factor (0.5: 2048x1024 -> 1024x512)")
    p.add_argument("--splits", default=None, help="comma-separated splits (default: all under leftImg8bit/)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")

    p = sub.add_parser("info", help="image counts and class pixel frequencies of a dataset")
    p.add_argument("root", type=Path)
    p.add_argument("--dataset", default="cityscapes", choices=["cityscapes", "camvid", "folder", "synthetic"])
    p.add_argument("--split", default="train")
    p.add_argument("--sample", type=int, default=20, help="images sampled for pixel frequencies (default 20)")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        return _synth(args)
    if args.data_command == "prepare-cityscapes":
        return _prepare(args)
    return _info(args)


def _synth(args: argparse.Namespace) -> int:
    from effseg.data.synthetic import contact_sheet, generate_city

    out = generate_city(args.out, args.train, args.val, args.size, args.seed, args.workers, progress=True)
    print(f"wrote {args.train} train + {args.val} val synthetic scenes ({args.size}) to {out}")
    if args.contact_sheet is not None:
        from effseg.size import parse_size

        path = contact_sheet(args.contact_sheet, n=4, size=parse_size(args.size), seed=args.seed)
        print(f"contact sheet: {path}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from effseg.data.prepare import prepare_cityscapes

    splits = [s for s in args.splits.split(",") if s] if args.splits else None
    stats = prepare_cityscapes(args.root, args.out, args.scale, splits, args.workers, progress=True)
    print(f"{stats['written']} pairs written, {stats['skipped']} already there, to {args.out}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from effseg.data import build_dataset

    if args.sample < 1:
        raise DataError(f"--sample {args.sample}: expected at least 1 image")
    if args.dataset == "synthetic" and not (Path(args.root) / "leftImg8bit").is_dir():
        raise DataError(
            f"{args.root}: no synthetic city there; create one with `effseg data synth --out {args.root}`"
        )
    ds = build_dataset(args.dataset, args.root, args.split)
    n = len(ds)
    picks = np.unique(np.linspace(0, n - 1, min(args.sample, n)).round().astype(int))
    counts = np.zeros(256, np.int64)
    present = np.zeros(256, np.int64)
    sizes = set()
    for i in picks:
        image, label = ds.load_raw(int(i))
        sizes.add(f"{image.shape[1]}x{image.shape[0]}")
        c = np.bincount(label.ravel(), minlength=256)
        counts += c
        present += c > 0
    total = counts.sum()
    console = Console()
    console.print(
        f"[bold]{args.dataset}[/bold] {args.root} split [bold]{args.split}[/bold]: {n} images, "
        f"{ds.num_classes} classes, sizes {', '.join(sorted(sizes))} "
        f"(pixel frequencies over {len(picks)} images)"
    )
    table = Table("id", "class", "pixels %", "images with it")
    for k, name in enumerate(ds.classes):
        table.add_row(str(k), name, f"{100 * counts[k] / total:.2f}", f"{present[k]}/{len(picks)}")
    table.add_row("255", "(ignore)", f"{100 * counts[255] / total:.2f}", f"{present[255]}/{len(picks)}")
    console.print(table)
    return 0


__all__ = ["add_arguments", "run"]
