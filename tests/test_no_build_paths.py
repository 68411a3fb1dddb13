"""Nothing that ships carries a path of the machine that built it.

Every file under ``src/effseg`` (what the wheel packs: code, configs, samples and the shipped
checkpoints, whose zip members are read one by one) is searched for absolute paths of this
checkout, its parent folder, the home folder and the usual home / scratch roots; the stored
dictionaries of the shipped checkpoints hold no absolute path at all (a trained model's
``data.root`` was one: ``scripts/ship_zoo_model.py`` now removes it).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "effseg"
SKIP_DIRS = {"__pycache__"}
SKIP_SUFFIXES = {".pyc", ".pyo"}


def _markers() -> list[bytes]:
    """Absolute path prefixes that only a build machine has."""
    marks = {str(ROOT) + "/", "/home/", "/Users/", "/root/", "/tmp/", "C:\\Users\\", "C:/Users/"}
    if len(ROOT.parent.parts) > 1:  # the folder holding the checkout, e.g. /work/ (not "/")
        marks.add(str(ROOT.parent) + "/")
    home = Path.home()
    if len(home.parts) > 1:
        marks.add(str(home) + "/")
    return sorted(m.encode() for m in marks)


def shipped_files() -> list[Path]:
    """Every file the package ships (symlinked folders such as ``configs`` followed)."""
    files = []
    for folder, dirs, names in os.walk(PACKAGE, followlinks=True):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        files += [Path(folder) / n for n in names if Path(n).suffix not in SKIP_SUFFIXES]
    return sorted(files)


def _contents(path: Path) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of a file, or of each member of a zip (a torch checkpoint)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return [(f"{path.name}:{name}", z.read(name)) for name in z.namelist()]
    return [(path.name, path.read_bytes())]


def absolute_strings(obj: object, where: str = "") -> list[str]:
    """``key=value`` of every string in nested dicts / lists that is an absolute path."""
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in absolute_strings(v, f"{where}.{k}".lstrip("."))]
    if isinstance(obj, list | tuple):
        return [s for i, v in enumerate(obj) for s in absolute_strings(v, f"{where}[{i}]")]
    if isinstance(obj, str) and (obj.startswith(("/", "~", "\\\\")) or obj[1:3] in (":\\", ":/")):
        return [f"{where}={obj}"]
    return []


def test_the_search_covers_the_package() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in shipped_files()}
    assert "zoo/camvid-ddrnet23_slim.pt" in names and "zoo/models.yaml" in names
    assert "configs/camvid/cpu_40min.yaml" in names  # the configs ship too (a symlink in a checkout)
    assert "cli/__init__.py" in names and any(n.startswith("samples/") and n.endswith(".jpg") for n in names)


@pytest.mark.parametrize("path", shipped_files(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_shipped_file_holds_a_build_machine_path(path: Path) -> None:
    for name, data in _contents(path):
        for mark in _markers():
            at = data.find(mark)
            assert at < 0, (
                f"{name} holds {data[max(at - 40, 0) : at + 60]!r}: a path of the machine that built it"
            )


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("zoo/*.pt")), ids=lambda p: p.name)
def test_shipped_checkpoints_store_no_absolute_path(path: Path) -> None:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    found = absolute_strings({k: v for k, v in ckpt.items() if k != "model"})
    assert not found, f"{path.name} stores {found[0]}; repackage it with scripts/ship_zoo_model.py"
    assert ckpt["config"]["data"]["root"] == "", "a shipped model's data.root is unset (--set data.root=PATH)"


def test_the_checks_catch_a_path(tmp_path: Path) -> None:
    """The two checks find what they are for (a checkpoint with a trainer's data root)."""
    bad = tmp_path / "bad.pt"
    torch.save({"model": {}, "config": {"data": {"root": str(ROOT / "data" / "camvid")}}}, bad)
    assert absolute_strings(torch.load(bad, weights_only=True)) == [f"config.data.root={ROOT}/data/camvid"]
    assert any(mark in data for _, data in _contents(bad) for mark in _markers())
