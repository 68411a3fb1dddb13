"""The `effseg` command line: a thin dispatcher over the Python API.

Each sub-command lives in ``effseg/cli/<name>.py`` and exposes
``add_arguments(parser)`` and ``run(args) -> int``; the work itself is done by the
library modules those call.  Bad input raises :class:`effseg.errors.EffsegError`,
printed here as one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from effseg import __version__
from effseg.errors import EffsegError

# name -> (module under effseg.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("models", "table of every backbone x head (params, GFLOPs), or the shipped trained models"),
    "configs": ("configs", "list the training configs shipped with effseg (train one by name)"),
    "data": ("data", "synthesise a city, prepare Cityscapes, inspect datasets"),
    "train": ("train", "train a model from a YAML config or a shipped config name"),
    "eval": ("evaluate", "evaluate a run, checkpoint, ONNX file or shipped model (mIoU, confusion matrix)"),
    "crossdrive": ("crossdrive", "leave one drive out: train on the other drives, score the held-out one"),
    "bench": ("bench", "measure params, GFLOPs, latency and memory of models"),
    "export": ("export", "export a checkpoint to ONNX (optionally int8) or TorchScript"),
    "select": ("select", "time the shipped models here; name the most accurate within a budget"),
    "predict": ("predict", "segment images, folders, videos or a camera: masks, overlays, label ids, video"),
    "serve": ("serve", "a local web page: drop an image, see its segmentation, class shares and latency"),
    "demo": ("demo", "synthetic data -> train -> eval -> bench -> report, no download"),
    "doctor": ("doctor", "what is installed, which runtimes this CPU can use, what is missing for what"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``effseg`` parser.  Every sub-command is listed; only ``only``'s module is imported and
    given its options when set (``effseg --help`` then imports no torch), all of them otherwise."""
    parser = argparse.ArgumentParser(prog="effseg", description="Efficient semantic segmentation.")
    parser.add_argument("--version", action="version", version=f"effseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text, description=help_text, add_help=False)
            continue
        try:
            module = importlib.import_module(f"effseg.cli.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"effseg.cli.{module_name}":
                raise
            continue  # command not built yet
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first argument not starting with ``-``), if any."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    parser = build_parser(only=command) if command else build_parser(only="")
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except EffsegError as err:
        print(f"effseg: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full or read-only disk no command foresaw: still one line
        from effseg.fileio import OUTPUT_ERRNOS, describe_os_error

        if err.errno not in OUTPUT_ERRNOS:
            raise
        print(f"effseg: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("effseg: interrupted", file=sys.stderr)
        return 130
