"""`effseg serve MODEL [--port 8000] [--host 127.0.0.1]`: a local web page around one model."""

from __future__ import annotations

import argparse

from effseg.cli.predict import RUNTIME_CHOICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a shipped model name, a run directory, a .pt checkpoint or an .onnx file",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this computer only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port 1..65535 (default 8000)")
    parser.add_argument(
        "--runtime",
        choices=RUNTIME_CHOICES,
        default="eager",
        help="eager (default: any image size at once); the onnxruntime runtimes export once per image "
        "size (the last 4 sizes kept in memory, 8 on disk)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=20.0,
        metavar="MB",
        help="largest upload, refused (413) while it streams in (default 20)",
    )
    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=4.0,
        metavar="MP",
        help="uploads with more pixels are resized, to the model's own input size when it has one "
        "(default 4)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="threads that decode, segment and encode (default 2)",
    )
    parser.add_argument(
        "--queue",
        type=int,
        default=8,
        metavar="N",
        help="uploads waiting for a worker; beyond them the server answers 503 with Retry-After (default 8)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")


def run(args: argparse.Namespace) -> int:
    from effseg.app.serve import serve

    serve(
        args.model,
        host=args.host,
        port=args.port,
        runtime=args.runtime,
        device=args.device,
        max_upload_mb=args.max_upload_mb,
        max_megapixels=args.max_megapixels,
        workers=args.workers,
        queue=args.queue,
    )
    return 0
