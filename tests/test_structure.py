"""The package's rooms: one module per file name, and the old ``effseg.tools`` paths as a shim."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "effseg"


def test_no_two_modules_share_a_file_name_outside_cli() -> None:
    """cli/ is named after its commands (cli/export.py beside deploy/export.py is meant); every
    other module name says one job. Dunder files (__init__, __main__) are Python's, not names."""
    names = Counter(
        p.name
        for p in PACKAGE.rglob("*.py")
        if "cli" not in p.relative_to(PACKAGE).parts[:1] and not p.name.startswith("__")
    )
    assert names, f"no modules found under {PACKAGE}"
    assert [name for name, n in names.items() if n > 1] == []


def _fresh_import(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter (a module imported once per process warns once)."""
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_old_tools_import_warns_once_and_is_the_new_module() -> None:
    done = _fresh_import(
        """
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import effseg.tools.runtime as old
            from effseg.tools import runtime as again
        import effseg.pipeline.engines as new
        print(old is new, again is new)
        print(len(caught), caught[0].category.__name__, caught[0].message)
        """
    )
    assert done.returncode == 0, done.stderr
    same, warning = done.stdout.strip().splitlines()
    assert same == "True True"
    assert warning == (
        "1 FutureWarning effseg.tools.runtime moved to effseg.pipeline.engines; import that instead"
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("bench", "effseg.bench.measure"),
        ("pipeline", "effseg.pipeline.threaded"),
        ("export", "effseg.deploy.export_run"),
        ("report", "effseg.app.demo_report"),
    ],
)
def test_the_shim_maps_the_old_names_to_their_rooms(old: str, new: str) -> None:
    import effseg.tools

    assert effseg.tools.MOVED[old] == new
    with pytest.warns(FutureWarning, match=rf"^effseg\.tools\.{old} moved to {new}; import that instead$"):
        module = getattr(effseg.tools, old)
    assert module is importlib.import_module(new)


def test_an_unknown_tools_name_is_an_attribute_error() -> None:
    import effseg.tools

    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        effseg.tools.nothing  # noqa: B018
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("effseg.tools.nothing")
