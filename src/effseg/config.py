"""Typed experiment configs: YAML files plus ``--set a.b=value`` overrides.

A config has five sections (``model``, ``data``, ``train``, ``eval``, ``distill``),
each a dataclass below. Files are parsed with a safe loader
(:func:`effseg.config_types.load_yaml`: plain data, numbers such as ``1e-3``) and never
executed: a config names a model and a dataset, it cannot import code. Every key
is checked against the dataclass fields and their types; an unknown key or a
wrong type raises :class:`effseg.errors.ConfigError` naming the key and
suggesting the nearest valid one.

Relative paths (``data.root``, ``model.pretrained_backbone``, ``distill.teacher``)
are relative to the working directory, not to the config file.

>>> cfg = load_config("configs/synthetic/pspnet_mbv2.yaml", ["train.lr=0.02"])
>>> cfg.train.lr
0.02
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from effseg.config_types import coerce, load_yaml, suggest
from effseg.device import DEVICE_FORMS, check_device, resolve_device
from effseg.errors import ConfigError, EffsegError, ModelError
from effseg.size import Size, format_size

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OUTPUT_STRIDES",
    "check_output_stride",
    "DEVICE_FORMS",
    "check_device",
    "resolve_device",
    "load_yaml",
    "Config",
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "EvalConfig",
    "DistillConfig",
    "load_config",
    "config_from_dict",
    "apply_overrides",
    "stored_config",
    "save_config",
]


# ----------------------------------------------------------------------------- sections


@dataclass
class ModelConfig:
    """Arguments of :func:`effseg.models.build_model` (the registry: ``effseg models`` lists it).

    ``name`` is the registry name: a head of the Segmentor family (``pspnet``, ``aspp``, ...)
    or a whole network (``pidnet_s``, ...); ``head`` is its old spelling, still read (both
    unset: ``pspnet``). A key left null takes the builder's default (its signature). Whole
    networks take no ``backbone``, ``output_stride``, ``width_mult`` or ``reduced_tail``: setting
    one is a one-line error naming the key; their ``pretrained_backbone`` is the official
    repository's ImageNet file, which the trainer loads like ``init`` (effseg.engine.init_weights).
    """

    name: str | None = None
    head: str | None = None  # the old spelling of ``name`` (configs written before it)
    backbone: str | None = None  # Segmentor family (null: resnet18)
    num_classes: int = 19
    output_stride: int | None = None  # Segmentor family: 8, 16 or 32, OUTPUT_STRIDES (null: 8)
    aux: bool = True
    width_mult: float | None = None  # MobileNet width multiplier (null: 1.0)
    reduced_tail: bool | None = None  # MobileNetV3 only: last stage halved (the paper's "RF2")
    # torchvision-format ImageNet state dict on disk (never downloaded); for a whole network, its
    # official repository's ImageNet file (docs/models.md "Official checkpoints").
    pretrained_backbone: str | None = None
    # Start from trained weights: a shipped name (camvid-ddrnet23_slim), a run folder, a .pt or an
    # official checkpoint of the same network; classifiers for another class count start afresh
    # (effseg.engine.init_weights, docs/training.md "Start from trained weights").
    init: str | None = None
    # The model's own options: a head's (e.g. ASPP ``rates``) or a whole network's (``planes``).
    options: dict[str, Any] = field(default_factory=dict)
    head_options: dict[str, Any] = field(default_factory=dict)  # the old spelling of ``options``

    def __post_init__(self) -> None:
        if self.name is not None and self.head is not None and self.name != self.head:
            raise ConfigError(
                f"model.name={self.name!r} and model.head={self.head!r} disagree (model.head is the old "
                "spelling of model.name): keep one"
            )
        both = sorted(set(self.options) & set(self.head_options))
        if both:
            raise ConfigError(
                f"model.options and model.head_options (its old spelling) both set "
                f"{', '.join(both)}: keep one"
            )

    @property
    def model_name(self) -> str:
        """The registry name: ``name``, else ``head``, else ``pspnet``."""
        return self.name or self.head or "pspnet"

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`effseg.models.build_model` for this section, without the
        pretrained weights: ``build_model(**cfg.model.build_kwargs())``. Only the keys that are
        set: the builder's signature supplies every other default."""
        kwargs = {
            "name": self.model_name,
            "backbone": self.backbone,
            "num_classes": self.num_classes,
            "output_stride": self.output_stride,
            "aux": self.aux,
            "width_mult": self.width_mult,
            "reduced_tail": self.reduced_tail,
            **self.head_options,
            **self.options,
        }
        return {k: v for k, v in kwargs.items() if v is not None}


