"""Start a training from trained weights: ``model.init`` (``effseg train ... --init SPEC``).

``SPEC`` is any effseg artifact whose architecture matches the model: a shipped name
(``camvid-ddrnet23_slim``), a run folder (its final ``last.pt``, else ``best.pt``) or a ``.pt``
checkpoint; or an official checkpoint of the same real-time network (PIDNet, DDRNet, BiSeNetV2,
RegSeg: :mod:`effseg.models.official`), trained or ImageNet-pretrained (for whole networks
``model.pretrained_backbone`` takes the ImageNet files too).

Every tensor whose name and shape match is loaded. A classifier layer whose number of classes
differs (its output dimension is the number of classes, every other dimension equal) keeps the
new model's initialisation; so does an auxiliary head the source lacks, and an ImageNet file's
missing head. Anything else that does not fit (another architecture, another width) is a
one-line :class:`InitError` naming both sides. The options a source fixes (the operation order of
a model trained before effseg's official order, :data:`effseg.models.realtime.LEGACY_OPTIONS`;
the official options of an official file) are taken into ``model.options`` unless the config sets
them (then they must agree). The :class:`InitReport` (what was loaded, what was re-initialised and
why, which file tensors were not used and why) is printed, logged to ``log.jsonl`` and kept on the
model as ``model.init_report``; :mod:`effseg.engine.optim` reads it for ``train.loaded_lr_mult``.

``train.freeze`` (``backbone``, ``head`` or the model's own module names) stops the gradient of
those parameters and keeps their BatchNorm layers in eval mode (running statistics).

Python: ``report = init_model(model, "camvid-ddrnet23_slim")``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from effseg.config import Config
from effseg.engine.checkpoint import RUN_FOLDER_FILES, run_folder_weights
from effseg.errors import CheckpointError, ConfigError
from effseg.models.pretrained import Misfit

__all__ = [
    "InitError",
    "InitReport",
    "InitSource",
    "apply_freeze",
    "check_resume_options",
    "finish_model",
    "init_model",
    "init_record",
    "open_init_source",
    "prepare_model",
]


class InitError(CheckpointError, ConfigError):
    """``model.init`` / ``model.pretrained_backbone`` names weights that do not fit the model."""


@dataclass
class InitSource:
    """Weights to start from, under effseg's names.

    ``kind``: ``effseg`` (an effseg checkpoint), ``official`` (an official trained checkpoint) or
    ``official-backbone`` (an official ImageNet / backbone file: no classifier). ``model_name``:
    the effseg model the weights are for; ``options``: the architecture options they fix.
    """

    spec: str
    path: Path
    kind: str
    model_name: str
    state: dict[str, Tensor]
    options: dict[str, Any] = field(default_factory=dict)
    classes: list[str] | None = None
    origin: dict[str, str] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)
    model_config: dict[str, Any] | None = None
    adopted: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        where = str(self.path) if self.spec == str(self.path) else f"{self.spec} ({self.path})"
        kind = "an effseg" if self.kind == "effseg" else f"an {self.kind}"
        return f"{where}, {kind} {self.model_name} checkpoint"


@dataclass
class InitReport:
    """What :func:`init_model` did: ``loaded`` tensor names, ``reinitialised`` name -> why,
    ``unused`` (the file's) name -> why, ``adopted`` options taken from the source."""

    spec: str
    file: str
    kind: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: dict[str, str] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)
    adopted: dict[str, Any] = field(default_factory=dict)
    applied: bool = False
    model_names: list[str] = field(default_factory=list)
    file_names: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """A JSON-able summary for ``log.jsonl``: counts and the modules, grouped by reason."""
        return {
            "init": self.spec,
            "file": self.file,
            "kind": self.kind,
            "loaded_tensors": len(self.loaded),
            "reinitialised": _by_module(self.reinitialised, self.model_names),
            "unused": _by_module(self.unused, self.file_names),
            "adopted_options": dict(self.adopted),
        }

    def lines(self) -> list[str]:
        """The console summary, one line per fact."""
        out = [f"init: loaded {len(self.loaded)} tensors from {self.spec} ({self.file}, {self.kind})"]
        if self.adopted:
            opts = ", ".join(f"{k}={v!r}" for k, v in self.adopted.items())
            out.append(f"init: options taken from the source: {opts}")
        for module, why in _by_module(self.reinitialised, self.model_names).items():
            out.append(f"init: re-initialised {module}: {why}")
        for module, why in _by_module(self.unused, self.file_names).items():
            out.append(f"init: not used from the file: {module}: {why}")
        return out


