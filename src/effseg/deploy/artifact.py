"""The one artifact loader: anything a user can name -> a model and its metadata.

``load_artifact(spec)`` accepts

- a shipped model name, ``camvid-<model>`` (:mod:`effseg.zoo`; nothing is downloaded);
- a run folder (its final weights ``last.pt``, else its ``best.pt``: :func:`run_folder_weights`)
  or a ``.pt`` / ``.pth`` / ``.ckpt`` checkpoint (read with ``weights_only=True``);
- an exported ``.onnx`` file carrying effseg metadata (run with onnxruntime);
- with ``allow_untrained=True`` (``effseg bench`` / ``effseg export`` only): a config YAML or a
  shipped config name such as ``cityscapes/pspnet_r18`` (its ``model`` section), or a model name
  such as ``pspnet_resnet18`` (``_os16`` suffix for output stride 16), all with random weights.

It returns an :class:`Artifact` whose ``meta`` always holds ``num_classes``, ``classes``,
``palette``, ``mean``, ``std`` (0..1 units), ``input_size`` (``(H, W)`` pixels the network sees
by default, or ``None`` for the image's own size), ``config`` (resolved training config dict or
``None``) and ``model_config``; a checkpoint's also ``path`` (the file read) and ``picked_on_val``
(it is a run's ``best.pt``, the weights the trainer kept for their val mIoU).  ``effseg.load``
(the API), ``effseg eval``, ``effseg bench``, ``effseg export``, ``effseg predict`` and ``effseg
serve`` all go through here, so a run folder means the same weights everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effseg.config import IMAGENET_MEAN, IMAGENET_STD
from effseg.data.from_config import stored_val_split, trained_on_note
from effseg.engine.rundir import RUN_FOLDER_FILES, run_folder_weights
from effseg.errors import CheckpointError, ModelError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
CONFIG_SUFFIXES = (".yaml", ".yml")
#: The file the trainer keeps for its best val mIoU (``engine.train``): a val figure of it is optimistic.
VAL_PICKED = "best.pt"


def picked_on_val(path: str | Path | None) -> bool:
    """Whether ``path`` is a run's val-picked checkpoint (``best.pt``)."""
    return path is not None and Path(path).name == VAL_PICKED


def val_pick_note(path: str | Path | None, config: dict[str, Any] | None, split: str | None) -> str:
    """The label of a figure on ``split`` from the weights ``path``: empty, unless ``path`` is a
    run's ``best.pt`` and ``split`` the val split it was picked on (``config``, the checkpoint's
    training config: ``data.val_split``; ``val`` when it carries none)."""
    if not picked_on_val(path):
        return ""
    val_split = stored_val_split(config)
    if split != val_split:
        return ""
    return (
        f"best.pt was picked on its {val_split!r} mIoU during training, so this figure on "
        f"{val_split!r} is optimistic; last.pt holds the final weights"
    )


def figure_note(path: str | Path | None, config: dict[str, Any] | None, split: str | None) -> str:
    """Every label a figure on ``split`` from the weights ``path`` needs (empty when none):
    :func:`trained_on_note`, then :func:`val_pick_note`, joined by ``; ``."""
    notes = (trained_on_note(config, split), val_pick_note(path, config, split))
    return "; ".join(n for n in notes if n)


@dataclass
class Artifact:
    """A loaded model and what is known about it.

    ``kind``: ``shipped``, ``checkpoint``, ``onnx``, ``config`` (random weights) or ``name``
    (random weights).  ``model`` is in eval mode: an ``nn.Module`` mapping ``(B, 3, H, W)``
    normalised images to ``(B, C, H, W)`` logits (an :class:`~effseg.deploy.runtime.OnnxSegmentor`
    for ONNX files).  ``path`` is the file read (a run folder's ``last.pt`` or ``best.pt``; ``None``
    for a model name).
    """

    name: str
    kind: str
    model: nn.Module
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def is_onnx(self) -> bool:
        return self.kind == "onnx"


def _fill_meta(meta: dict[str, Any], model: nn.Module | None) -> dict[str, Any]:
    """Normalise checkpoint / ONNX / zoo metadata to the keys every caller reads."""
    out = dict(meta)
    num_classes = (
        out.get("num_classes") or getattr(model, "num_classes", None) or len(out.get("classes") or [])
    )
    out["num_classes"] = int(num_classes) if num_classes else None
    if not out.get("classes") and out["num_classes"]:
        out["classes"] = [f"class_{i}" for i in range(out["num_classes"])]
    if out.get("mean") is None or out.get("std") is None:
        out["mean"], out["std"] = list(IMAGENET_MEAN), list(IMAGENET_STD)
    out.setdefault("palette", None)
    out.setdefault("config", None)
    out.setdefault("model_config", getattr(model, "config", None))
    size = out.get("input_size")
    out["input_size"] = tuple(int(v) for v in size) if size else None
    return out


def _load_checkpoint(path: Path, device: str | torch.device, kind: str = "checkpoint") -> Artifact:
    from effseg.engine.checkpoint import load_model

    name = path.name if path.is_dir() else f"{path.parent.name}/{path.stem}"
    file = run_folder_weights(path) if path.is_dir() else path
    model, meta = load_model(file, device=device)
    meta = dict(meta)
    meta.pop("input_size", None)  # a checkpoint runs at the image's own size unless told otherwise
    meta.update(path=str(file), picked_on_val=picked_on_val(file))
    return Artifact(name, kind, model.eval(), _fill_meta(meta, model), file)


