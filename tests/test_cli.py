"""The command line parses without the heavy libraries: every `--help` answers at once."""

from __future__ import annotations

import subprocess
import sys

from effseg.cli import COMMANDS


def test_every_help_imports_no_torch() -> None:
    """`effseg <command> --help` for every command (as `python -m effseg` runs it) imports no torch."""
    code = (
        "import sys\nfrom effseg.cli import COMMANDS, main\n"
        "for argv in [['--help']] + [[name, '--help'] for name in COMMANDS]:\n"
        "    try:\n        main(argv)\n    except SystemExit as stop:\n"
        "        assert stop.code == 0, (argv, stop.code)\n"
        "    heavy = sorted(m for m in ('torch', 'albumentations') if m in sys.modules)\n"
        "    assert not heavy, f'effseg {\" \".join(argv)} imported {heavy}'\n"
        "print('checked', len(COMMANDS) + 1)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"checked {len(COMMANDS) + 1}" in res.stdout


def test_cli_lists_agree_with_the_library() -> None:
    """The lists the CLI repeats to stay light are the library's."""
    from effseg.bench.measure import RUNTIMES
    from effseg.cli.bench import RUNTIMES as BENCH_CHOICES
    from effseg.config import OUTPUT_STRIDES

    assert BENCH_CHOICES == RUNTIMES
    assert _choices("models", "--output-stride") == [str(s) for s in OUTPUT_STRIDES]


def _choices(command: str, option: str) -> list[str]:
    """The ``choices`` of ``option`` in ``effseg command``'s parser, as text."""
    from effseg.cli import build_parser

    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    action = next(a for a in sub._actions if option in a.option_strings)
    return [str(c) for c in action.choices]
