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
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument(
        "--runtime",
        choices=RUNTIME_CHOICES,
        default="eager",
        help="eager (default: any image size at once); the onnxruntime runtimes export once per image size",
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=20.0, metavar="MB", help="largest upload (default 20)"
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
    )
    return 0
