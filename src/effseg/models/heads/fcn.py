"""FCN head (torchvision's ``FCNHead``): 3x3 conv -> BN -> ReLU -> dropout -> 1x1 classifier.

Used as the auxiliary head on the ``"aux"`` feature of every model and as the
main head of ``fcn`` on ``"out"``.
"""

from __future__ import annotations

from torch import Tensor, nn

from effseg.models.layers import ConvBNAct


class FCNHead(nn.Module):
    """``forward(feats)`` -> ``{out_name: logits (B, num_classes, h, w)}`` from ``feats[in_key]``
    (B, in_channels, h, w); ``out_name`` defaults to ``in_key`` (``"aux"`` for the auxiliary head,
    ``"out"`` for the main head of ``fcn``)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        in_key: str = "aux",
        channels: int | None = None,
        dropout: float = 0.1,
        out_name: str | None = None,
    ) -> None:
        super().__init__()
        inter = channels or in_channels // 4
        self.in_key = in_key
        self.out_name = out_name or in_key
        self.block = nn.Sequential(  # keys block.0 (conv), .1 (BN), .2 (ReLU), .3, .4 (classifier)
            *ConvBNAct(in_channels, inter, 3), nn.Dropout(dropout), nn.Conv2d(inter, num_classes, 1)
        )

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        return {self.out_name: self.block(feats[self.in_key])}
