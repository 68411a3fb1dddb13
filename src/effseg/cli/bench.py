"""``effseg bench MODEL_OR_CONFIG...``: params, GFLOPs, latency, memory and mIoU per runtime.

    effseg bench pspnet_resnet18 pspnet_mobilenetv2 --runtime eager,onnxruntime,onnxruntime-int8
    effseg bench configs/cityscapes/*.yaml --input-size 1024x512 --out bench/
    effseg bench runs/pspnet_r18 --eval runs/pspnet_r18 --runtime eager,compile
    effseg bench camvid-ddrnet23_slim --input-size 480x360 --runtime onnxruntime,openvino,openvino-int8

Models: names like ``pspnet_resnet18`` (``_os16`` suffix for output stride 16;
random weights), config YAMLs, checkpoints / run folders, shipped model names
(``camvid-<model>``) or exported ``.onnx`` files.
Writes ``bench.json``, ``bench.md`` and ``pareto.png`` to ``--out``.
"""

from __future__ import annotations

import argparse

# effseg.bench.measure.RUNTIMES, repeated here so that parsing imports no torch (a test checks they agree).
RUNTIMES = (
    "eager", "channels_last", "compile", "compile-int8",
    "onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8",
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "models", nargs="+", metavar="MODEL_OR_CONFIG", help="model names, configs, runs, .onnx, shipped"
    )
    parser.add_argument("--input-size", default="1024x512", metavar="WxH", help="default 1024x512")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--threads", type=int, help="torch / onnxruntime intra-op threads (default: torch's)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="default fp32")
    parser.add_argument(
        "--runtime",
        default="eager",
        metavar="LIST",
        help=f"comma list of {', '.join(RUNTIMES)} (default eager)",
    )
    parser.add_argument(
        "--eval", dest="eval_run", metavar="RUN", help="run folder / eval.json giving the mIoU"
    )
    parser.add_argument(
        "--calib", metavar="DIR", help="images to calibrate the int8 runtimes (default: random)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument("--runs", type=int, default=10, help="timed calls (default 10)")
    parser.add_argument("--num-classes", type=int, default=19, help="classes for model names (default 19)")
    parser.add_argument(
        "--ort-opt-level", default="all", choices=["disable", "basic", "extended", "all"], help="default all"
    )
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage eager breakdown")
    parser.add_argument("--out", default="bench", metavar="DIR", help="output folder (default ./bench)")


def run(args: argparse.Namespace) -> int:
    from effseg.bench.measure import bench_models
    from effseg.bench.report import print_table, write_report
    from effseg.size import parse_size

    calib = None
    if args.calib:
        from effseg.config import IMAGENET_MEAN, IMAGENET_STD
        from effseg.deploy.quantize import find_calibration_images, load_calibration_batches

        size = parse_size(args.input_size, "--input-size")
        calib = load_calibration_batches(
            find_calibration_images(args.calib), size, IMAGENET_MEAN, IMAGENET_STD, 16
        )
    report = bench_models(
        args.models,
        input_size=args.input_size,
        batch=args.batch,
        device=args.device,
        threads=args.threads,
        dtype=args.dtype,
        runtimes=args.runtime,
        warmup=args.warmup,
        runs=args.runs,
        eval_run=args.eval_run,
        calib=calib,
        stages=not args.no_stages,
        ort_opt_level=args.ort_opt_level,
        num_classes=args.num_classes,
    )
    print_table(report)
    paths = write_report(report, args.out)
    print("wrote " + ", ".join(map(str, paths.values())))
    return 0 if all("error" not in r for r in report["results"]) else 1
