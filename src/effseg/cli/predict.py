"""`effseg predict MODEL INPUT... --out DIR|VIDEO`: segment images, folders, videos or a camera.

Nothing heavy is imported before the arguments are parsed (``effseg predict --help`` stays fast).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from effseg.cli._options import add_tta_option

# effseg.pipeline.engines.RUNTIMES, repeated here so that parsing imports no torch (a test checks they agree).
RUNTIME_CHOICES = (
    "auto", "eager", "compile", "compile-int8", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8"
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a shipped model name (camvid-...), a run directory (last.pt, else best.pt), "
        "a .pt checkpoint or an .onnx file",
    )
    parser.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="*",
        help="image files, directories (searched recursively), quoted globs such as 'photos/*.jpg', "
        "or video files (.mp4, .avi, .mov, .mkv)",
    )
    parser.add_argument(
        "--camera", type=int, default=None, metavar="N", help="also read camera N (OpenCV index)"
    )
    parser.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DIR_OR_VIDEO",
        help="output folder (color/, overlay/, ids/, label_ids/ mirror the input names) or a video file "
        "(.mp4, .avi, .mov; .mkv is lossless) at the input's frame rate and size",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output video (without it, predict refuses to; a folder's files are "
        "replaced)",
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
    legend = parser.add_mutually_exclusive_group()
    legend.add_argument(
        "--legend",
        dest="legend",
        action="store_true",
        default=None,
        help="draw a colour legend with the class names (default: on for overlays, off for masks)",
    )
    legend.add_argument("--no-legend", dest="legend", action="store_false", help="no colour legend")
    parser.add_argument(
        "--class-ids", action="store_true", help="also write raw class ids (train ids) as 8-bit grey PNGs"
    )
    parser.add_argument(
        "--label-ids",
        action="store_true",
        help="also write Cityscapes label-id PNGs for the test server (19-class models)",
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIME_CHOICES,
        default="auto",
        help="auto (default): export once, time the runtimes on this machine and keep the fastest "
        "(cached next to the run, or in ~/.cache/effseg / $EFFSEG_CACHE for shipped models); "
        "openvino runs the export in OpenVINO (bf16 on CPUs with AMX; the openvino extra)",
    )
    parser.add_argument(
        "--input-size",
        metavar="WxH",
        default=None,
        help="resize frames to WxH for the network; outputs keep the input resolution",
    )
    add_tta_option(
        parser, "; scales of the network size, each pass costs about one prediction (runtime auto or eager)"
    )
    parser.add_argument("--fps", type=float, default=None, help="frame rate of a video made from image files")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from effseg.errors import DataError
    from effseg.pipeline.predict import Outputs, predict, print_summary
    from effseg.size import parse_size

    if not args.inputs and args.camera is None:
        raise DataError("no input: give image files, folders, globs, video files or --camera N")
    outputs = Outputs(
        out=Path(args.out),
        overlay_alpha=args.overlay,
        legend=args.legend,
        class_ids=args.class_ids,
        label_ids=args.label_ids,
        fps=args.fps,
        overwrite=args.overwrite,
    )
    summary = predict(
        args.model,
        args.inputs,
        outputs,
        runtime=args.runtime,
        camera=args.camera,
        input_size=parse_size(args.input_size, "--input-size") if args.input_size else None,
        device=args.device,
        max_frames=args.max_frames,
        progress=not args.no_progress,
        tta=args.tta,
    )
    print_summary(summary)
    return 1 if summary.failed else 0
