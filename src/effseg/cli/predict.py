"""`effseg predict MODEL INPUT... --out DIR`: segment image files."""

from __future__ import annotations

import argparse

from effseg.api import load, parse_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="RUN_OR_CHECKPOINT_OR_ONNX",
        help="a run directory (best.pt, else last.pt), a .pt checkpoint or an .onnx file",
    )
    parser.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="image files, directories (searched recursively) or quoted globs such as 'photos/*.jpg'",
    )
    parser.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DIR",
        help="output folder: color/, overlay/, ids/, label_ids/ mirror the input names",
    )
    parser.add_argument(
        "--overlay",
        nargs="?",
        const=0.5,
        type=float,
        default=None,
        metavar="ALPHA",
        help="also write colour masks blended over the image (mask weight ALPHA, default 0.5)",
    )
    parser.add_argument(
        "--class-ids", action="store_true", help="also write raw class ids (train ids) as 8-bit grey PNGs"
    )
    parser.add_argument(
        "--label-ids",
        action="store_true",
        help="also write Cityscapes label-id PNGs for the test server (19-class models)",
    )
    parser.add_argument(
        "--input-size",
        metavar="WxH",
        default=None,
        help="resize images to WxH for the network; outputs keep the input resolution",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="N",
        help="images per forward pass (same-size images are batched; default 1)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from effseg.tools.predict import predict_files, print_summary

    predictor = load(args.model, device=args.device, batch_size=args.batch_size)
    summary = predict_files(
        predictor,
        args.inputs,
        args.out,
        overlay_alpha=args.overlay,
        class_ids=args.class_ids,
        label_ids=args.label_ids,
        batch_size=args.batch_size,
        input_size=parse_size(args.input_size),
        progress=not args.no_progress,
    )
    print_summary(summary, args.out)
    return 1 if summary.failed else 0
