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

import io
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effseg.errors import CheckpointError, EffsegError, refused_pickle_message
from effseg.fileio import OutputError, atomic_write_bytes
from effseg.models.pretrained import Misfit

__all__ = [
    "save_checkpoint",
    "remove_temp_files",
    "nonfinite_entries",
    "check_finite",
    "load_checkpoint",
    "load_model",
    "RUN_FOLDER_FILES",
    "resolve_checkpoint",
    "run_folder_weights",
    "load_state_dict_checked",
]


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` to ``path`` atomically (:func:`effseg.fileio.atomic_path`: a temp file in the
    same folder, fsync, ``os.replace``).

    A crash or kill mid-write leaves the previous file intact (and at worst a stray
    ``.<name>.*.tmp.pt`` file, which :func:`remove_temp_files` cleans at resume). The checkpoint is
    serialised in memory first, so a full disk is an ``OSError`` of the file write.

    Raises:
        CheckpointError: the one line of :func:`effseg.fileio.describe_output_error` (full disk,
            read-only folder, no permission, ...), saying that the previous file is intact.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        atomic_write_bytes(path, buffer.getbuffer(), "the checkpoint", fsync=True)
    except OutputError as err:
        raise CheckpointError(str(err)) from None


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete the half-written ``.<name>.pt.*.tmp`` files that killed writers left in ``folder``."""
    removed = []
    for tmp in Path(folder).glob(".*.pt.*.tmp*"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def nonfinite_entries(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state dict holding a NaN or an infinity."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


#: The weights a run folder stands for, in order: the final ones, then the val-picked ones.
RUN_FOLDER_FILES = ("last.pt", "best.pt")


def run_folder_weights(folder: str | Path) -> Path:
    """The checkpoint a run folder stands for: ``last.pt`` (the weights training ended with), else
    ``best.pt`` (a folder that keeps only the val-picked weights). The one rule of every loader:
    :func:`effseg.deploy.artifact.load_artifact` (``effseg.load``, eval, export, predict, serve,
    bench), ``model.init`` (:mod:`effseg.engine.init_weights`) and :func:`load_model` (the
    distillation teacher, ``distill.teacher``).

    ``best.pt`` is picked by its mIoU on the val split, so its val figure is optimistic; the final
    weights are the ones a val figure estimates honestly. Name ``RUN/best.pt`` to take it.

    Raises:
        CheckpointError: the folder holds neither file.
    """
    folder = Path(folder)
    for name in RUN_FOLDER_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: run folder has neither {' nor '.join(RUN_FOLDER_FILES)}")


def resolve_checkpoint(path_or_run_dir: str | Path) -> Path:
    """A checkpoint file as given, or the one a run folder stands for (:func:`run_folder_weights`:
    ``last.pt``, else ``best.pt``)."""
    path = Path(path_or_run_dir)
    if path.is_dir():
        return run_folder_weights(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file or run folder not found")
    return path


def _not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` is not a PyTorch checkpoint at all, from its first bytes (None if it may be one).

    ``torch.save`` writes a zip archive (``PK\\x03\\x04``) or, in the legacy format, a pickle of
    protocol 2 or more (first byte ``\\x80``); anything else is some other file, never "code".
    """
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as err:
        return f"cannot read it ({err.strerror or err})"
    if not head:
        return "the file is empty (a write that was interrupted?)"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    if re.search(rb"(^|[\n(])c[\w.]+\n[\w.]+\n", head):
        return None  # a text (protocol 0) pickle naming a global: let the unpickler refuse its code
    text = head.decode("utf-8", "replace").rstrip("\ufffd")  # a cut multi-byte character at the end
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"not a PyTorch checkpoint but a text file (it starts with {first!r})"
    return "not a PyTorch checkpoint (its first bytes are neither a zip archive nor a pickle)"


def _pickle_globals(path: Path, limit: int = 64 << 20) -> list[str]:
    """The ``module.name`` globals a plain pickle file would import, read with :mod:`pickletools`
    (which parses opcodes and runs nothing); empty for a file that does not parse."""
    import pickletools

    found: list[str] = []
    strings: list[str] = []
    try:
        data = path.read_bytes()[:limit]
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                found.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - garbage raises anything; what was found so far stands
        pass
    return found


def _read_failure(err: BaseException) -> str:
    """A complete clause for a checkpoint that starts like one but cannot be read."""
    text = str(err).strip()
    if isinstance(err, EOFError) or "failed finding central directory" in text or "end of file" in text:
        return "the file is truncated or damaged (an interrupted copy or write?)"
    first = text.splitlines()[0] if text else type(err).__name__
    first = first.split(". ")[0].rstrip(".")  # torch appends paragraphs of advice: keep the first sentence
    if len(first) > 160:
        first = first[:157].rsplit(" ", 1)[0] + " ..."
    return f"the file is damaged ({type(err).__name__}: {first})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict with ``torch.load(weights_only=True)``; errors become CheckpointError.

    A file that is not a checkpoint (text, an image, empty) says so; one that carries code is
    refused as such (:func:`effseg.errors.refused_pickle_message`); a truncated one says it is
    truncated."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    why = _not_a_checkpoint(path)
    if why:
        raise CheckpointError(f"{path}: {why}; expected a checkpoint written by effseg or torch.save")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported operand" in str(err):  # a pickle opcode the weights-only unpickler lacks
            imported = _pickle_globals(path)
            if imported:  # read, never run: pickletools only parses the opcodes
                raise CheckpointError(
                    refused_pickle_message(path, Exception(f"GLOBAL {imported[0]}"))
                ) from None
            raise CheckpointError(
                f"{path}: refused: a pickle that the safe weights-only loader cannot read (it uses an "
                "opcode torch.save never writes); use a checkpoint written by effseg or torch.save"
            ) from None
        raise CheckpointError(refused_pickle_message(path, err)) from None
    except Exception as err:  # noqa: BLE001 - the unpickler raises anything (IndexError, KeyError...) on garbage
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: {_read_failure(err)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    return obj


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Raise a one-line :class:`CheckpointError` naming the first weight of ``state`` that holds a
    NaN or an infinity (a damaged checkpoint gives wrong answers without a word otherwise)."""
    bad = nonfinite_entries({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})
    if bad:
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise CheckpointError(
            f"{source}: weight {bad[0]} holds NaN or infinite values{more}; the checkpoint is damaged "
            "(a diverged run or a broken copy): use an earlier checkpoint or train again"
        )


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
    want = getattr(model, "num_classes", None)
    for k in own:  # a classifier (1x1 conv) whose output dim differs = another number of classes
        got, exp = tuple(state[k].shape) if k in state else None, tuple(own[k].shape)
        if got and want is not None and got != exp and exp[0] == want and got[1:] == exp[1:]:
            raise CheckpointError(f"{source}: checkpoint is for {got[0]} classes, the model has {want} ({k})")
    misfit = Misfit.of(own, state)
    if misfit:
        raise CheckpointError(f"{source}: weights do not fit the model: {misfit.text('checkpoint')}")
    model.load_state_dict(state, strict=True)


def load_model(
    path_or_run_dir: str | Path, device: str | torch.device = "cpu", num_classes: int | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint (or run folder: its ``last.pt``, else its ``best.pt``, the
    rule of every loader, :func:`run_folder_weights`) and load its weights.

    Returns ``(model in eval mode on device, meta)``; ``meta`` holds ``model_config``,
    ``num_classes``, ``classes``, ``palette``, ``mean``, ``std``, ``config``, ``iteration``,
    ``best_miou``, ``training`` (iterations, ``train_time_s``, ``val_time_s``, ``time_budget_min``,
    ``stopped_by``; None for older checkpoints) and ``path`` (the file read). With ``num_classes``,
    a checkpoint for another number of classes raises CheckpointError.
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
    if not isinstance(ckpt["model"], dict):
        raise CheckpointError(f"{path}: its 'model' entry is a {type(ckpt['model']).__name__}, not weights")
    check_finite(ckpt["model"], str(path))
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