#: ImageNet normalisation (RGB, fraction of 255): the one definition, used by the data config
#: defaults, the transforms and every exported model without its own statistics.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: The output strides of the Segmentor family's backbones (the last feature map at 1/8, 1/16 or
#: 1/32 of the input): the one definition, read by the config, the backbones and the CLI.
OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)


def check_output_stride(
    value: Any, what: str = "output_stride", error: type[EffsegError] = ModelError
) -> int:
    """``value`` as an ``int`` if it is one of :data:`OUTPUT_STRIDES`, else a one-line ``error``
    naming ``what``: ``output_stride=4 is not supported; expected 8, 16 or 32`` (``True`` is refused)."""
    if isinstance(value, bool) or value not in OUTPUT_STRIDES:
        expected = ", ".join(map(str, OUTPUT_STRIDES[:-1])) + f" or {OUTPUT_STRIDES[-1]}"
        raise error(f"{what}={value!r} is not supported; expected {expected}")
    return int(value)


@dataclass
class DataConfig:
    """Dataset and training-time augmentation."""

    dataset: str = "synthetic"
    root: str = "data/synthetic"
    train_split: str = "train"
    val_split: str = "val"
    # Drives (the file-name prefix before the first ``_``, e.g. CamVid's 0001TP) to keep in the
    # train / val split; empty = every frame. Leave-one-drive-out: train on two drives of
    # ``trainval``, validate on the third (docs/datasets.md, ``effseg crossdrive``).
    train_drives: list[str] = field(default_factory=list)
    val_drives: list[str] = field(default_factory=list)
    # Frames of each drive to keep (file-name order): N or "first:N" (the first N), "after:N" (the
    # rest); null = all. Fine-tune on a few labelled frames, score on the others (docs/training.md).
    train_frames: int | str | None = None
    val_frames: int | str | None = None
    # Extra keyword arguments for :func:`effseg.data.build_dataset` (dataset specific).
    options: dict[str, Any] = field(default_factory=dict)
    crop_size: Size = Size(h=512, w=1024)  # training crops; YAML: WIDTHxHEIGHT, e.g. 1024x512
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    hflip: bool = True
    jitter: bool = True
    # Probability of blurring a training crop (Gaussian or motion blur, 3-7 px kernels, one of the
    # two at random): camera shake and focus differ between drives (docs/camvid.md, levers).
    blur: float = 0.0
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    num_workers: int = 2


