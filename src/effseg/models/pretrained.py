"""Load torchvision-format ImageNet weights from a file into a backbone (never downloads)."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from effseg.errors import CheckpointError


def _short(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > limit else shown


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``path``: bare, or under ``"state_dict"`` / ``"model"``.

    Uses ``torch.load(..., weights_only=True)``: a pickle that carries code is
    refused.  A ``module.`` prefix (DataParallel/DDP) is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: refused to load: the file is not plain tensors/containers (weights_only=True) "
            f"and may carry code ({first})"
        ) from None
    except Exception as err:  # corrupt zip, truncated file, not a torch file at all
        raise CheckpointError(
            f"{path}: cannot read as a PyTorch checkpoint ({type(err).__name__}: {err})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
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
    and shape mismatches raise one :class:`CheckpointError` that lists them.
    Returns ``backbone``.
    """
    target = getattr(backbone, "backbone", backbone)
    ignore = tuple(getattr(target, "pretrained_ignore", ()))
    state = read_state_dict(path)
    state = {k: v for k, v in state.items() if not (ignore and k.startswith(ignore))}
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        name = getattr(target, "name", None) or type(target).__name__
        parts = []
        if missing:
            parts.append(f"missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches (file vs model): {_short(mismatched)}")
        raise CheckpointError(f"{path}: does not fit backbone {name}; " + "; ".join(parts))
    target.load_state_dict(state, strict=True)
    return backbone
