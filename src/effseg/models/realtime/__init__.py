"""The real-time segmentation networks: BiSeNetV2, DDRNet-23-slim, PIDNet-S and RegSeg."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from effseg.models.realtime import bisenetv2, ddrnet, pidnet
from effseg.models.realtime.bisenetv2 import build_bisenetv2
from effseg.models.realtime.ddrnet import build_ddrnet23_slim
from effseg.models.realtime.pidnet import build_pidnet_s
from effseg.models.realtime.regseg import build_regseg

__all__ = ["LEGACY_OPTIONS", "REALTIME_MODELS", "with_legacy_defaults"]

#: registry name -> builder ``(num_classes: int = 19, aux: bool = True, **paper options) -> nn.Module``
REALTIME_MODELS: dict[str, Callable[..., nn.Module]] = {
    "bisenetv2": build_bisenetv2,
    "ddrnet23_slim": build_ddrnet23_slim,
    "pidnet_s": build_pidnet_s,
    "regseg": build_regseg,
}

#: name -> {option: value}: what a model config stored before the option existed means. Those
#: models were trained with effseg's first operation order (BatchNorm before the pools, bilinear
#: BiSeNetV2 aggregation, PIDNet's final resize with ``align_corners=False``); new builds take the
#: official order (the builders' defaults). RegSeg computes the official function in both.
LEGACY_OPTIONS: dict[str, dict[str, Any]] = {
    "bisenetv2": dict(bisenetv2.LEGACY_OPTIONS),
    "ddrnet23_slim": dict(ddrnet.LEGACY_OPTIONS),
    "pidnet_s": dict(pidnet.LEGACY_OPTIONS),
}


def with_legacy_defaults(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored model config (a checkpoint's ``model_config``: ``build_model`` kwargs) with the
    legacy value of every option it lacks (:data:`LEGACY_OPTIONS`), so that the model rebuilds
    with the function its weights were trained for; other models' configs come back unchanged."""
    out = dict(model_config)
    for key, value in LEGACY_OPTIONS.get(str(out.get("name")), {}).items():
        out.setdefault(key, value)
    return out
