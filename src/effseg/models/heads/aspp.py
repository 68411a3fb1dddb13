"""DeepLabV3's atrous spatial pyramid pooling (Chen et al., 2017), after torchvision's ``DeepLabHead``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from effseg.models.layers import ConvBNAct

# DeepLabV3's rates at output stride 16 (6, 12, 18), scaled to the output stride.
DEEPLAB_RATES = {8: [12, 24, 36], 16: [6, 12, 18], 32: [3, 6, 9]}


class ASPPPooling(nn.Module):
    """Image-level branch: global average pool -> 1x1 conv (bias) -> ReLU -> upsample.

    No BatchNorm here: the pooled map is 1x1, so BatchNorm in training mode fails
    with batch 1 ("Expected more than 1 value per channel") and is degenerate for
    small batches; a biased conv + ReLU does the job.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.conv(F.adaptive_avg_pool2d(x, 1)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """1x1 branch + one dilated 3x3 branch per rate [+ image pooling] -> concat -> 1x1 projection."""

    def __init__(
        self,
        in_channels: int,
        rates: Sequence[int],
        channels: int = 256,
        image_pooling: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNAct(in_channels, channels, 1)]
        branches += [ConvBNAct(in_channels, channels, 3, dilation=int(r)) for r in rates]
        if image_pooling:
            branches.append(ASPPPooling(in_channels, channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*ConvBNAct(len(branches) * channels, channels, 1), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class ASPPHead(nn.Module):
    """``forward(feats)`` -> ``{"out": logits (B, num_classes, h, w)}`` from ``feats["out"]``
    (B, in_channels, h, w).

    torchvision's ``DeepLabHead``: ASPP -> 3x3 conv-BN-ReLU -> 1x1 classifier.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        rates: Sequence[int] = (12, 24, 36),
        image_pooling: bool = True,
        channels: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, rates, channels, image_pooling, dropout)
        self.conv = ConvBNAct(channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"out": self.classifier(self.conv(self.aspp(feats["out"])))}
