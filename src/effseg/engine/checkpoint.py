"""Checkpoints: atomic writes, safe reads, and rebuilding a model from one.

A checkpoint is a plain dict saved with :func:`torch.save`:

- ``model``: state dict; ``model_config``: ``build_model`` kwargs;
- ``classes``, ``palette`` (list of [r, g, b]), ``mean``, ``std``, ``config`` (resolved config dict);
- ``training``: iterations, seconds of training / validation, time budget, stop reason;
- for resuming: ``optimizer``, ``scheduler``, ``scaler``, ``iteration``, ``rng``, ``best_miou``.

It is read back with ``torch.load(weights_only=True)``: a pickle that carries code
is refused, so everything in it must be tensors and plain Python containers.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from effseg.errors import CheckpointError, EffsegError, refused_pickle_message

__all__ = [
    "save_checkpoint",
    "remove_temp_files",
    "nonfinite_entries",
    "load_checkpoint",
    "load_model",
    "resolve_checkpoint",
    "load_state_dict_checked",
]


def _write_bytes(f: BinaryIO, data: bytes) -> None:
    """Write ``data`` to ``f`` and flush it to the disk (a separate step so tests can fail it)."""
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` to ``path`` atomically: a temp file in the same folder, fsync, ``os.replace``.

    A crash or kill mid-write leaves the previous file intact (and at worst a stray
    ``.<name>.*.tmp`` file, which :func:`remove_temp_files` cleans at resume). The
    checkpoint is serialised in memory first, so a full disk is an ``OSError`` of the
    file write, reported as one line.

    Raises:
        CheckpointError: no space left on the device (or another OS error writing the file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_bytes(f, buffer.getbuffer().tobytes())
        os.replace(tmp, path)
    except OSError as err:
        kept = f"the previous {path.name} is intact" if path.is_file() else f"no earlier {path.name}"
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(f"{path}: no space left on device while writing it ({kept})") from None
        raise CheckpointError(f"{path}: cannot write it: {err.strerror or err} ({kept})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete the half-written ``.<name>.pt.*.tmp`` files that killed writers left in ``folder``."""
    removed = []
    for tmp in Path(folder).glob(".*.pt.*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def nonfinite_entries(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state dict holding a NaN or an infinity."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def resolve_checkpoint(path_or_run_dir: str | Path) -> Path:
    """A ``.pt`` file as given, or a run folder's ``best.pt`` (else ``last.pt``)."""
    path = Path(path_or_run_dir)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: run folder has neither best.pt nor last.pt")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file or run folder not found")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict with ``torch.load(weights_only=True)``; errors become CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(refused_pickle_message(path, err)) from None
    except Exception as err:  # noqa: BLE001 - the unpickler raises anything (IndexError, KeyError...) on garbage
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first[:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    return obj


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DDP/DataParallel) and ``_orig_mod.`` (torch.compile) prefixes."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with a one-line CheckpointError on mismatch.

    A different number of classes is reported as such.
    """
    state = _strip_prefix(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape_bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if shape_bad:
        # A classifier (1x1 conv) whose output dim differs = another number of classes.
        want = getattr(model, "num_classes", None)
        for k in shape_bad:
            got, exp = tuple(state[k].shape), tuple(own[k].shape)
            if want is not None and exp[0] == want and got[1:] == exp[1:]:
                raise CheckpointError(
                    f"{source}: checkpoint is for {got[0]} classes, the model has {want} ({k})"
                )
        k = shape_bad[0]
        raise CheckpointError(
            f"{source}: weight {k} has shape {tuple(state[k].shape)}, model expects {tuple(own[k].shape)}"
        )
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise CheckpointError(f"{source}: weights do not fit the model: {', '.join(parts)}")
    model.load_state_dict(state, strict=True)


def load_model(
    path_or_run_dir: str | Path, device: str | torch.device = "cpu", num_classes: int | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint (or run folder) and load its weights.

    Returns ``(model in eval mode on device, meta)``; ``meta`` holds ``model_config``,
    ``num_classes``, ``classes``, ``palette``, ``mean``, ``std``, ``config``, ``iteration``,
    ``best_miou``, ``training`` (iterations, ``train_time_s``, ``val_time_s``, ``time_budget_min``,
    ``stopped_by``; None for older checkpoints) and ``path``. With ``num_classes``, a checkpoint
    for another number of classes raises CheckpointError.
    """
    from effseg.models import build_model  # models depend on nothing here; import lazily

    path = resolve_checkpoint(path_or_run_dir)
    ckpt = load_checkpoint(path)
    for key in ("model", "model_config"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: not an effseg checkpoint (no '{key}' entry)")
    from effseg.models.realtime import with_legacy_defaults  # stored before an option: its old value

    model_config = with_legacy_defaults(ckpt["model_config"])
    model_config["pretrained_backbone"] = None  # the weights come from the checkpoint
    ckpt_classes = int(model_config.get("num_classes", 0))
    if num_classes is not None and ckpt_classes != num_classes:
        raise CheckpointError(f"{path}: checkpoint is for {ckpt_classes} classes, expected {num_classes}")
    try:
        model = build_model(**model_config)
    except EffsegError as err:
        raise CheckpointError(f"{path}: cannot rebuild its model: {err}") from None
    load_state_dict_checked(model, ckpt["model"], str(path))
    model.to(device).eval()
    meta = {k: ckpt.get(k) for k in ("model_config", "classes", "palette", "mean", "std", "config")}
    meta.update(
        num_classes=ckpt_classes,
        iteration=ckpt.get("iteration"),
        best_miou=ckpt.get("best_miou"),
        training=ckpt.get("training"),
        path=str(path),
    )
    return model, meta