@dataclass
class TrainConfig:
    """Optimisation recipe. ``batch_size`` is the *global* batch (split over ranks)."""

    epochs: int = 50
    # When set, overrides ``epochs``: total optimiser steps (the exact, deterministic mode).
    iterations: int | None = None
    # Minutes of training (validation excluded): train by the clock instead of by steps.
    # Overrides ``epochs``; excludes ``iterations`` (set it to null). See docs/training.md.
    time_budget: float | None = None
    batch_size: int = 8
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_ratio: float = 0.1  # lr factor at iteration 0 of the linear warm-up
    # With ``time_budget``: linear warm-up over this share of the budget (0.05 = first 5 %).
    warmup_fraction: float = 0.0
    grad_clip: float | None = None  # max global L2 norm of the gradients
    loss: Literal["ce", "ohem"] = "ce"
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100_000  # per image
    class_weights: list[float] | None = None
    # Weight of the model's "aux" loss term; null: the weight the model declares (loss_terms,
    # 0.4 for every shipped model with an "aux" output), a number overrides it.
    aux_weight: float | None = None
    # Mixed precision. "auto": what is fast on the device the run trains on (effseg.engine.speed:
    # CPU bf16 only where it has bf16 arithmetic, AMX-BF16 or AVX512-BF16, else fp32; CUDA bf16,
    # or fp16 before bf16 hardware); "none" | "bf16" | "fp16" force one.
    amp: Literal["auto", "none", "bf16", "fp16"] = "none"
    channels_last: bool = False  # model and input batches in torch.channels_last (CPU and CUDA)
    # torch.compile (inductor) the training step: input normalisation, forward, loss and their
    # backward; false = eager. Compiled graphs are cached on disk (docs/training.md).
    compile: bool = False
    sync_bn: bool = False  # SyncBatchNorm under torchrun on CUDA; never the default
    freeze_bn: bool = False  # keep BatchNorm in eval mode (running statistics) while training
    # Override every BatchNorm's momentum while training (null: the model's own; torchvision's
    # MobileNetV3 uses 0.01, far too slow for short schedules, see docs/open_challenge.md).
    bn_momentum: float | None = None
    # Exponential moving average of the weights (e.g. 0.999), validated and saved as the
    # checkpoint's model; null: none. The decay warms up (effseg/engine/ema.py).
    ema_decay: float | None = None
    # Re-estimate BatchNorm statistics on the train images after the last step, before the
    # final validation and save (precise BN; outside the budget clock, logged like validation).
    precise_bn: bool = False
    # No weight decay on 1-D parameters (norm weights/biases, conv and SE biases).
    no_decay_norm_bias: bool = False
    # No weight decay on the squeeze-excitation layers (MobileNetV3's SE fc1/fc2 weights too).
    no_decay_se: bool = False
    # Parts of the model that do not train: "backbone", "head" (parameter_groups) or module names
    # (e.g. layer1, spp); their BatchNorm layers keep their running statistics.
    freeze: list[str] = field(default_factory=list)
    # Learning-rate factor for the parameters model.init loaded (e.g. 0.1), on top of head_lr_mult.
    loaded_lr_mult: float = 1.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    deterministic: bool = False
    log_interval: int = 10  # iterations
    val_interval: int = 0  # iterations; 0 = once per epoch
    checkpoint_interval: int = 0  # iterations; 0 = at each validation
    tensorboard: bool = True


@dataclass
class EvalConfig:
    """Inference used for validation during training and by ``effseg eval``."""

    mode: Literal["whole", "slide"] = "whole"
    # Resize the image to this size before inference (logits are upsampled back to the
    # label's full resolution). None = infer at the stored resolution. Sizes: WIDTHxHEIGHT.
    resize: Size | None = None
    crop_size: Size = Size(h=512, w=1024)  # slide window
    stride: Size = Size(h=341, w=683)  # slide stride (pixels between windows)
    scales: list[float] = field(default_factory=lambda: [1.0])  # TTA scales
    flip: bool = False  # TTA horizontal flip
    num_workers: int = 2


