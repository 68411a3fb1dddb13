"""The real-time segmentation networks: BiSeNetV2, DDRNet-23-slim, PIDNet-S and RegSeg."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from effseg.models.realtime.bisenetv2 import build_bisenetv2
from effseg.models.realtime.ddrnet import build_ddrnet23_slim
from effseg.models.realtime.pidnet import build_pidnet_s
from effseg.models.realtime.regseg import build_regseg

__all__ = ["REALTIME_MODELS"]

#: registry name -> builder ``(num_classes: int = 19, aux: bool = True, **paper options) -> nn.Module``
REALTIME_MODELS: dict[str, Callable[..., nn.Module]] = {
    "bisenetv2": build_bisenetv2,
    "ddrnet23_slim": build_ddrnet23_slim,
    "pidnet_s": build_pidnet_s,
    "regseg": build_regseg,
}
