"""``effseg export RUN_OR_CHECKPOINT --format onnx|torchscript --out FILE``: deployable model files.

    effseg export runs/pspnet_r18 --format onnx --input-size 1024x512 --out pspnet_r18.onnx
    effseg export runs/pspnet_r18 --int8 --calib train --out pspnet_r18_int8.onnx
    effseg export runs/pspnet_r18 --int8 --calib data/cityscapes --eval-split val --out q.onnx
    effseg export camvid-ddrnet23_slim --int8 --calib train --set data.root=/data/CamVid --out q.onnx

BatchNorm is folded into the convolutions, the file passes ``onnx.checker`` and its
logits are compared with PyTorch's (printed; NaN or infinite logits fail the export).  The file
is written under a temporary name beside ``--out`` and renamed onto it only when every check
passed, so an earlier file at ``--out`` survives a kill, a full disk or a failed check.
``--int8``: static post-training quantization (onnxruntime QDQ, per-channel int8 weights)
calibrated on real images.
A run folder means its final weights ``last.pt`` (``best.pt`` if it has no ``last.pt``); the
output names the file read, and labels an mIoU of the val-picked ``best.pt`` on its val split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from effseg.cli._options import add_set_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="RUN_OR_CHECKPOINT",
        help="run folder (its last.pt), .pt checkpoint, config .yaml or model name",
    )
    parser.add_argument("--format", default="onnx", choices=["onnx", "torchscript"], help="default onnx")
    parser.add_argument(
        "--input-size", default="1024x512", metavar="WxH", help="export size (default 1024x512)"
    )
    parser.add_argument(
        "--dynamic", action="store_true", help="symbolic batch/height/width (checked at several sizes)"
    )
    parser.add_argument("--int8", action="store_true", help="static int8 quantization (onnxruntime QDQ)")
    parser.add_argument(
        "--calib",
        metavar="DIR_OR_SPLIT",
        help="calibration images: a folder, or a split of the model's dataset",
    )
    parser.add_argument("--calib-images", type=int, default=32, help="calibration images used (default 32)")
    parser.add_argument(
        "--eval-split",
        metavar="SPLIT",
        help="with --int8: fp32 and int8 mIoU on this split (default: the config's val split)",
    )
    parser.add_argument("--eval-images", type=int, help="limit the --eval-split images (default all)")
    parser.add_argument("--no-eval", action="store_true", help="with --int8: skip the mIoU evaluation")
    add_set_option(parser, "data.root=/data/CamVid (--int8: where --calib SPLIT and the mIoU read images)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17, default 18)")
    parser.add_argument("--num-classes", type=int, default=19, help="classes for a model name (default 19)")
    parser.add_argument("--out", required=True, metavar="FILE", help="output .onnx / .pt file")
    parser.add_argument("--json", metavar="FILE", help="also write the export report as JSON")


def run(args: argparse.Namespace) -> int:
    from effseg.deploy.artifact import CHECKPOINT_SUFFIXES, figure_note, run_folder_weights
    from effseg.deploy.export_run import run_export
    from effseg.fileio import atomic_write_text

    report = run_export(
        args.source,
        args.out,
        fmt=args.format,
        input_size=args.input_size,
        dynamic=args.dynamic,
        int8=args.int8,
        calib=args.calib,
        calib_images=args.calib_images,
        eval_split=args.eval_split,
        eval_images=args.eval_images,
        evaluate=not args.no_eval,
        opset=args.opset,
        num_classes=args.num_classes,
        overrides=[item for group in args.overrides for item in group],
    )
    h, w = report["input_size"]
    print(f"wrote {report['path']} ({report['format']}, {w}x{h}{', dynamic' if report['dynamic'] else ''})")
    source = Path(args.source)
    weights = run_folder_weights(source) if source.is_dir() else source  # the file the export read
    if source.is_dir() or (source.is_file() and source.suffix.lower() in CHECKPOINT_SUFFIXES):
        print(f"weights: {weights}")
    if report.get("checker"):
        print(
            f"onnx.checker: {report['checker']}; BatchNormalization nodes left: {report['batchnorm_nodes']}"
        )
    p = report["parity"]
    print(
        f"parity with PyTorch (fp32): max abs logit diff {p['max_abs_diff']:.3g}, "
        f"argmax agreement {p['argmax_agreement']:.4%}"
    )
    if report.get("dynamic_sizes_ok"):
        print("dynamic sizes checked: " + ", ".join(f"{w}x{h}" for h, w in report["dynamic_sizes_ok"]))
    q = report.get("int8")
    if q:
        print(
            f"int8 ({q['format']}, {q['weights']} weights, {q['calibration_images']} calibration images from "
            f"{q['calibration_source']}): argmax agreement with fp32 {q['argmax_agreement_vs_fp32']:.2%} "
            f"on {q['agreement_images']}"
        )
        if "miou_int8" in q:
            note = figure_note(weights, (report.get("metadata") or {}).get("config"), q["eval_split"])
            print(
                f"mIoU on {q['eval_split']} ({q['eval_images']} images): fp32 {q['miou_fp32']:.2f}, "
                f"int8 {q['miou_int8']:.2f} ({q['miou_change']:+.2f} points)"
                + (f" -- {note}" if note else "")
            )
        print(f"fp32 ONNX kept at {report['fp32_path']}")
    if args.json:
        atomic_write_text(
            Path(args.json), json.dumps(report, indent=2, default=str) + "\n", "the export report"
        )
    return 0
