"""Options shared by several sub-commands."""

from __future__ import annotations

import argparse


def add_set_option(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE ...`` (repeatable) config overrides, collected in ``args.overrides``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        nargs="+",
        default=[],
        help=f"override config keys, e.g. --set {example}",
    )


def add_tta_option(parser: argparse.ArgumentParser, note: str = "") -> None:
    """``--tta SPEC`` (``args.tta``, default ``None``: no augmentation), read by
    :func:`effseg.engine.tta.parse_tta`; ``note`` adds what the command does with it."""
    parser.add_argument(
        "--tta",
        metavar="SPEC",
        default=None,
        help=f"test-time augmentation, e.g. flip or flip,0.75,1.0,1.25 (default: none){note}",
    )
