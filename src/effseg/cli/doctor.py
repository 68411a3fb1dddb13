"""``effseg doctor``: versions, installed runtimes, the CPU's instruction sets, what is missing.

    effseg doctor            # a readable report
    effseg doctor --json     # the same as JSON

Exit status 0, or 1 when a default dependency of effseg is missing or a runtime fails to load
(a broken install); the optional ones (``effseg[all]``: openvino, torchao) are listed, not failed.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from effseg.bench.doctor import default_dependencies_missing, doctor_report, format_report

    report = doctor_report()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    broken = [name for name, state in report["runtimes"].items() if state.get("error")]
    return 1 if default_dependencies_missing(report) or broken else 0