def _by_module(names: Mapping[str, str], universe: Iterable[str] = ()) -> dict[str, str]:
    """``{"final_layer.cls.weight": why, "final_layer.cls.bias": why}`` -> ``{"final_layer.cls": why}``.

    Tensors are grouped by module; a top-level module whose every tensor (in ``universe``, the
    names of that side: the model's or the file's) is listed with one reason is named once."""
    universe = list(universe) or list(names)
    out: dict[str, str] = {}
    for name, why in names.items():
        top = name.split(".", 1)[0]
        under = [n for n in universe if n == top or n.startswith(top + ".")]
        whole = len(under) > 2 and all(names.get(n) == why for n in under)
        out.setdefault(top if whole else (name.rsplit(".", 1)[0] if "." in name else name), why)
    return out


# ----------------------------------------------------------------------------- the source


def _resolve_path(spec: str, what: str) -> tuple[Path, bool]:
    """``(file, shipped)`` for a shipped name, a run folder or a file."""
    path = Path(spec).expanduser()
    if path.is_dir():
        try:
            return run_folder_weights(path), False  # the one rule: last.pt, else best.pt
        except CheckpointError:
            raise InitError(
                f"{what}={spec}: run folder has neither {' nor '.join(RUN_FOLDER_FILES)}"
            ) from None
    if path.is_file():
        return path, False
    from effseg.zoo import find_pretrained, known_names, list_pretrained

    if any(m.name == spec for m in list_pretrained()):
        return find_pretrained(spec).path, True
    raise InitError(
        f"{what}={spec}: no such file or run folder and no shipped model of that name "
        f"(expected a shipped name ({known_names()}), a run folder, a .pt checkpoint or an official "
        "checkpoint file)"
    )


def open_init_source(spec: str, model_name: str, what: str = "model.init") -> InitSource:
    """Read ``spec`` for the effseg model ``model_name``; an effseg checkpoint of another model or
    a file that is neither an effseg nor an official checkpoint is a one-line :class:`InitError`."""
    from effseg.engine.checkpoint import load_checkpoint
    from effseg.models.realtime import with_legacy_defaults

    path, _ = _resolve_path(spec, what)
    obj = load_checkpoint(path)
    if isinstance(obj.get("model"), Mapping) and isinstance(obj.get("model_config"), Mapping):
        config = with_legacy_defaults(obj["model_config"])
        name = str(config.get("name") or config.get("head"))
        if name != model_name:
            raise InitError(
                f"{what}={spec}: architecture mismatch: the checkpoint is a {_arch(config)}, the model "
                f"is a {model_name}; start from weights of the same model or change model.name"
            )
        from effseg.models.realtime import LEGACY_OPTIONS

        options = {k: config[k] for k in LEGACY_OPTIONS.get(name, {}) if k in config}
        state = {_strip(k): v for k, v in obj["model"].items() if isinstance(v, Tensor)}
        classes = list(obj["classes"]) if isinstance(obj.get("classes"), list) else None
        return InitSource(spec, path, "effseg", name, state, options, classes, model_config=config)
    from effseg.models.official import (
        OFFICIAL_SOURCES,
        convert_official,
        is_official_layout,
        official_options,
    )
    from effseg.models.pretrained import read_state_dict

    state = read_state_dict(path)
    if model_name not in OFFICIAL_SOURCES or not is_official_layout(model_name, state):
        known = ", ".join(f"{m} ({s.split()[0]})" for m, s in OFFICIAL_SOURCES.items())
        raise InitError(
            f"{what}={spec}: not an effseg checkpoint (no 'model_config') and not an official {model_name} "
            f"checkpoint; official checkpoints are read for {known}"
        )
    converted = convert_official(model_name, state)
    head = {"ddrnet23_slim": "final_layer.cls.weight", "pidnet_s": "final_layer.cls.weight"}
    head.update({"bisenetv2": "head.cls.weight", "regseg": "decoder.classifier.weight"})
    kind = "official" if head[model_name] in converted.state else "official-backbone"
    options = official_options(model_name, converted)
    return InitSource(
        spec, path, kind, model_name, converted.state, options, None, converted.origin, converted.unused
    )


