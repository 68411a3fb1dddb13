"""DDRNet-23-slim (Pan, Hong et al., "Deep Dual-resolution Networks for Real-time and Accurate
Semantic Segmentation of Road Scenes", IEEE T-ITS 2022, arXiv:2101.06085), written from the paper;
widths checked against ydhongHIT/DDRNet's ``segmentation/DDRNet_23_slim.py`` (read, not copied).

Two branches after a shared stride-8 trunk: a **high-resolution branch** kept at stride 8
(64 channels) and a **low-resolution branch** going to stride 16, 32 and 64 (128, 256, 512).
After stages 3 and 4 a **bilateral fusion** adds the strided-conv-downsampled high-resolution
map to the low one and the 1x1-compressed, bilinearly upsampled low map to the high one.
The **DAPPM** (deep aggregation pyramid pooling module) runs on the stride-64 map: average
pools with kernels 5/9/17 and strides 2/4/8 plus a global mean, each upsampled and fused
hierarchically with a 3x3 conv.  The main head reads the sum of both branches at stride 8; the
auxiliary head (loss weight 0.4) reads the high-resolution branch after the first fusion.

Every pooled DAPPM branch pools, then applies BN-ReLU-conv, as the paper and the official code
(``pool_order="pool_bn"``); the global branch is ``torch.mean`` over (H, W) (exports at any
size). Its BatchNorm is a :class:`~effseg.models.realtime._base.AffineBatchNorm2d`, which trains
on batch 1 too (on a pooled map of one value per channel it uses its running statistics).
``pool_order="bn_pool"`` is the order effseg used before (BatchNorm before the pool): the models
trained with it (the shipped ``camvid-ddrnet23_slim``) are rebuilt with it.  The parameter count
is the same in both orders.

``planes``, ``spp_planes`` and ``head_planes`` default to DDRNet-23-slim (32, 128, 64);
DDRNet-23 is (64, 128, 128).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from effseg.models.contract import LossTerm
from effseg.models.layers import conv_bn
from effseg.models.realtime._base import (
    POOL_ORDERS,
    AffineBatchNorm2d,
    RealtimeNet,
    init_weights,
    network_config,
    resize,
)

__all__ = [
    "DDRNet",
    "LEGACY_OPTIONS",
    "build_ddrnet23_slim",
    "BasicBlock",
    "Bottleneck",
    "SegHead",
    "make_layer",
]

#: option values for a model config stored before the option existed (the BatchNorm-before-pool
#: DAPPM of effseg's first DDRNet): :func:`effseg.models.realtime.with_legacy_defaults`.
LEGACY_OPTIONS = {"pool_order": "bn_pool"}


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs); the last block of a stage omits its final ReLU."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, relu: bool = True) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, planes, 3, stride)
        self.conv2 = conv_bn(planes, planes, 3)
        out = planes * self.expansion
        self.downsample = conv_bn(cin, out, 1, stride) if stride != 1 or cin != out else None
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(torch.relu(self.conv1(x))) + identity
        return torch.relu(out) if self.relu else out


class Bottleneck(nn.Module):
    """Bottleneck 1x1 -> 3x3 (stride) -> 1x1 with expansion 2; no final ReLU by default (as in DDRNet)."""

    expansion = 2

    def __init__(self, cin: int, planes: int, stride: int = 1, relu: bool = False) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = conv_bn(cin, planes, 1)
        self.conv2 = conv_bn(planes, planes, 3, stride)
        self.conv3 = conv_bn(planes, out, 1)
        self.downsample = conv_bn(cin, out, 1, stride) if stride != 1 or cin != out else None
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))) + identity
        return torch.relu(out) if self.relu else out


def make_layer(
    block: type[BasicBlock] | type[Bottleneck], cin: int, planes: int, blocks: int, stride: int = 1
) -> nn.Sequential:
    """``blocks`` residual blocks, the first one strided, as in the reference code's ``_make_layer``.

    The first block keeps its class default (a basic block ends in ReLU, a bottleneck does
    not), the last of two or more has no final ReLU (the caller applies it where needed).
    """
    layers: list[nn.Module] = [block(cin, planes, stride, relu=block is BasicBlock)]
    cin = planes * block.expansion
    for i in range(1, blocks):
        layers.append(block(cin, planes, 1, relu=i < blocks - 1))
    return nn.Sequential(*layers)


def bn_relu_conv(cin: int, cout: int, kernel: int = 1, groups: int = 1) -> nn.Sequential:
    """Pre-activation unit: BatchNorm -> ReLU -> conv (no bias)."""
    return nn.Sequential(
        AffineBatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False),
    )


class PooledBranch(nn.Module):
    """Average pool (kernel ``kernel``, stride ``kernel // 2``; a global mean when ``kernel`` is 0)
    -> BatchNorm -> ReLU -> 1x1 conv (``pool_order="pool_bn"``, the official order), or BatchNorm
    first (``"bn_pool"``, effseg's earlier order); (B, cin, h, w) -> (B, cout, h', w')."""

    def __init__(self, cin: int, cout: int, kernel: int, pool_order: str = "pool_bn") -> None:
        super().__init__()
        self.bn_first = pool_order == "bn_pool"
        self.bn = AffineBatchNorm2d(cin)
        self.pool = nn.AvgPool2d(kernel, kernel // 2, kernel // 2) if kernel else None
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def _pool(self, x: Tensor) -> Tensor:
        return self.pool(x) if self.pool is not None else torch.mean(x, dim=(2, 3), keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self._pool(self.bn(x)) if self.bn_first else self.bn(self._pool(x))
        return self.conv(torch.relu(x))


#: the pooled scales of DAPPM / PAPPM: average pools of kernel 5, 9, 17 (strides 2, 4, 8) and global
POOL_KERNELS = (5, 9, 17, 0)


class DAPPM(nn.Module):
    """Deep aggregation pyramid pooling: (B, cin, h, w) -> (B, cout, h, w).

    Each pooled scale is upsampled, added to the previous scale's output and refined by a
    3x3 BN-ReLU-conv (hierarchical residual fusion); the five scales are concatenated,
    compressed by a 1x1 and added to a 1x1 shortcut of the input.
    """

    def __init__(self, cin: int, branch: int, cout: int, pool_order: str = "pool_bn") -> None:
        super().__init__()
        self.scale0 = bn_relu_conv(cin, branch)
        self.scales = nn.ModuleList(PooledBranch(cin, branch, k, pool_order) for k in POOL_KERNELS)
        self.process = nn.ModuleList(bn_relu_conv(branch, branch, 3) for _ in POOL_KERNELS)
        self.compression = bn_relu_conv(branch * 5, cout)
        self.shortcut = bn_relu_conv(cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        feats = [self.scale0(x)]
        for scale, process in zip(self.scales, self.process, strict=True):
            feats.append(process(resize(scale(x), size) + feats[-1]))
        return self.compression(torch.cat(feats, dim=1)) + self.shortcut(x)


class SegHead(nn.Module):
    """BN-ReLU-3x3 conv (``mid``) -> BN-ReLU-1x1 classifier (with bias); (B, cin, h, w) -> (B, cout, h, w)."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.conv = bn_relu_conv(cin, mid, 3)
        self.bn = nn.BatchNorm2d(mid)
        self.cls = nn.Conv2d(mid, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.cls(torch.relu(self.bn(self.conv(x))))


def stem(planes: int) -> nn.Sequential:
    """Two stride-2 3x3 conv-BN-ReLU (convs with bias, as in the reference code).

    (B, 3, H, W) -> (B, planes, H/4, W/4).
    """
    return nn.Sequential(
        nn.Conv2d(3, planes, 3, 2, 1),
        nn.BatchNorm2d(planes),
        nn.ReLU(inplace=True),
        nn.Conv2d(planes, planes, 3, 2, 1),
        nn.BatchNorm2d(planes),
        nn.ReLU(inplace=True),
    )


class DDRNet(RealtimeNet):
    """DDRNet-23(-slim); see the module docstring.  Training outputs: ``out`` and ``aux`` (weight 0.4)."""

    head_names = ("final_layer", "aux_head")
    aux_losses = {"aux": LossTerm(0.4)}
    max_stride = 64

    def __init__(self, config: Mapping[str, Any]) -> None:
        """``config``: :func:`build_ddrnet23_slim`'s checked options (its signature holds the defaults)."""
        super().__init__(config)
        p, num_classes = config["planes"], config["num_classes"]
        hp = p * 2  # hp: width of the high-resolution branch
        self.conv1 = stem(p)
        self.layer1 = make_layer(BasicBlock, p, p, 2)
        self.layer2 = make_layer(BasicBlock, p, 2 * p, 2, stride=2)
        # low-resolution branch
        self.layer3 = make_layer(BasicBlock, 2 * p, 4 * p, 2, stride=2)
        self.layer4 = make_layer(BasicBlock, 4 * p, 8 * p, 2, stride=2)
        self.layer5 = make_layer(Bottleneck, 8 * p, 8 * p, 1, stride=2)
        # high-resolution branch
        self.layer3_ = make_layer(BasicBlock, 2 * p, hp, 2)
        self.layer4_ = make_layer(BasicBlock, hp, hp, 2)
        self.layer5_ = make_layer(Bottleneck, hp, hp, 1)
        # bilateral fusion
        self.compression3 = conv_bn(4 * p, hp, 1)
        self.compression4 = conv_bn(8 * p, hp, 1)
        self.down3 = conv_bn(hp, 4 * p, 3, 2)
        self.down4 = nn.Sequential(
            *conv_bn(hp, 4 * p, 3, 2), nn.ReLU(inplace=True), *conv_bn(4 * p, 8 * p, 3, 2)
        )
        self.spp = DAPPM(16 * p, config["spp_planes"], 4 * p, config["pool_order"])
        self.final_layer = SegHead(4 * p, config["head_planes"], num_classes)
        self.aux_head = SegHead(hp, config["head_planes"], num_classes) if self.aux else None
        init_weights(self)

    def _aux_modules(self) -> tuple[str, ...]:
        return ("aux_head",)

    def _logits(self, x: Tensor) -> dict[str, Tensor]:
        x = self.layer1(self.conv1(x))
        x2 = self.layer2(torch.relu(x))  # stride 8
        size = x2.shape[-2:]
        low = self.layer3(torch.relu(x2))  # stride 16
        high = self.layer3_(torch.relu(x2))
        low, high = (
            low + self.down3(torch.relu(high)),
            high + resize(self.compression3(torch.relu(low)), size),
        )
        aux_in = high
        low = self.layer4(torch.relu(low))  # stride 32
        high = self.layer4_(torch.relu(high))
        low, high = (
            low + self.down4(torch.relu(high)),
            high + resize(self.compression4(torch.relu(low)), size),
        )
        high = self.layer5_(torch.relu(high))
        low = resize(self.spp(self.layer5(torch.relu(low))), size)  # stride 64 -> 8
        out = {"out": self.final_layer(low + high)}
        if self.with_aux and self.aux_head is not None:
            out["aux"] = self.aux_head(aux_in)
        return out


def build_ddrnet23_slim(
    num_classes: int = 19,
    aux: bool = True,
    planes: int = 32,
    spp_planes: int = 128,
    head_planes: int = 64,
    pool_order: str = "pool_bn",
) -> DDRNet:
    """DDRNet-23-slim (5.70M inference parameters at 19 classes).

    ``aux``: build the auxiliary head (training only, loss weight 0.4); ``planes``: base width
    (32; DDRNet-23: 64); ``spp_planes``: DAPPM branch width (128); ``head_planes``: head width
    (64; DDRNet-23: 128); ``pool_order``: ``pool_bn`` (DAPPM pools, then BatchNorm: the official
    order) or ``bn_pool`` (effseg's earlier order, for the models trained with it).
    """
    return DDRNet(network_config("ddrnet23_slim", build_ddrnet23_slim, locals(), {"pool_order": POOL_ORDERS}))
