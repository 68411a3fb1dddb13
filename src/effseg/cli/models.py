"""``effseg models``: parameters and GFLOPs of every backbone x head."""

from __future__ import annotations

import argparse

from effseg.models import list_backbones, list_heads


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input-size", default="1024x512", help="WIDTHxHEIGHT of the input (default 1024x512)"
    )
    parser.add_argument("--num-classes", type=int, default=19, help="number of classes (default 19)")
    parser.add_argument("--output-stride", type=int, default=8, choices=[8, 16, 32], help="default 8")
    parser.add_argument("--head", action="append", choices=list_heads(), help="only these heads (repeatable)")
    parser.add_argument(
        "--backbone", action="append", choices=list_backbones(), help="only these backbones (repeatable)"
    )
    parser.add_argument(
        "--markdown",
        metavar="FILE",
        help="also write the table as markdown (between the models-table markers if FILE has them)",
    )


def run(args: argparse.Namespace) -> int:
    from effseg.tools.models_table import caption, models_table, parse_size, print_table, write_markdown

    size = parse_size(args.input_size)
    rows = models_table(
        args.head, args.backbone, size, num_classes=args.num_classes, output_stride=args.output_stride
    )
    text = caption(size, args.num_classes, args.output_stride)
    print_table(rows, text)
    if args.markdown:
        print(f"wrote {write_markdown(args.markdown, rows, text)}")
    return 0