def _strip(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def _arch(config: Mapping[str, Any]) -> str:
    name = config.get("name") or config.get("head")
    backbone = config.get("backbone")
    return f"{name} ({backbone})" if backbone else str(name)


# ----------------------------------------------------------------------------- the plan


def adopt_options(source: InitSource, cfg: Config) -> dict[str, Any]:
    """Write the options ``source`` fixes into ``cfg.model.options`` where the config leaves them
    unset (returns those); an explicit, different value is an :class:`InitError`."""
    m = cfg.model
    given = {**m.head_options, **m.options}
    adopted = {}
    for key, value in source.options.items():
        if key in given and given[key] is not None and given[key] != value:
            raise InitError(
                f"model.options.{key}={given[key]!r} but the weights of {source.spec} need {key}={value!r} "
                f"(the function they were trained for); remove the option or set it to {value!r}"
            )
        if given.get(key) is None:
            adopted[key] = value
    m.options.update(adopted)
    return adopted


def _aux_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = getattr(model, "_aux_modules", lambda: ())()
    names = tuple(names) or (
        "aux_head",
        "aux_classifier",
        "p_head",
        "boundary_head",
        "aux2",
        "aux3",
        "aux4",
        "aux5",
    )
    return tuple(f"{n}." for n in names)


def _is_classifier(name: str, src: Tensor, own: Tensor, num_classes: int | None) -> bool:
    """A classifier tensor for another number of classes: output dim = classes, the rest equal."""
    return (
        num_classes is not None
        and own.dim() >= 1
        and src.dim() == own.dim()
        and own.shape[0] == num_classes
        and src.shape[0] != own.shape[0]
        and tuple(src.shape[1:]) == tuple(own.shape[1:])
        and re.search(r"(weight|bias)$", name) is not None
    )


def plan_init(model: nn.Module, source: InitSource) -> InitReport:
    """Which tensors of ``model`` ``source`` provides (same name and shape), which keep the model's
    initialisation and why; an unexplained mismatch is an :class:`InitError`."""
    own = model.state_dict()
    report = InitReport(source.spec, str(source.path), source.kind, unused=dict(source.unused))
    report.model_names = list(own)
    report.file_names = [source.origin.get(k, k) for k in source.state] + list(source.unused)
    aux = _aux_prefixes(model)
    classes = getattr(model, "num_classes", None)
    misfit = Misfit()  # what no rule explains
    for name, tensor in own.items():
        src = source.state.get(name)
        if src is None:
            if name.startswith(aux):
                report.reinitialised[name] = "training-only head the source does not have"
            elif source.kind == "official-backbone":
                report.reinitialised[name] = "not in the ImageNet/backbone file"
            else:
                misfit.missing.append(name)
        elif tuple(src.shape) != tuple(tensor.shape):
            if _is_classifier(name, src, tensor, classes):
                report.reinitialised[name] = (
                    f"classifier for {src.shape[0]} classes in the source, {classes} here"
                )
            else:
                misfit.mismatched.append(Misfit.shape_pair(name, src, tensor))
        else:
            report.loaded.append(name)
    extra = [k for k in source.state if k not in own]
    for name in extra:
        if name.startswith(aux) or re.match(r"^(aux_head|p_head|boundary_head|aux[2-5])\.", name):
            report.unused[source.origin.get(name, name)] = (
                "training-only head this model does not build (aux=false)"
            )
        elif source.kind == "official-backbone":  # an ImageNet model's own layers (its classifier)
            report.unused[source.origin.get(name, name)] = (
                "not part of the segmentation network (ImageNet model)"
            )
    misfit.unexpected = [n for n in (source.origin.get(k, k) for k in extra) if n not in report.unused]
    if misfit:
        model_cfg = getattr(model, "config", {}) or {}
        theirs = (
            _describe(source.model_config) if source.model_config else source.kind + " " + source.model_name
        )
        raise InitError(
            f"model.init={source.spec}: architecture mismatch: the source is {theirs}, the model is "
            f"{_describe(model_cfg)}: {misfit.text('source')}"
        )
    return report


def _describe(config: Mapping[str, Any]) -> str:
    skip = {"name", "head", "num_classes", "aux", "pretrained_backbone"}
    opts = ", ".join(f"{k}={v!r}" for k, v in config.items() if k not in skip and not isinstance(v, list))
    return f"{_arch(config)}({opts})"


def apply_init(model: nn.Module, source: InitSource, report: InitReport) -> None:
    """Copy the planned tensors into ``model`` (dtype cast to the model's: float16 files load)."""
    state = {k: source.state[k] for k in report.loaded}
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
    report.applied = True


def init_model(model: nn.Module, spec: str, what: str = "model.init") -> InitReport:
    """Load ``spec`` into ``model`` (see the module docstring); returns the report. The model's
    architecture options must already match the source (build it with them)."""
    name = str(getattr(model, "config", {}).get("name") or getattr(model, "config", {}).get("head"))
    source = open_init_source(spec, name, what)
    report = plan_init(model, source)
    apply_init(model, source, report)
    model.init_report = report  # type: ignore[assignment]
    return report


# ----------------------------------------------------------------------------- the trainer's step


def _frozen_bn_pre_hook(module: nn.Module, args: Any) -> None:
    module.eval()  # running statistics, even while the model trains


def apply_freeze(model: nn.Module, names: Iterable[str]) -> list[str]:
    """``train.freeze``: no gradient for the parameters of ``names`` (``backbone`` / ``head`` as
    ``model.parameter_groups()`` splits them, or module names such as ``layer1`` or ``spp``); their
    BatchNorm layers run in eval mode. Returns the frozen parameter names."""
    names = list(names)
    if not names:
        return []
    groups = model.parameter_groups() if hasattr(model, "parameter_groups") else {}
    by_id = {id(p): n for n, p in model.named_parameters()}
    modules = dict(model.named_modules())
    frozen: set[str] = set()
    for item in names:
        if item in groups:
            frozen.update(by_id[id(p)] for p in groups[item])
        elif item and item in modules:
            frozen.update(n for n in by_id.values() if n == item or n.startswith(item + "."))
        else:
            top = [n for n, _ in model.named_children()]
            raise ConfigError(
                f"train.freeze: unknown part {item!r}; expected {', '.join(groups) or 'backbone, head'} or a "
                f"module name of the model ({', '.join(top)}, or a dotted name inside them)"
            )
    params = dict(model.named_parameters())
    if len(frozen) == len(params):
        raise ConfigError(f"train.freeze={names} freezes every parameter: nothing left to train")
    for name in frozen:
        params[name].requires_grad_(False)
    for module in modules.values():
        own = list(module.parameters(recurse=False))
        if (
            isinstance(module, nn.modules.batchnorm._BatchNorm)
            and own
            and not any(p.requires_grad for p in own)
        ):
            module.register_forward_pre_hook(_frozen_bn_pre_hook)
    return sorted(frozen)


def init_record(model: nn.Module) -> dict[str, Any] | None:
    """The ``log.jsonl`` record of what ``model.init`` loaded into ``model`` (``None`` without one,
    and when resuming: nothing was loaded then)."""
    report = getattr(model, "init_report", None)
    return {"iteration": 0, **report.record()} if report is not None and report.applied else None


def loaded_parameter_ids(model: nn.Module) -> set[int]:
    """The ids of ``model``'s parameters that ``model.init`` loaded (empty without it)."""
    report = getattr(model, "init_report", None)
    if report is None:
        return set()
    loaded = set(report.loaded)
    return {id(p) for n, p in model.named_parameters() if n in loaded}


def prepare_model(cfg: Config, resume: bool) -> tuple[InitSource | None, str | None]:
    """Before the model is built: ``(source, pretrained_backbone for the builder)``.

    Opens ``model.init`` (or, for a whole network, an official ImageNet file in
    ``model.pretrained_backbone``) and takes the options it fixes into ``cfg.model.options``, so
    that ``config.yaml`` records them; ``source`` is ``None`` when there is nothing to load. A
    resumed run reopens it for those options and ``train.loaded_lr_mult``'s groups (a source that is
    gone is then skipped unless ``loaded_lr_mult`` needs it) and loads no weights from it."""
    from effseg.models.registry import MODELS

    m, t = cfg.model, cfg.train
    network = m.model_name in MODELS and MODELS[m.model_name].family == "network"
    backbone = None if resume or network else m.pretrained_backbone
    spec, what = m.init, "model.init"
    if network and m.pretrained_backbone:
        if m.init:
            raise ConfigError(
                f"model.init={m.init} and model.pretrained_backbone={m.pretrained_backbone}: set one "
                "(the init weights hold the backbone too)"
            )
        spec, what = m.pretrained_backbone, "model.pretrained_backbone"
    if not spec:
        return None, backbone
    try:
        source = open_init_source(spec, m.model_name, what)
    except InitError:
        if resume and t.loaded_lr_mult == 1.0:  # the checkpoint holds every weight
            return None, backbone
        raise
    if what == "model.pretrained_backbone" and source.kind != "official-backbone":
        raise InitError(
            f"model.pretrained_backbone={spec}: expected an official ImageNet/backbone file of "
            f"{m.model_name}, got {source.label}; use model.init for trained weights"
        )
    source.adopted = adopt_options(source, cfg)
    return source, backbone


def finish_model(model: nn.Module, source: InitSource | None, cfg: Config, resume: bool, main: bool) -> None:
    """After the model is built: load ``source`` (not when resuming: the checkpoint has every
    weight), record ``model.init_report``, print it on the main process, apply ``train.freeze``."""
    if source is not None:
        report = plan_init(model, source)
        report.adopted = dict(source.adopted)
        if not resume:
            apply_init(model, source, report)
            if main:
                for line in report.lines():
                    print(f"effseg: {line}")
        model.init_report = report  # type: ignore[assignment]
    frozen = apply_freeze(model, cfg.train.freeze)
    if frozen and main and not resume:
        print(f"effseg: train.freeze: {len(frozen)} parameter tensors frozen ({', '.join(cfg.train.freeze)})")


def check_resume_options(stored: Mapping[str, Any] | None, built: Mapping[str, Any], path: Path) -> None:
    """Resuming: the options that change a network's function without changing its tensors
    (:data:`effseg.models.realtime.LEGACY_OPTIONS`, e.g. ``pool_order``) must be those the
    checkpoint was trained with; a run started before they existed stored none (so: the legacy
    values). A difference is a one-line :class:`CheckpointError` with the ``--set`` that fixes it."""
    from effseg.models.realtime import LEGACY_OPTIONS, with_legacy_defaults

    if not stored:
        return
    stored = with_legacy_defaults(stored)
    keys = LEGACY_OPTIONS.get(str(built.get("name")), {})
    diff = {k: stored[k] for k in keys if k in stored and built.get(k) != stored[k]}
    if diff:
        fix = " ".join(f"model.options.{k}={v}" for k, v in diff.items())
        raise CheckpointError(
            f"{path}: trained with {', '.join(f'{k}={v!r}' for k, v in diff.items())} but the config builds "
            f"{', '.join(f'{k}={built.get(k)!r}' for k in diff)}; resume with --set {fix}"
        )