def _load_onnx(path: Path, require_metadata: bool) -> Artifact:
    try:
        from effseg.deploy import runtime
        from effseg.deploy.export import check_onnx_finite
    except ImportError as err:  # onnx / onnxruntime: dependencies of effseg, missing here
        raise ModelError(
            f"{path}: running ONNX files needs onnx and onnxruntime: pip install onnx onnxruntime ({err})"
        ) from None
    model, meta = runtime.load_onnx_model(path, require_metadata=require_metadata)
    check_onnx_finite(path)  # a NaN weight would answer class 0 everywhere without a word
    meta = dict(meta)
    fixed = meta.get("fixed_input_size")  # [W, H] of a static-size graph, None when dynamic
    meta["input_size"] = (int(fixed[1]), int(fixed[0])) if fixed else None
    return Artifact(path.stem, "onnx", model, _fill_meta(meta, None), path)


def _load_shipped(name: str, device: str | torch.device) -> Artifact:
    from effseg.zoo import find_pretrained

    entry = find_pretrained(name)
    art = _load_checkpoint(entry.path, device, kind="shipped")
    art.name = entry.name
    art.meta["input_size"] = entry.size_hw
    art.meta["zoo"] = {k: v for k, v in vars(entry).items() if k != "folder"}
    return art


def _split_name(spec: str) -> dict[str, Any]:
    """``pspnet_resnet18`` / ``aspp_mobilenetv3_large_os16`` / ``pidnet_s`` -> build_model kwargs,
    or ModelError."""
    from effseg.models import list_backbones, list_heads
    from effseg.models.realtime import REALTIME_MODELS

    if spec in REALTIME_MODELS:  # a whole network: its name is the model
        return {"name": spec}
    kwargs: dict[str, Any] = {}
    m = re.fullmatch(r"(.+)_os(\d+)", spec)
    if m:
        spec, kwargs["output_stride"] = m.group(1), int(m.group(2))
    head, _, backbone = spec.partition("_")
    if head not in list_heads() or backbone not in list_backbones():
        raise ModelError(
            f"model {spec!r}: expected one of {', '.join(REALTIME_MODELS)}, HEAD_BACKBONE[_osN] with head "
            f"in {', '.join(list_heads())} and backbone in {', '.join(list_backbones())}, or a config "
            f".yaml, checkpoint, run folder, .onnx file or shipped model name"
        )
    kwargs.update(head=head, backbone=backbone)
    return kwargs


def _build_untrained(spec: str, path: Path, num_classes: int, device: str | torch.device) -> Artifact:
    from effseg.models import build_model

    if path.suffix.lower() in CONFIG_SUFFIXES:
        from effseg.config import load_config

        if not path.is_file():
            raise ModelError(f"config {path}: no such file")
        kwargs = load_config(path).model.build_kwargs()
        model = build_model(**kwargs).eval().to(device)
        return Artifact(path.stem, "config", model, _fill_meta({"source": str(path)}, model), path)
    model = build_model(num_classes=num_classes, **_split_name(spec)).eval().to(device)
    return Artifact(spec, "name", model, _fill_meta({"source": "random weights"}, model), None)


def describe_accepted(allow_untrained: bool) -> str:
    """What a model argument may be, for error messages."""
    base = "a run folder, .pt checkpoint, .onnx file or shipped model name"
    extra = ", config .yaml, shipped config name or a name like pspnet_resnet18"
    return base + (extra if allow_untrained else "")


def load_artifact(
    spec: str | Path,
    device: str | torch.device = "cpu",
    *,
    allow_untrained: bool = False,
    num_classes: int = 19,
    require_metadata: bool = True,
) -> Artifact:
    """Load ``spec`` (see the module docstring) on ``device`` (ONNX files always run on the CPU).

    ``allow_untrained``: also accept config YAMLs and model names (random weights,
    ``num_classes`` classes).  ``require_metadata``: refuse an ONNX file without effseg metadata
    (``effseg bench`` relaxes it to time foreign graphs).  Every failure is one line.
    """
    text = str(spec)
    path = Path(spec)
    suffix = path.suffix.lower()
    if path.exists():
        if suffix == ".onnx":
            return _load_onnx(path, require_metadata)
        if path.is_dir() or suffix in CHECKPOINT_SUFFIXES:
            return _load_checkpoint(path, device)
        if allow_untrained and suffix in CONFIG_SUFFIXES:
            return _build_untrained(text, path, num_classes, device)
        raise CheckpointError(
            f"{path}: unknown model file type {path.suffix!r}; expected {describe_accepted(allow_untrained)}"
        )
    from effseg.zoo import known_names, list_pretrained, looks_like_zoo_name

    if any(m.name == text for m in list_pretrained()):
        return _load_shipped(text, device)
    if looks_like_zoo_name(text):
        raise ModelError(
            f"unknown shipped model {text!r} (and no file or folder of that name); known: {known_names()}"
        )
    if allow_untrained and (suffix in CONFIG_SUFFIXES or ("/" in text and not suffix)):  # config name
        from effseg.zoo.configs import find_config

        return _build_untrained(text, find_config(text), num_classes, device)
    if allow_untrained and not suffix and "\\" not in text:
        return _build_untrained(text, path, num_classes, device)
    raise CheckpointError(
        f"{path}: no such file or directory (expected {describe_accepted(allow_untrained)}; "
        f"shipped: {known_names()})"
    )


__all__ = [
    "Artifact",
    "RUN_FOLDER_FILES",
    "describe_accepted",
    "figure_note",
    "load_artifact",
    "picked_on_val",
    "run_folder_weights",
    "trained_on_note",
    "val_pick_note",
]
