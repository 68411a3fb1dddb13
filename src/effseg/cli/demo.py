"""`effseg demo`: synthetic city -> train two models -> evaluate -> benchmark -> report, on the CPU."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default="runs/demo",
        metavar="DIR",
        help="folder for the data, the two runs and report/ (default runs/demo)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny images and few iterations: about a minute, to check the installation",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        metavar="N",
        help="training iterations per model (default: as many as fit in about 5 minutes here; --quick: 14)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic city and of training (default 0)"
    )


def run(args: argparse.Namespace) -> int:
    from effseg.app.demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, iterations=args.iterations)
    return 0
