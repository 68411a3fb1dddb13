"""The one registry of buildable models: ``build_model(name, **options)`` and ``list_models()``.

A name is either a **head** of the Segmentor family (``fcn``, ``pspnet``, ``aspp``, ``ocr``,
``lraspp``: backbone + head, built by :func:`effseg.models.segmentor.build_segmentor`) or a
**whole network** (``bisenetv2``, ``ddrnet23_slim``, ``pidnet_s``, ``regseg``: the builders of
:data:`effseg.models.realtime.REALTIME_MODELS`). The builders' signatures are the single source
of every option and default: :func:`model_options` reads them, :func:`build_model` checks the
given options against them and :func:`describe_model` prints them. An option given as ``None``
means "the builder's default" (a config key left unset never overrides a signature).

Every model follows :mod:`effseg.models.contract` and has ``config`` (``build_model(**config)``
rebuilds it: the Segmentor family stores its name under ``"head"``, whole networks under
``"name"``) and ``loss_terms``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from effseg.errors import ConfigError, ModelError
from effseg.models.backbones import BACKBONES
from effseg.models.realtime import REALTIME_MODELS
from effseg.models.segmentor import HEAD_BUILDERS, build_segmentor, head_options

__all__ = [
    "MODELS",
    "ModelOptionError",
    "ModelSpec",
    "build_model",
    "describe_model",
    "list_models",
    "list_segmentor_pairs",
    "model_options",
]

#: Options of the Segmentor family that a whole network does not take (it has no backbone).
SEGMENTOR_ONLY = ("backbone", "output_stride", "pretrained_backbone", "width_mult", "reduced_tail")


class ModelOptionError(ModelError, ConfigError):
    """An option the chosen model's builder does not accept (a model and a config error)."""


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: ``family`` ``"segmentor"`` (``name`` is a head) or ``"network"``."""

    name: str
    family: Literal["segmentor", "network"]
    builder: Callable[..., nn.Module]

    def parameters(self) -> dict[str, inspect.Parameter]:
        """Every option -> its parameter (default included), in signature order."""
        params = inspect.signature(self.builder).parameters.values()
        named = {p.name: p for p in params if p.kind not in (inspect.Parameter.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if self.family == "segmentor":
            named.update(head_options(self.name))
        return named


def _registry() -> dict[str, ModelSpec]:
    specs = {h: ModelSpec(h, "segmentor", functools.partial(build_segmentor, h)) for h in HEAD_BUILDERS}
    specs.update({n: ModelSpec(n, "network", b) for n, b in REALTIME_MODELS.items()})
    return specs


#: registry name -> entry: the heads of the Segmentor family, then the whole networks.
MODELS: dict[str, ModelSpec] = _registry()


def list_models() -> list[str]:
    """Every buildable model name: the Segmentor heads, then the whole networks."""
    return list(MODELS)


def list_segmentor_pairs() -> list[tuple[str, str]]:
    """Every valid ``(head, backbone)`` pair of the Segmentor family (every head fits every backbone)."""
    return [(h, b) for h, spec in MODELS.items() if spec.family == "segmentor" for b in BACKBONES]


def _spec(name: Any) -> ModelSpec:
    if not isinstance(name, str) or name not in MODELS:
        raise ModelError(f"unknown model {name!r}; expected one of: {', '.join(MODELS)}")
    return MODELS[name]


def model_options(name: str) -> dict[str, Any]:
    """``option -> default`` of model ``name``, from its builder's signature."""
    return {k: p.default for k, p in _spec(name).parameters().items()}


def describe_model(name: str) -> str:
    """One line of help: ``pidnet_s(num_classes=19, aux=True, planes=32, ...)``."""
    args = ", ".join(f"{k}={v!r}" for k, v in model_options(name).items())
    return f"{name}({args})"


def build_model(name: str | None = None, *args: Any, **options: Any) -> nn.Module:
    """Build a registered model, e.g. ``build_model("pspnet", backbone="resnet18", num_classes=19)``
    or ``build_model("pidnet_s", num_classes=11)``.

    ``name``: one of :func:`list_models` (``head=`` is accepted as its old spelling for the
    Segmentor family, so ``build_model(**model.config)`` rebuilds any model). Positional
    ``args`` follow the builder's signature (``build_model("pspnet", "resnet50")``). Options
    are checked against the builder's signature; a bad name or option raises a one-line
    :class:`ModelError` listing the valid ones.
    """
    head = options.pop("head", None)
    if name is None:
        name = head
    elif head is not None and head != name:
        raise ModelError(f"build_model: name={name!r} and head={head!r} disagree; pass one of them")
    if name is None:
        raise ModelError(f"build_model: no model name; expected one of: {', '.join(MODELS)}")
    spec = _spec(name)
    params = spec.parameters()
    # None means "the builder's default": drop it (e.g. an unset config key)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = [k for k in options if k not in params]
    if unknown:
        key = unknown[0]
        if spec.family == "network" and key in SEGMENTOR_ONLY:
            raise ModelOptionError(
                f"{name} is a whole network: it takes no {key} (model.{key}), which only the "
                f"Segmentor family ({', '.join(HEAD_BUILDERS)}) has; its options: {', '.join(params)}"
            )
        raise ModelOptionError(
            f"unknown option(s) {', '.join(unknown)} for model {name!r}; valid options: {', '.join(params)}"
        )
    try:
        inspect.signature(spec.builder).bind(*args, **options)
    except TypeError as err:
        raise ModelError(f"build_model({name!r}, ...): {err}; its options: {', '.join(params)}") from None
    return spec.builder(*args, **options)
