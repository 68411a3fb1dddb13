"""What ships inside the package: trained models and training configs, found by name.

- Shipped models: ``models.yaml`` in this folder lists each weight file next to it with its
  figures: its role on the accuracy/latency front (fast / balanced / accurate), the same-drive
  val mIoU and the cross-drive estimate (leave one drive out, mean of the folds: the figure that
  predicts new streets), what it was trained on and how (command, wall time), and its latency per
  runtime on a named machine. ``effseg.load("camvid-<name>")`` finds the file here; nothing is
  downloaded. ``EFFSEG_ZOO_DIR`` points to another folder holding a ``models.yaml`` and its
  weight files (tests, or a site-wide model store).
- Shipped configs: :mod:`effseg.zoo.configs` (``effseg train camvid/cpu_40min``).

This module reads YAML and paths only; it imports no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effseg.errors import ModelError

ZOO_ENV = "EFFSEG_ZOO_DIR"
REGISTRY = "models.yaml"
#: The roles of the shipped models on the accuracy/latency front.
ROLES = ("fast", "balanced", "accurate")
_FIELDS: dict[str, type] = {
    "name": str,
    "file": str,
    "dataset": str,
    "classes": int,
    "role": str,
    "miou_val": float,
    "miou_crossdrive": float,
    "crossdrive_folds": dict,
    "crossdrive_recipe": str,
    "train_data": str,
    "train_command": str,
    "train_minutes": float,
    "budget": str,
    "iterations": int,
    "input_size": str,
    "latency_ms": dict,
    "cpu_latency_ms": float,
    "machine": str,
    "card": str,
}
_REQUIRED = ("name", "file", "dataset", "input_size")


@dataclass(frozen=True)
class ZooModel:
    """One shipped model: its registry entry and the weight file it names (mIoU in percent)."""

    name: str
    file: str
    dataset: str
    input_size: str  # WIDTHxHEIGHT, the size the network sees by default
    classes: int | None = None
    role: str | None = None  # one of ROLES
    # same-drive val: the dataset's val split, no TTA (CamVid val is 101 frames of 0016E5, a drive
    # that training also saw: it measures a street the model knows)
    miou_val: float | None = None
    # cross-drive estimate: mean over leave-one-drive-out folds of the recipe (effseg crossdrive)
    miou_crossdrive: float | None = None
    crossdrive_folds: dict[str, float] = field(default_factory=dict)  # held-out drive -> mIoU
    crossdrive_recipe: str | None = None  # the effseg crossdrive command that measured it
    train_data: str | None = None  # e.g. "train+val" (all drives) or "train"
    train_command: str | None = None
    train_minutes: float | None = None  # minutes of training on `machine` (validation excluded)
    budget: str | None = None
    iterations: int | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # runtime -> median ms at input_size
    cpu_latency_ms: float | None = None  # eager latency (older entries; also latency_ms["eager"])
    machine: str | None = None
    card: str | None = None
    folder: str = ""

    @property
    def path(self) -> Path:
        """The weight file."""
        return Path(self.folder) / self.file

    @property
    def size_hw(self) -> tuple[int, int]:
        """``input_size`` as ``(height, width)`` pixels."""
        w, _, h = self.input_size.lower().partition("x")
        return int(h), int(w)


def zoo_dir() -> Path:
    """The folder holding ``models.yaml`` and the weight files (``$EFFSEG_ZOO_DIR`` or this package)."""
    env = os.environ.get(ZOO_ENV)
    return Path(env) if env else Path(__file__).resolve().parent


def _entry(raw: Any, index: int, registry: Path) -> ZooModel:
    where = f"{registry}: models[{index}]"
    if not isinstance(raw, dict):
        raise ModelError(f"{where}: expected a mapping of {', '.join(_FIELDS)}")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ModelError(f"{where}: unknown field {unknown[0]!r}; expected {', '.join(_FIELDS)}")
    missing = [k for k in _REQUIRED if raw.get(k) in (None, "")]
    if missing:
        raise ModelError(f"{where}: missing {', '.join(missing)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if _FIELDS[key] is dict:
            values[key] = _numbers(value, f"{where}.{key}")
            continue
        try:
            values[key] = _FIELDS[key](value)
        except (TypeError, ValueError):
            raise ModelError(f"{where}.{key}: {value!r} is not a {_FIELDS[key].__name__}") from None
    w, sep, h = values["input_size"].lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise ModelError(f"{where}.input_size: {values['input_size']!r}; expected WIDTHxHEIGHT, e.g. 480x360")
    if values.get("role") is not None and values["role"] not in ROLES:
        raise ModelError(f"{where}.role: {values['role']!r}; expected one of {', '.join(ROLES)}")
    if values.get("miou_val") is not None and "val" in values.get("train_data", "").split("+"):
        raise ModelError(
            f"{where}.miou_val: the model was trained on val ({values['train_data']}), so a val figure "
            "measures memory; leave miou_val out and give miou_crossdrive"
        )
    if "cpu_latency_ms" in values:  # the older single figure is the eager latency
        values["latency_ms"] = {"eager": values["cpu_latency_ms"], **values.get("latency_ms", {})}
    return ZooModel(folder=str(registry.parent), **values)


def _numbers(value: Any, where: str) -> dict[str, float]:
    """A mapping of names to numbers (``latency_ms``, ``crossdrive_folds``), or a one-line error."""
    if not isinstance(value, dict):
        raise ModelError(f"{where}: expected a mapping of names to numbers, e.g. {{eager: 87.4}}")
    out: dict[str, float] = {}
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ModelError(f"{where}.{k}: {v!r} is not a number")
        out[str(k)] = float(v)
    return out


def list_pretrained() -> list[ZooModel]:
    """Every shipped model in the registry, in file order (empty when none ships)."""
    import yaml

    registry = zoo_dir() / REGISTRY
    if not registry.is_file():
        return []
    try:
        data = yaml.safe_load(registry.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ModelError(f"{registry}: not valid YAML ({str(err).splitlines()[0]})") from None
    items = data.get("models") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ModelError(f"{registry}: expected a top-level 'models:' list")
    return [_entry(raw, i, registry) for i, raw in enumerate(items)]


def looks_like_zoo_name(spec: str) -> bool:
    """True for ``<dataset>-<model>`` names (no folder part, no file suffix), e.g. ``camvid-lraspp_mbv3``."""
    return "-" in spec and "/" not in spec and "\\" not in spec and "." not in spec


def known_names() -> str:
    """The shipped model names, comma separated ("none" when nothing ships)."""
    return ", ".join(m.name for m in list_pretrained()) or "none"


def find_pretrained(name: str) -> ZooModel:
    """The registry entry called ``name``; ModelError listing the known names otherwise."""
    for model in list_pretrained():
        if model.name == name:
            if not model.path.is_file():
                raise ModelError(
                    f"shipped model {name!r}: its weight file {model.path} is missing (reinstall effseg)"
                )
            return model
    raise ModelError(f"unknown shipped model {name!r}; known: {known_names()}")


__all__ = [
    "ROLES",
    "ZOO_ENV",
    "ZooModel",
    "find_pretrained",
    "known_names",
    "list_pretrained",
    "looks_like_zoo_name",
]
