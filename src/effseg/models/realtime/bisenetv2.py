"""BiSeNetV2 (Yu et al., "BiSeNet V2: Bilateral Network with Guided Aggregation for Real-time
Semantic Segmentation", IJCV 2021, arXiv:2004.02147), written from the paper; the widths follow
the paper's Table 1 and CoinCheung/BiSeNet's ``lib/models/bisenetv2.py`` (read, not copied).

- :class:`DetailBranch`: wide, shallow, output stride 8 (64, 64, 128 channels).
- :class:`SemanticBranch`: :class:`StemBlock` (stride 4, 16 channels), :class:`GatherExpansion`
  layers (expansion 6) to stride 32 (32, 64, 128 channels), then :class:`ContextEmbedding`.
- :class:`BilateralGuidedAggregation`: each branch gates the other at its own resolution.
- :class:`SegmentHead`: 3x3 conv-BN-ReLU (1024 channels for the main head), dropout 0.1, 1x1
  classifier; the four boosters (``aux2``..``aux5``, 128 channels) read the semantic branch at
  strides 4, 8, 16 and 32 and are built only with ``aux=True`` and run only in training.

The official code's function (CoinCheung/BiSeNet) by default: the context embedding pools, then
applies BatchNorm and a 1x1 conv-BN-ReLU (``pool_order="pool_bn"``; its BatchNorms train on
batch 1 too, see :class:`~effseg.models.realtime._base.PooledBatchNorm2d`), and the guided
aggregation upsamples the semantic maps x4 by nearest neighbour (``upsample="nearest"``).  The
models trained before these options existed used BatchNorm before the pool with a biased 1x1 conv
and no BatchNorm after it (-128 parameters) and bilinear upsampling (mmsegmentation's choice);
their stored configs rebuild that (:data:`LEGACY_OPTIONS`).  ``boosters="official"`` builds
CoinCheung's booster heads (a nearest x2 upsample and a 3x3 conv-BN-ReLU to stride^2 channels
before the classifier, so that its checkpoints' boosters load); the default ``"light"`` boosters
(3x3 conv-BN-ReLU, 1x1 classifier) train faster; both are training-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from effseg.models.contract import LossTerm
from effseg.models.layers import ConvBNAct, conv_bn
from effseg.models.realtime._base import (
    POOL_ORDERS,
    AffineBatchNorm2d,
    PooledBatchNorm2d,
    RealtimeNet,
    init_weights,
    network_config,
    resize,
)

__all__ = ["BiSeNetV2", "LEGACY_OPTIONS", "build_bisenetv2"]

#: option values for a model config stored before the options existed (effseg's first BiSeNetV2).
LEGACY_OPTIONS = {"pool_order": "bn_pool", "upsample": "bilinear"}
UPSAMPLE_MODES = ("nearest", "bilinear")
BOOSTERS = ("light", "official")


class DetailBranch(nn.Module):
    """(B, 3, H, W) -> (B, 128, H/8, W/8): three stages of 3x3 conv-BN-ReLU (2, 3, 3 layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.s1 = nn.Sequential(ConvBNAct(3, 64, 3, 2), ConvBNAct(64, 64))
        self.s2 = nn.Sequential(ConvBNAct(64, 64, 3, 2), ConvBNAct(64, 64), ConvBNAct(64, 64))
        self.s3 = nn.Sequential(ConvBNAct(64, 128, 3, 2), ConvBNAct(128, 128), ConvBNAct(128, 128))

    def forward(self, x: Tensor) -> Tensor:
        return self.s3(self.s2(self.s1(x)))


class StemBlock(nn.Module):
    """(B, 3, H, W) -> (B, 16, H/4, W/4): a strided conv, then a conv path and a max-pool path, fused."""

    def __init__(self, out_channels: int = 16) -> None:
        super().__init__()
        c = out_channels
        self.conv = ConvBNAct(3, c, 3, 2)
        self.left = nn.Sequential(ConvBNAct(c, c // 2, 1), ConvBNAct(c // 2, c, 3, 2))
        self.right = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = ConvBNAct(2 * c, c)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class GatherExpansion(nn.Module):
    """Gather-and-expansion layer: 3x3 conv, 3x3 depthwise expansion (x ``expansion``), 1x1 projection.

    With ``stride=2`` a second depthwise conv follows the strided one and the shortcut is a
    strided depthwise conv + 1x1 projection; with ``stride=1`` the shortcut is the identity
    (``in_channels == out_channels``).  (B, Cin, H, W) -> (B, Cout, H/stride, W/stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expansion: int = 6) -> None:
        super().__init__()
        mid = in_channels * expansion
        self.conv1 = ConvBNAct(in_channels, in_channels)
        if stride == 1:
            self.dwconv = ConvBNAct(in_channels, mid, groups=in_channels)
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.dwconv = nn.Sequential(
                *conv_bn(in_channels, mid, 3, 2, groups=in_channels),
                *ConvBNAct(mid, mid, groups=mid),
            )
            self.shortcut = nn.Sequential(
                *conv_bn(in_channels, in_channels, 3, 2, groups=in_channels),
                *conv_bn(in_channels, out_channels, 1),
            )
        self.conv2 = conv_bn(mid, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv2(self.dwconv(self.conv1(x))) + self.shortcut(x))


class ContextEmbedding(nn.Module):
    """Global context added to every position, then a 3x3 conv-BN-ReLU; (B, C, h, w) -> same shape.

    ``pool_order="pool_bn"`` (official): global mean over (H, W) (``torch.mean``: exports at any
    size) -> BatchNorm -> 1x1 conv-BN-ReLU -> broadcast add -> 3x3 conv-BN-ReLU.  ``"bn_pool"``
    (effseg's earlier order): BatchNorm -> mean -> 1x1 conv with bias -> ReLU -> add -> 3x3 conv.
    """

    def __init__(self, channels: int = 128, pool_order: str = "pool_bn") -> None:
        super().__init__()
        c = channels
        self.bn_first = pool_order == "bn_pool"
        self.bn = AffineBatchNorm2d(c)
        if self.bn_first:
            self.conv_gap = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(inplace=True))
        else:
            self.conv_gap = nn.Sequential(
                nn.Conv2d(c, c, 1, bias=False), PooledBatchNorm2d(c), nn.ReLU(inplace=True)
            )
        self.conv_last = ConvBNAct(c, c)

    def forward(self, x: Tensor) -> Tensor:
        if self.bn_first:
            context = torch.mean(self.bn(x), dim=(2, 3), keepdim=True)
        else:
            context = self.bn(torch.mean(x, dim=(2, 3), keepdim=True))
        return self.conv_last(x + self.conv_gap(context))


class SemanticBranch(nn.Module):
    """(B, 3, H, W) -> stride-4/8/16/32 maps (16, 32, 64, 128 channels) and the context-embedded output."""

    def __init__(self, expansion: int = 6, pool_order: str = "pool_bn") -> None:
        super().__init__()
        e = expansion
        self.stem = StemBlock(16)
        self.s3 = nn.Sequential(GatherExpansion(16, 32, 2, e), GatherExpansion(32, 32, 1, e))
        self.s4 = nn.Sequential(GatherExpansion(32, 64, 2, e), GatherExpansion(64, 64, 1, e))
        self.s5 = nn.Sequential(
            GatherExpansion(64, 128, 2, e), *(GatherExpansion(128, 128, 1, e) for _ in range(3))
        )
        self.context = ContextEmbedding(128, pool_order)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        s2 = self.stem(x)
        s3 = self.s3(s2)
        s4 = self.s4(s3)
        s5 = self.s5(s4)
        return {"s2": s2, "s3": s3, "s4": s4, "s5": s5, "out": self.context(s5)}


class BilateralGuidedAggregation(nn.Module):
    """Fuses detail (B, C, H/8, W/8) and semantic (B, C, H/32, W/32) features -> (B, C, H/8, W/8).

    Detail features are gated by the upsampled semantic ones (sigmoid) at stride 8, and the
    downsampled detail features by the semantic ones at stride 32; the two are summed and
    passed through a 3x3 conv-BN-ReLU.  ``upsample``: ``nearest`` (x4, CoinCheung/BiSeNet) or
    ``bilinear`` (mmsegmentation; effseg's earlier choice).
    """

    def __init__(self, channels: int = 128, upsample: str = "nearest") -> None:
        super().__init__()
        c = channels
        self.mode = upsample
        self.detail_keep = nn.Sequential(*conv_bn(c, c, 3, groups=c), nn.Conv2d(c, c, 1, bias=False))
        self.detail_down = nn.Sequential(*conv_bn(c, c, 3, 2), nn.AvgPool2d(3, stride=2, padding=1))
        self.semantic_up = conv_bn(c, c, 3)
        self.semantic_keep = nn.Sequential(*conv_bn(c, c, 3, groups=c), nn.Conv2d(c, c, 1, bias=False))
        self.conv = ConvBNAct(c, c)

    def forward(self, detail: Tensor, semantic: Tensor) -> Tensor:
        size = detail.shape[-2:]
        high = self.detail_keep(detail) * torch.sigmoid(resize(self.semantic_up(semantic), size, self.mode))
        low = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))
        return self.conv(high + resize(low, size, self.mode))


class SegmentHead(nn.Module):
    """3x3 conv-BN-ReLU (``channels``) -> dropout 0.1 -> 1x1 classifier; logits at the input's stride."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_channels, channels)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.cls(self.drop(self.conv(x)))


class OfficialBooster(SegmentHead):
    """CoinCheung/BiSeNet's booster head: 3x3 conv-BN-ReLU (``channels``) -> dropout -> nearest x2
    -> 3x3 conv-BN-ReLU to ``stride ** 2`` channels -> 1x1 classifier; logits at twice the input's
    resolution (the model upsamples them bilinearly to the image, as the official x(stride / 2))."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, stride: int) -> None:
        super().__init__(in_channels, channels, num_classes)
        self.up_conv = ConvBNAct(channels, stride * stride)
        self.cls = nn.Conv2d(stride * stride, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.conv(x))
        return self.cls(self.up_conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")))


class BiSeNetV2(RealtimeNet):
    """BiSeNetV2; see the module docstring.  Training outputs: ``out`` + boosters ``aux2``..``aux5``.

    Every booster's loss weight is 1.0, as in the paper (``L = l_main + sum_i l_booster_i``).
    """

    head_names = ("head", "aux2", "aux3", "aux4", "aux5")
    aux_losses = {f"aux{i}": LossTerm(1.0) for i in (2, 3, 4, 5)}
    max_stride = 32

    def __init__(self, config: Mapping[str, Any]) -> None:
        """``config``: :func:`build_bisenetv2`'s checked options (its signature holds the defaults)."""
        super().__init__(config)
        num_classes, booster_channels = config["num_classes"], config["booster_channels"]
        self.detail = DetailBranch()
        self.semantic = SemanticBranch(config["expansion"], config["pool_order"])
        self.bga = BilateralGuidedAggregation(128, config["upsample"])
        self.head = SegmentHead(128, config["head_channels"], num_classes)
        if self.aux:
            for i, cin in zip((2, 3, 4, 5), (16, 32, 64, 128), strict=True):
                head = (
                    OfficialBooster(cin, booster_channels, num_classes, 2**i)
                    if config["boosters"] == "official"
                    else SegmentHead(cin, booster_channels, num_classes)
                )
                setattr(self, f"aux{i}", head)
        init_weights(self)
        for m in self.semantic.modules():  # each residual branch starts as the identity (zero-init last BN)
            if isinstance(m, GatherExpansion):
                nn.init.zeros_(m.conv2[1].weight)

    def _aux_modules(self) -> tuple[str, ...]:
        return ("aux2", "aux3", "aux4", "aux5")

    def _logits(self, x: Tensor) -> dict[str, Tensor]:
        sem = self.semantic(x)
        out = {"out": self.head(self.bga(self.detail(x), sem["out"]))}
        if self.with_aux:
            for i in (2, 3, 4, 5):
                out[f"aux{i}"] = getattr(self, f"aux{i}")(sem[f"s{i}"])
        return out


def build_bisenetv2(
    num_classes: int = 19,
    aux: bool = True,
    expansion: int = 6,
    head_channels: int = 1024,
    booster_channels: int = 128,
    pool_order: str = "pool_bn",
    upsample: str = "nearest",
    boosters: str = "light",
) -> BiSeNetV2:
    """BiSeNetV2 (3.36M inference parameters at 19 classes).

    ``aux``: build the four booster heads (training only); ``expansion``: the gather-and-expansion
    ratio (paper: 6); ``head_channels``: the main segment head's width (1024);
    ``booster_channels``: the boosters' width (128); ``pool_order``: the context embedding's
    ``pool_bn`` (official) or ``bn_pool`` (effseg's earlier order); ``upsample``: the guided
    aggregation's ``nearest`` (official) or ``bilinear``; ``boosters``: ``light`` or ``official``
    (CoinCheung's booster heads, to load their checkpoints' boosters).
    """
    choices = {"pool_order": POOL_ORDERS, "upsample": UPSAMPLE_MODES, "boosters": BOOSTERS}
    return BiSeNetV2(network_config("bisenetv2", build_bisenetv2, locals(), choices))
