"""Read weight files and say how they fit a model (:class:`Misfit`, the one wording of every
loader that checks tensors by name and shape); load torchvision-format ImageNet weights from a file
into a backbone (never downloads)."""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from effseg.errors import CheckpointError


def _short(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > limit else shown


def _by_module(keys: list[str], limit: int = 6) -> str:
    """``"12 keys in layer1.2.conv1, layer1.2.bn1"``: keys grouped by module (BN has 5 keys each)."""
    modules = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in keys))
    shown = ", ".join(modules[:limit])
    more = f", ... ({len(modules)} modules)" if len(modules) > limit else ""
    return f"{len(keys)} key{'s' if len(keys) != 1 else ''} in {shown}{more}"


@dataclass
class Misfit:
    """How a state dict fails to fit a model: the model's tensors it lacks (``missing``), its
    tensors the model lacks (``unexpected``) and those in both whose shapes differ
    (``mismatched``, as :meth:`shape_pair` texts). False when it fits."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, own: Mapping[str, Tensor], theirs: Mapping[str, Tensor]) -> Misfit:
        """The misfit of ``theirs`` (a file's tensors) against ``own`` (the model's), in their orders."""
        return cls(
            missing=[k for k in own if k not in theirs],
            unexpected=[k for k in theirs if k not in own],
            mismatched=[
                cls.shape_pair(k, theirs[k], own[k])
                for k in own
                if k in theirs and tuple(theirs[k].shape) != tuple(own[k].shape)
            ],
        )

    @staticmethod
    def shape_pair(name: str, theirs: Tensor, own: Tensor) -> str:
        """``"layer1.0.conv1.weight (64, 64, 1, 1) vs (64, 64, 3, 3)"``: the file's shape first."""
        return f"{name} {tuple(theirs.shape)} vs {tuple(own.shape)}"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def text(self, source: str = "file") -> str:
        """One line, a clause per kind: ``missing 96 keys in layer1.2.conv1, ...; unexpected ...;
        shape mismatches (file vs model): ...`` (``source`` names the other side)."""
        parts = []
        if self.missing:
            parts.append(f"missing {_by_module(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {_by_module(self.unexpected)}")
        if self.mismatched:
            parts.append(f"shape mismatches ({source} vs model): {_short(self.mismatched)}")
        return "; ".join(parts)


def _flatten(obj: Mapping, prefix: str = "") -> dict[str, object]:
    """``{"detail": {"S1.0.conv.weight": t}}`` -> ``{"detail.S1.0.conv.weight": t}``."""
    out: dict[str, object] = {}
    for key, value in obj.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``path``: bare, under ``"state_dict"`` / ``"model"``, or one state
    dict per module (``{"detail": {...}, "segment": {...}}``, flattened to dotted names).

    Uses ``torch.load(..., weights_only=True)``: a pickle that carries code is
    refused.  A ``module.`` prefix (DataParallel/DDP) is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is many lines; keep the one that says what was refused
        m = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        detail = m.group(1).strip() if m else type(err).__name__
        if "Unsupported global" in detail:
            detail = detail.split(" was not an allowed global")[0]
            raise CheckpointError(
                f"{path}: refused to load: it references code ({detail}); only tensors and plain "
                "containers are accepted (torch.load weights_only=True)"
            ) from None
        raise CheckpointError(
            f"{path}: cannot read as a PyTorch checkpoint with weights_only=True ({detail}); "
            "expected a file written by torch.save"
        ) from None
    except Exception as err:  # corrupt zip, truncated file, not a torch file at all
        raise CheckpointError(
            f"{path}: cannot read as a PyTorch checkpoint ({type(err).__name__}: {err})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Mapping) for v in obj.values()):
        obj = _flatten(obj)  # per-module state dicts (CoinCheung's backbone_v2.pth: detail, segment)
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path}: expected a state dict of tensors (bare or under 'state_dict'/'model'), "
            f"got {type(obj).__name__}"
        )
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_pretrained(backbone: nn.Module, path: str | Path) -> nn.Module:
    """Load a torchvision-format ImageNet checkpoint into ``backbone`` with strict key checks.

    ``backbone`` is a backbone from :func:`effseg.models.backbones.build_backbone`
    (or a :class:`~effseg.models.segmentor.Segmentor`, whose backbone is used).
    Classifier keys (``fc.*``, ``classifier.*``, and MobileNetV2's unused
    1280-channel ``features.18.*``) are dropped.  Missing keys, unexpected keys
    and shape mismatches raise one :class:`CheckpointError` that lists them.  A backbone
    whose ``pretrained_partial`` names key prefixes (MobileNetV3 with ``reduced_tail=True``)
    keeps its initialisation for the tensors under them whose shapes differ from the file;
    a warning counts them.  Returns ``backbone``.
    """
    target = getattr(backbone, "backbone", backbone)
    ignore = tuple(getattr(target, "pretrained_ignore", ()))
    partial = tuple(getattr(target, "pretrained_partial", ()))
    state = read_state_dict(path)
    state = {k: v for k, v in state.items() if not (ignore and k.startswith(ignore))}
    own = target.state_dict()
    if partial:
        skipped = [
            k for k in own if k.startswith(partial) and (k not in state or state[k].shape != own[k].shape)
        ]
        skipped += [k for k in state if k.startswith(partial) and k not in own]
        if skipped:
            warnings.warn(
                f"{path}: {len(skipped)} tensors of the reduced last stage "
                f"({', '.join(p.rstrip('.') for p in partial)}) do not exist in this file and keep "
                "their random initialisation",
                stacklevel=2,
            )
        state = {k: v for k, v in state.items() if k not in skipped}
        state.update({k: own[k] for k in skipped if k in own})
    misfit = Misfit.of(own, state)
    if misfit:
        name = getattr(target, "name", None) or type(target).__name__
        raise CheckpointError(f"{path}: does not fit backbone {name}; {misfit.text()}")
    target.load_state_dict(state, strict=True)
    return backbone
