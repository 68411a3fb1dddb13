"""FCN head (torchvision's ``FCNHead``): 3x3 conv -> BN -> ReLU -> dropout -> 1x1 classifier.

Used as the auxiliary head on the ``"aux"`` feature of every model and as the
main head of ``fcn`` on ``"out"``.
"""

from __future__ import annotations

from torch import Tensor, nn


class FCNHead(nn.Module):
    """``forward(feats)`` -> logits (B, num_classes, h, w) from ``feats[in_key]`` (B, in_channels, h, w)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        in_key: str = "aux",
        channels: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        inter = channels or in_channels // 4
        self.in_key = in_key
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(inter, num_classes, 1),
        )

    def forward(self, feats: dict[str, Tensor]) -> Tensor:
        return self.block(feats[self.in_key])
