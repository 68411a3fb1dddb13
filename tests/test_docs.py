"""The docs work as written: docs/cli.md matches the parser, and getting_started's runnable blocks run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The generator is a development script (scripts/cli_docs.py), not part of the package.
_spec = importlib.util.spec_from_file_location("cli_docs", ROOT / "scripts" / "cli_docs.py")
cli_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli_docs)
RUNNABLE = re.compile(r"<!--\s*runnable\s*-->\s*\n```(bash|python)[^\n]*\n(.*?)\n```", re.S)


def runnable_blocks(path: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block preceded by ``<!-- runnable -->``."""
    return RUNNABLE.findall(path.read_text(encoding="utf-8"))


def test_cli_reference_is_up_to_date() -> None:
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == cli_docs.render(), "docs/cli.md is stale: run python scripts/cli_docs.py --write"


def test_cli_reference_covers_every_option() -> None:
    text = cli_docs.render()
    parser = __import__("effseg.cli", fromlist=["build_parser"]).build_parser()
    for name, sub in cli_docs._subparsers(parser).items():
        assert f"## `effseg {name}`" in text
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in text, f"effseg {name} {flag} missing from docs/cli.md"


def test_runnable_block_parser(tmp_path: Path) -> None:
    doc = tmp_path / "d.md"
    doc.write_text(
        "x\n<!-- runnable -->\n```bash\necho hi\n```\n\n```bash\nnot me\n```\n"
        "<!-- runnable -->\n```python\nprint(1)\n```\n"
    )
    assert runnable_blocks(doc) == [("bash", "echo hi"), ("python", "print(1)")]


@pytest.mark.slow
def test_getting_started_runnable_blocks(tmp_path: Path) -> None:
    """Run the marked blocks in order, in one scratch folder, like a reader would."""
    blocks = runnable_blocks(ROOT / "docs" / "getting_started.md")
    assert len(blocks) >= 3, "getting_started.md lost its runnable examples"
    env = dict(
        os.environ,
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    for i, (lang, code) in enumerate(blocks, 1):
        cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (
            f"runnable block {i} ({lang}) failed with exit {proc.returncode}:\n{code}\n"
            f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )
