"""Training configs shipped inside the package, found by name: ``camvid/cpu_40min``.

The one source of truth is the repository's top-level ``configs/`` folder; the package folder
``effseg/configs`` is a symbolic link to it in the git checkout, and the wheel build copies the
files (``pip install .`` gives a real folder).  A name is ``<dataset>/<stem>``; a path to a
YAML file keeps working everywhere a name does.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from effseg.errors import ConfigError

SUFFIXES = (".yaml", ".yml")


def configs_dir() -> Path:
    """The shipped configs folder (``effseg/configs``)."""
    return Path(__file__).resolve().parent.parent / "configs"


def list_configs() -> list[str]:
    """Every shipped config name, e.g. ``["camvid/cpu_40min", ..., "synthetic/open_challenge/..."]``."""
    root = configs_dir()
    if not root.is_dir():
        return []
    names = [
        p.relative_to(root).with_suffix("").as_posix()
        for p in root.rglob("*")
        if p.suffix in SUFFIXES and p.is_file()
    ]
    return sorted(names)


def _name_of(spec: str) -> str:
    """``configs/camvid/x.yaml``, ``camvid/x.yaml`` or ``camvid/x`` -> ``camvid/x``."""
    name = spec.replace("\\", "/").strip("/")
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.startswith("configs/"):
        name = name[len("configs/") :]
    return name


def find_config(spec: str | Path) -> Path:
    """A YAML file for ``spec``: the path itself when it exists, else the shipped config of that name.

    Raises ConfigError (one line) listing the nearest shipped names when neither exists.
    """
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; expected a YAML config file or a shipped config name")
    name = _name_of(str(spec))
    for suffix in SUFFIXES:
        candidate = configs_dir() / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    names = list_configs()
    near = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if not near:  # the same stem under another dataset, e.g. pspnet_r18 -> cityscapes/pspnet_r18
        stem = name.rsplit("/", 1)[-1]
        near = [n for n in names if n.rsplit("/", 1)[-1] == stem][:5]
    hint = f"near: {', '.join(near)}" if near else "list them with `effseg configs`"
    raise ConfigError(f"config {str(spec)!r}: no such file or shipped config; {hint}")


__all__ = ["configs_dir", "find_config", "list_configs"]
