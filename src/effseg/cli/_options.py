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
