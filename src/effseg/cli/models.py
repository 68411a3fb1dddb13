"""``effseg models``: parameters and GFLOPs of every backbone x head, or the shipped trained models.

effseg models --input-size 1024x512
effseg models --pretrained          # camvid-<model>: cross-drive and same-drive val mIoU, latency
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


#: What the two accuracy columns of ``effseg models --pretrained`` mean (printed under the table).
PRETRAINED_CAPTION = (
    "mIoU in %. cross-drive: the recipe trained on all drives but one and scored on the held-out "
    "drive, mean of the folds (effseg crossdrive): what to expect on new streets. same-drive val: "
    "the val split (CamVid val = 101 frames of drive 0016E5, which training saw): a street the model "
    "knows. '-': not measured. Time them on this machine with effseg select; load one with "
    "effseg.load(NAME) or effseg predict NAME ..."
)


def _print_pretrained() -> int:
    from rich.console import Console
    from rich.table import Table

    from effseg.zoo import list_pretrained, zoo_dir

    models = list_pretrained()
    if not models:
        print(f"no trained model ships with this installation (registry: {zoo_dir() / 'models.yaml'})")
        return 0
    table = Table(title="effseg shipped models", caption=PRETRAINED_CAPTION)
    columns = ("name", "role", "cross-drive mIoU", "same-drive val mIoU", "input")
    for name in columns:
        table.add_column(
            name, justify="right" if "mIoU" in name else "left", no_wrap=name in ("name", "input")
        )

    def fmt(v: object, spec: str = "") -> str:
        return "-" if v is None else format(v, spec)

    for m in models:
        table.add_row(
            m.name, fmt(m.role), fmt(m.miou_crossdrive, ".2f"), fmt(m.miou_val, ".2f"), m.input_size
        )
    console = Console()
    console.print(table)
    for m in models:  # what each was trained on and how, and its latency per runtime
        training = [
            f"{m.dataset} {m.train_data}" if m.train_data else m.dataset,
            f"{m.iterations} iterations" if m.iterations is not None else None,
            f"{m.train_minutes:.0f} min of training" if m.train_minutes is not None else m.budget,
        ]
        lines = [f"trained on {', '.join(x for x in training if x)}"]
        if m.train_command:
            lines.append(f"command: {m.train_command}")
        if m.latency_ms:
            times = ", ".join(f"{rt} {ms:.1f}" for rt, ms in m.latency_ms.items())
            lines.append(
                f"latency at {m.input_size} (ms): {times}" + (f" on {m.machine}" if m.machine else "")
            )
        if m.crossdrive_folds:
            folds = ", ".join(f"{d} {v:.2f}" for d, v in m.crossdrive_folds.items())
            lines.append(f"cross-drive folds (held-out drive mIoU): {folds}")
        if m.card:
            lines.append(f"card: {m.card}")
        console.print(f"[bold]{m.name}[/]: " + "; ".join(lines), highlight=False)
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