@dataclass
class DistillConfig:
    """Knowledge distillation from a trained teacher (unused while ``teacher`` is None)."""

    teacher: str | None = None  # run folder or checkpoint
    type: Literal["kd", "cwd"] = "kd"
    temperature: float = 1.0
    weight: float = 1.0


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-serialisable); sizes as ``WIDTHxHEIGHT`` text."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    """Sizes -> ``"WIDTHxHEIGHT"`` text, recursively through dicts and lists."""
    if isinstance(value, Size):
        return format_size(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------- checking

_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "distill": DistillConfig,
}


def _build_section(cls: type, name: str, values: Any, where: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}section '{name}': expected a mapping of keys, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            hint = suggest(f"{name}.{key}", [f"{name}.{h}" for h in hints])
            raise ConfigError(f"{where}unknown key '{name}.{key}'{hint}")
        kwargs[key] = coerce(value, hints[key], f"{name}.{key}", where)
    return cls(**kwargs)


def _check_values(cfg: Config, where: str) -> None:
    """Range checks that types alone cannot express."""

    def fail(key: str, expected: str, value: Any) -> None:
        raise ConfigError(f"{where}key '{key}': expected {expected}, got {value!r}")

    m, d, t, e, k = cfg.model, cfg.data, cfg.train, cfg.eval, cfg.distill
    if m.num_classes < 1:
        fail("model.num_classes", "a positive integer", m.num_classes)
    if m.output_stride is not None:
        check_output_stride(m.output_stride, f"{where}model.output_stride", ConfigError)
    if len(d.scale_range) != 2 or any(v <= 0 for v in d.scale_range) or d.scale_range[0] > d.scale_range[1]:
        fail("data.scale_range", "[min, max] with 0 < min <= max", d.scale_range)
    if not 0.0 <= d.blur <= 1.0:
        fail("data.blur", "a probability in [0, 1]", d.blur)
    if len(d.mean) != 3 or len(d.std) != 3 or any(s <= 0 for s in d.std):
        fail("data.mean/std", "three values each, std > 0", [d.mean, d.std])
    if d.num_workers < 0:
        fail("data.num_workers", "an integer >= 0", d.num_workers)
    if t.epochs < 1:
        fail("train.epochs", "a positive integer", t.epochs)
    if t.iterations is not None and t.iterations < 1:
        fail("train.iterations", "a positive integer or null", t.iterations)
    if t.time_budget is not None:
        if not (math.isfinite(t.time_budget) and t.time_budget > 0):
            fail("train.time_budget", "a positive number of minutes or null", t.time_budget)
        if t.iterations is not None:
            raise ConfigError(
                f"{where}train.time_budget={t.time_budget} and train.iterations={t.iterations} exclude "
                "each other: set train.iterations=null to train by the clock, or train.time_budget=null"
            )
        if t.warmup_iters:
            raise ConfigError(
                f"{where}train.warmup_iters={t.warmup_iters} counts steps, which a time budget does not "
                "fix: use train.warmup_fraction (share of the budget, e.g. 0.05) with train.time_budget"
            )
    elif t.warmup_fraction:
        wf = t.warmup_fraction
        fail("train.warmup_fraction", "0 without train.time_budget (use train.warmup_iters)", wf)
    if not (math.isfinite(t.warmup_fraction) and 0 <= t.warmup_fraction < 1):
        fail("train.warmup_fraction", "a number in [0, 1)", t.warmup_fraction)
    if t.batch_size < 1:
        fail("train.batch_size", "a positive integer", t.batch_size)
    for key in ("lr", "head_lr_mult", "loaded_lr_mult"):
        if getattr(t, key) <= 0:
            fail(f"train.{key}", "a positive number", getattr(t, key))
    for key in ("momentum", "weight_decay", "poly_power"):
        if getattr(t, key) < 0:
            fail(f"train.{key}", "a number >= 0", getattr(t, key))
    if t.aux_weight is not None and t.aux_weight < 0:
        fail("train.aux_weight", "a number >= 0 or null (the model's declared weight)", t.aux_weight)
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        fail("train.betas", "two numbers in [0, 1)", t.betas)
    if t.warmup_iters < 0:
        fail("train.warmup_iters", "an integer >= 0", t.warmup_iters)
    if not 0 < t.warmup_ratio <= 1:
        fail("train.warmup_ratio", "a number in (0, 1]", t.warmup_ratio)
    if t.grad_clip is not None and t.grad_clip <= 0:
        fail("train.grad_clip", "a positive number or null", t.grad_clip)
    if t.bn_momentum is not None and not 0 < t.bn_momentum <= 1:
        fail("train.bn_momentum", "a number in (0, 1] or null", t.bn_momentum)
    if t.ema_decay is not None and not 0 < t.ema_decay < 1:
        fail("train.ema_decay", "a number in (0, 1), e.g. 0.999, or null", t.ema_decay)
    if not 0 < t.ohem_thresh <= 1:
        fail("train.ohem_thresh", "a probability in (0, 1]", t.ohem_thresh)
    if t.class_weights is not None and len(t.class_weights) != m.num_classes:
        fail("train.class_weights", f"{m.num_classes} weights (model.num_classes)", t.class_weights)
    if t.class_weights is not None and not all(math.isfinite(w) and w > 0 for w in t.class_weights):
        fail("train.class_weights", "positive numbers, one per class", t.class_weights)
    for key in ("log_interval",):
        if getattr(t, key) < 1:
            fail(f"train.{key}", "a positive integer", getattr(t, key))
    for key in ("val_interval", "checkpoint_interval", "ohem_min_kept"):
        if getattr(t, key) < 0:
            fail(f"train.{key}", "an integer >= 0", getattr(t, key))
    if not check_device(t.device):
        fail("train.device", DEVICE_FORMS, t.device)
    if not e.scales or any(s <= 0 for s in e.scales):
        fail("eval.scales", "a non-empty list of positive scales", e.scales)
    if e.num_workers < 0:
        fail("eval.num_workers", "an integer >= 0", e.num_workers)
    if k.temperature <= 0:
        fail("distill.temperature", "a positive number", k.temperature)
    if k.weight < 0:
        fail("distill.weight", "a number >= 0", k.weight)


# ----------------------------------------------------------------------------- public API


def config_from_dict(data: dict[str, Any] | None, source: str | None = None) -> Config:
    """Build and validate a :class:`Config` from a nested dict (missing keys = defaults)."""
    where = f"{source}: " if source else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}expected a mapping with sections {', '.join(_SECTIONS)}")
    for name in data:
        if name not in _SECTIONS:
            raise ConfigError(f"{where}unknown section '{name}'{suggest(str(name), _SECTIONS)}")
    sections = {name: _build_section(cls, name, data.get(name), where) for name, cls in _SECTIONS.items()}
    cfg = Config(**sections)
    _check_values(cfg, where)
    return cfg


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict; values are parsed as YAML scalars/lists.

    Key names are checked later by :func:`config_from_dict`, so typos get a suggestion.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"override {item!r}: expected SECTION.KEY=VALUE, e.g. train.lr=0.02")
        try:
            value = load_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(
                f"override {item!r}: value is not valid YAML ({err.__class__.__name__})"
            ) from None
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: '{'.'.join(parts[: depth + 1])}' is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML config, apply ``--set`` overrides and validate everything."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or err.__class__.__name__
        raise ConfigError(f"{path}: invalid YAML{at}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    if data is None:  # an empty file must not start a default training in the working folder
        raise ConfigError(
            f"{path}: the config file is empty; expected a mapping with sections {', '.join(_SECTIONS)} "
            "(start from a shipped config, e.g. configs/synthetic/pspnet_r18.yaml)"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with sections {', '.join(_SECTIONS)}")
    data = apply_overrides(data, overrides)
    return config_from_dict(data, source=str(path))


def stored_config(data: dict[str, Any], overrides: typing.Sequence[str], source: str | Path) -> Config:
    """A checkpoint's stored training config (a plain dict, left untouched) with ``--set``
    overrides applied to a copy, checked like a config file; errors name ``source``."""
    edited = apply_overrides(copy.deepcopy(data), overrides)
    return config_from_dict(edited, source=f"{source} (stored config)")


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (``load_config`` reads it back identically)."""
    from effseg.fileio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False), "the config")
