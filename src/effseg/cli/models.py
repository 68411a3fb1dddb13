"""``effseg models``: parameters and GFLOPs of every backbone x head, or the shipped trained models.

effseg models --input-size 1024x512
effseg models --pretrained          # camvid-<model>: val mIoU, budget, input size, CPU latency
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # No torch import here: `effseg models --help` must answer at once.
    from effseg.config import OUTPUT_STRIDES

    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="list the trained models shipped with effseg (load one with effseg.load(NAME))",
    )
    parser.add_argument(
        "--input-size", default="1024x512", help="WIDTHxHEIGHT of the input (default 1024x512)"
    )
    parser.add_argument("--num-classes", type=int, default=19, help="number of classes (default 19)")
    parser.add_argument("--output-stride", type=int, default=8, choices=OUTPUT_STRIDES, help="default 8")
    parser.add_argument("--head", action="append", metavar="HEAD", help="only these heads (repeatable)")
    parser.add_argument(
        "--backbone", action="append", metavar="BACKBONE", help="only these backbones (repeatable)"
    )
    parser.add_argument(
        "--markdown",
        metavar="FILE",
        help="also write the table as markdown (between the models-table markers if FILE has them)",
    )


def _print_pretrained() -> int:
    from rich.console import Console
    from rich.table import Table

    from effseg.zoo import list_pretrained, zoo_dir

    models = list_pretrained()
    if not models:
        print(f"no trained model ships with this installation (registry: {zoo_dir() / 'models.yaml'})")
        return 0
    table = Table(
        title="effseg shipped models", caption="load with effseg.load(NAME) or effseg predict NAME ..."
    )
    numeric = ("val mIoU (%)", "iterations", "CPU ms")
    for name in ("name", "dataset", "val mIoU (%)", "budget", "iterations", "input", "CPU ms", "machine"):
        table.add_column(
            name, justify="right" if name in numeric else "left", no_wrap=name in ("name", "input")
        )

    def fmt(v: object, spec: str = "") -> str:
        return "-" if v is None else format(v, spec)

    for m in models:
        table.add_row(
            m.name,
            m.dataset,
            fmt(m.miou_val, ".2f"),
            fmt(m.budget),
            fmt(m.iterations),
            m.input_size,
            fmt(m.cpu_latency_ms, ".1f"),
            fmt(m.machine),
        )
    Console().print(table)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.pretrained:
        return _print_pretrained()
    from effseg.bench.models_table import caption, models_table, parse_size, print_table, write_markdown
    from effseg.errors import ModelError
    from effseg.models import list_backbones, list_heads

    choices = (("--head", args.head, list_heads()), ("--backbone", args.backbone, list_backbones()))
    for option, given, valid in choices:
        bad = [v for v in given or [] if v not in valid]
        if bad:
            raise ModelError(f"{option} {bad[0]!r}: expected one of {', '.join(valid)}")
    size = parse_size(args.input_size)
    rows = models_table(
        args.head, args.backbone, size, num_classes=args.num_classes, output_stride=args.output_stride
    )
    text = caption(size, args.num_classes, args.output_stride)
    print_table(rows, text)
    if args.markdown:
        print(f"wrote {write_markdown(args.markdown, rows, text)}")
    return 0
