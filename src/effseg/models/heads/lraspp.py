"""Lite R-ASPP (Howard et al., "Searching for MobileNetV3", 2019), after torchvision's ``LRASPPHead``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from effseg.models.layers import ConvBNAct


class LRASPPHead(nn.Module):
    """``forward(feats)`` -> ``{"out": logits (B, num_classes, h_low, w_low)}`` at the ``"low"``
    (1/8) resolution.

    High branch on ``"out"``: 1x1 conv-BN-ReLU gated by a sigmoid of a globally
    pooled 1x1 conv (the paper uses a 49x49 average pool with stride (16, 20),
    fixed to 1024x2048 crops; global pooling, as in torchvision, works at any
    resolution), upsampled to ``"low"`` and classified; added to a 1x1
    classifier of ``"low"``.
    """

    def __init__(
        self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int = 128
    ) -> None:
        super().__init__()
        self.cbr = ConvBNAct(high_channels, inter_channels, 1)
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, inter_channels, 1, bias=False), nn.Sigmoid()
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        low, high = feats["low"], feats["out"]
        x = self.cbr(high) * self.scale(high)
        if x.shape[-2:] != low.shape[-2:]:
            x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": self.low_classifier(low) + self.high_classifier(x)}
