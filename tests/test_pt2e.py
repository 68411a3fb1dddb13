"""compile-int8 (effseg.deploy.pt2e), its cases run in a fresh Python process.

Why a process of their own: inductor's compiled graphs, its config and torchao's quantizer
state stay out of the suite's long-lived workers, and the cases' own fixture compiles once. (A
worker that died here with SIGSEGV was the DataLoader's SIGCHLD handler left installed, see
tests/conftest.py, not the int8 path.) The cases themselves are in ``tests/isolated/pt2e_cases.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchao")  # the optional `int8-torch` extra

CASES = Path(__file__).parent / "isolated" / "pt2e_cases.py"


@pytest.mark.slow
def test_compile_int8_cases_pass_in_a_fresh_process() -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", str(CASES)]
    proc = subprocess.run(cmd, cwd=CASES.parents[2], capture_output=True, text=True, timeout=900)
    out = f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-5000:]}\n{proc.stderr[-2000:]}"
    assert proc.returncode == 0, out
    assert " passed" in proc.stdout and " failed" not in proc.stdout, proc.stdout[-2000:]
    # every case ran: a case that silently stopped being collected would shrink this number
    assert int(proc.stdout.rsplit(" passed", 1)[0].split()[-1]) >= 7, proc.stdout[-2000:]
