"""PSPNet's pyramid pooling module (Zhao et al., 2017) on the ``"out"`` feature."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from effseg.models.layers import ConvBNAct


def pooled_branch(in_channels: int, out_channels: int, bins: int) -> nn.Sequential:
    """Adaptive average pooling to ``bins x bins`` -> 1x1 conv -> norm -> ReLU.

    For ``bins == 1`` the branch has no BatchNorm: a 1x1 map holds a single value
    per channel and sample, so BatchNorm in training mode fails with batch 1
    ("Expected more than 1 value per channel") and is degenerate for small
    batches.  The 1x1 conv keeps a bias and is followed by ReLU instead (PSPNet
    and DeepLabV3 implementations that train with large batches keep BN there;
    the normalisation buys nothing on a global vector).
    """
    if bins == 1:
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=True), nn.ReLU(inplace=True)
        )
    return nn.Sequential(nn.AdaptiveAvgPool2d(bins), *ConvBNAct(in_channels, out_channels, 1))


class PPMHead(nn.Module):
    """Pyramid pooling + 3x3 bottleneck + classifier.

    ``forward(feats)`` -> ``{"out": logits (B, num_classes, h, w)}`` from ``feats["out"]``
    (B, in_channels, h, w).  Each of the ``bins`` branches pools to ``b x b``,
    reduces to ``in_channels // len(bins)`` channels and is upsampled back
    (bilinear, ``align_corners=False``), so any input size works. The options' defaults are the
    registry's, in one place: the ``pspnet`` builder (:mod:`effseg.models.segmentor`).
    """

    def __init__(
        self, in_channels: int, num_classes: int, *, bins: Sequence[int], channels: int, dropout: float
    ) -> None:
        super().__init__()
        reduction = in_channels // len(bins)
        self.branches = nn.ModuleList(pooled_branch(in_channels, reduction, int(b)) for b in bins)
        self.bottleneck = nn.Sequential(
            *ConvBNAct(in_channels + reduction * len(bins), channels, 3), nn.Dropout(dropout)
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        x = feats["out"]
        size = x.shape[-2:]
        pyramid = [x] + [
            F.interpolate(branch(x), size=size, mode="bilinear", align_corners=False)
            for branch in self.branches
        ]
        return {"out": self.classifier(self.bottleneck(torch.cat(pyramid, dim=1)))}
