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


# The layers of docs/architecture.md, low -> high: a module imports only from its own layer or
# a lower one. ../shared/tools/structure.py checks the same with the package's first rooms only
# (it predates bench/, pipeline/ and app/), so the full order is checked here.
LAYERS = {
    "errors": ("errors", "fileio", "progress"),
    "config": ("config", "config_types", "size", "device", "zoo", "samples"),
    "data": ("data",),
    "models": ("models",),
    "engine": ("engine",),
    "deploy": ("deploy",),
    "api": ("api",),
    "bench": ("bench",),
    "pipeline": ("pipeline",),
    "app": ("app",),
    "cli": ("cli",),
}
UNLAYERED = ("effseg", "effseg.__main__", "effseg.tools")  # the package's entry points and the shim


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """``{module: effseg modules it imports}``, module level and inside functions."""
    import ast

    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in paths.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
        edges[name] = {m for m in found if m in paths and m != name and not name.startswith(m + ".")}
    return edges


def _layer(module: str) -> int | None:
    if module in UNLAYERED or module.startswith("effseg.tools."):
        return None
    room = module.split(".")[1]
    return next((i for i, rooms in enumerate(LAYERS.values()) if room in rooms), -1)


def test_every_module_has_a_layer_and_no_import_reaches_up_or_circles() -> None:
    from graphlib import CycleError, TopologicalSorter

    edges = _imports()
    assert len(edges) > 100 and "effseg.pipeline.video" in edges["effseg.pipeline.threaded"]
    assert [m for m in edges if _layer(m) == -1] == []  # a new room needs its row above and in the docs
    upward = [
        f"{a} -> {b}"
        for a, targets in edges.items()
        for b in targets
        if None not in (_layer(a), _layer(b)) and _layer(b) > _layer(a)
    ]
    assert upward == []
    try:
        TopologicalSorter(edges).prepare()
    except CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")
