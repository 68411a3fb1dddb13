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

Deviation from the paper, for batch-1 training: the context embedding's BatchNorm is applied
before the global average pool (a BatchNorm over a pooled (B, C, 1, 1) map cannot train on one
image; in eval mode the two orders are the same affine map), and the 1x1 convolution after the
pool has a bias and no BatchNorm (same reason; -128 parameters).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from effseg.models.contract import LossTerm
from effseg.models.realtime._base import (
    AffineBatchNorm2d,
    RealtimeNet,
    check_bool,
    check_int,
    conv_bn,
    conv_bn_relu,
    init_weights,
    resize,
)

__all__ = ["BiSeNetV2", "build_bisenetv2"]


class DetailBranch(nn.Module):
    """(B, 3, H, W) -> (B, 128, H/8, W/8): three stages of 3x3 conv-BN-ReLU (2, 3, 3 layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.s1 = nn.Sequential(conv_bn_relu(3, 64, stride=2), conv_bn_relu(64, 64))
        self.s2 = nn.Sequential(conv_bn_relu(64, 64, stride=2), conv_bn_relu(64, 64), conv_bn_relu(64, 64))
        self.s3 = nn.Sequential(
            conv_bn_relu(64, 128, stride=2), conv_bn_relu(128, 128), conv_bn_relu(128, 128)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.s3(self.s2(self.s1(x)))


class StemBlock(nn.Module):
    """(B, 3, H, W) -> (B, 16, H/4, W/4): a strided conv, then a conv path and a max-pool path, fused."""

    def __init__(self, out_channels: int = 16) -> None:
        super().__init__()
        c = out_channels
        self.conv = conv_bn_relu(3, c, stride=2)
        self.left = nn.Sequential(conv_bn_relu(c, c // 2, kernel=1), conv_bn_relu(c // 2, c, stride=2))
        self.right = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = conv_bn_relu(2 * c, c)

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
        self.conv1 = conv_bn_relu(in_channels, in_channels)
        if stride == 1:
            self.dwconv = conv_bn_relu(in_channels, mid, groups=in_channels)
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.dwconv = nn.Sequential(
                *conv_bn(in_channels, mid, stride=2, groups=in_channels),
                *conv_bn_relu(mid, mid, groups=mid),
            )
            self.shortcut = nn.Sequential(
                *conv_bn(in_channels, in_channels, stride=2, groups=in_channels),
                *conv_bn(in_channels, out_channels, kernel=1),
            )
        self.conv2 = conv_bn(mid, out_channels, kernel=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv2(self.dwconv(self.conv1(x))) + self.shortcut(x))


class ContextEmbedding(nn.Module):
    """Global context added to every position, then a 3x3 conv-BN-ReLU; (B, C, h, w) -> same shape.

    BatchNorm -> global mean over (H, W) (``torch.mean``: exports at any size) -> 1x1 conv with
    bias -> ReLU -> broadcast add -> 3x3 conv-BN-ReLU.  See the module docstring for why the
    BatchNorm comes before the pool.
    """

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.bn = AffineBatchNorm2d(channels)
        self.conv_gap = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True))
        self.conv_last = conv_bn_relu(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        context = self.conv_gap(torch.mean(self.bn(x), dim=(2, 3), keepdim=True))
        return self.conv_last(x + context)


class SemanticBranch(nn.Module):
    """(B, 3, H, W) -> stride-4/8/16/32 maps (16, 32, 64, 128 channels) and the context-embedded output."""

    def __init__(self, expansion: int = 6) -> None:
        super().__init__()
        e = expansion
        self.stem = StemBlock(16)
        self.s3 = nn.Sequential(GatherExpansion(16, 32, 2, e), GatherExpansion(32, 32, 1, e))
        self.s4 = nn.Sequential(GatherExpansion(32, 64, 2, e), GatherExpansion(64, 64, 1, e))
        self.s5 = nn.Sequential(
            GatherExpansion(64, 128, 2, e), *(GatherExpansion(128, 128, 1, e) for _ in range(3))
        )
        self.context = ContextEmbedding(128)

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
    passed through a 3x3 conv-BN-ReLU.
    """

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        c = channels
        self.detail_keep = nn.Sequential(*conv_bn(c, c, groups=c), nn.Conv2d(c, c, 1, bias=False))
        self.detail_down = nn.Sequential(*conv_bn(c, c, stride=2), nn.AvgPool2d(3, stride=2, padding=1))
        self.semantic_up = conv_bn(c, c)
        self.semantic_keep = nn.Sequential(*conv_bn(c, c, groups=c), nn.Conv2d(c, c, 1, bias=False))
        self.conv = conv_bn_relu(c, c)

    def forward(self, detail: Tensor, semantic: Tensor) -> Tensor:
        size = detail.shape[-2:]
        high = self.detail_keep(detail) * torch.sigmoid(resize(self.semantic_up(semantic), size))
        low = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))
        return self.conv(high + resize(low, size))


class SegmentHead(nn.Module):
    """3x3 conv-BN-ReLU (``channels``) -> dropout 0.1 -> 1x1 classifier; logits at the input's stride."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_channels, channels)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.cls(self.drop(self.conv(x)))


class BiSeNetV2(RealtimeNet):
    """BiSeNetV2; see the module docstring.  Training outputs: ``out`` + boosters ``aux2``..``aux5``.

    Every booster's loss weight is 1.0, as in the paper (``L = l_main + sum_i l_booster_i``).
    """

    head_names = ("head", "aux2", "aux3", "aux4", "aux5")
    aux_losses = {f"aux{i}": LossTerm(1.0) for i in (2, 3, 4, 5)}
    max_stride = 32

    def __init__(
        self,
        num_classes: int,
        aux: bool = True,
        expansion: int = 6,
        head_channels: int = 1024,
        booster_channels: int = 128,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes, aux, config or {"name": "bisenetv2"})
        self.detail = DetailBranch()
        self.semantic = SemanticBranch(expansion)
        self.bga = BilateralGuidedAggregation(128)
        self.head = SegmentHead(128, head_channels, num_classes)
        if aux:
            for name, cin in zip(("aux2", "aux3", "aux4", "aux5"), (16, 32, 64, 128), strict=True):
                setattr(self, name, SegmentHead(cin, booster_channels, num_classes))
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
) -> BiSeNetV2:
    """BiSeNetV2 (3.36M inference parameters at 19 classes).

    ``aux``: build the four booster heads (training only); ``expansion``: the gather-and-expansion
    ratio (paper: 6); ``head_channels``: the main segment head's width (1024);
    ``booster_channels``: the boosters' width (128).
    """
    name = "bisenetv2"
    config = {
        "name": name,
        "num_classes": check_int(name, "num_classes", num_classes),
        "aux": check_bool(name, "aux", aux),
        "expansion": check_int(name, "expansion", expansion),
        "head_channels": check_int(name, "head_channels", head_channels),
        "booster_channels": check_int(name, "booster_channels", booster_channels),
    }
    return BiSeNetV2(num_classes, aux, expansion, head_channels, booster_channels, config=config)
