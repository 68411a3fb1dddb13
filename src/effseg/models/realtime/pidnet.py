"""PIDNet-S (Xu, Xiong, Bhattacharyya, "PIDNet: A Real-time Semantic Segmentation Network Inspired
by PID Controllers", CVPR 2023, arXiv:2206.02066), written from the paper; widths checked against
XuJiacong/PIDNet's ``models/pidnet.py`` and ``models/model_utils.py`` (read, not copied).

Three branches after a shared stride-8 trunk (residual blocks as in DDRNet, see
:mod:`effseg.models.realtime.ddrnet`):

- **I** (integral, context): the deep branch down to stride 64, ending in the **PAPPM**
  (parallel aggregation pyramid pooling: DAPPM's pooled scales, kernels 5/9/17 strides 2/4/8
  plus a global mean, summed with the unpooled branch and refined together by one grouped 3x3);
- **P** (proportional, detail): stays at stride 8; after stages 3 and 4 the **Pag** module
  (pixel-attention-guided fusion) mixes in the I branch: ``sigma * I + (1 - sigma) * P``
  with ``sigma`` the sigmoid of the per-pixel dot product of their 1x1 embeddings;
- **D** (derivative, boundaries): stays at stride 8, adds strided I-branch features after
  stages 3 and 4 and feeds the **boundary head**.

The **Bag** fusion (here the light Bag of PIDNet-S/M: two 1x1 conv-BN) weights P against I
with the D branch's sigmoid (``sigma``): ``conv_p((1 - sigma) * I + P) + conv_i(I + sigma * P)``.

Training outputs (``aux=True``): ``out`` (loss weight 1.0), ``p`` (the P-branch head after
stage 3; 0.4), ``boundary`` (the boundary head's (B, 1, H, W) logits; kind ``boundary``,
20.0) and ``out_bas``: **the same tensor as** ``out``, declared a second time with kind
``boundary_seg`` (1.0) so that the boundary-aware cross-entropy (CE on the pixels where
``sigmoid(boundary) > 0.8``) has its own output name and weight.  As in the reference code,
effseg's criterion scores ``p`` with plain CE and ``out`` / ``out_bas`` with the run's loss (OHEM
in the published recipe).

The PAPPM pools, then applies BN-ReLU-conv (``pool_order="pool_bn"``, the official order; see
:mod:`effseg.models.realtime.ddrnet` for batch-1 training and the earlier ``bn_pool`` order); the
global branch is ``torch.mean``.  The outputs are upsampled to the input size with
``align_corners=True`` (``align_corners``, default true), as the official recipe does
(``MODEL.ALIGN_CORNERS: True`` in its ``configs/default.py``); the resizes inside the network keep
``align_corners=False`` as there.  Models trained before these options existed are rebuilt with
``pool_order="bn_pool"`` and ``align_corners=False`` (:data:`LEGACY_OPTIONS`).
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
    RealtimeNet,
    init_weights,
    network_config,
    resize,
)
from effseg.models.realtime.ddrnet import (
    POOL_KERNELS,
    BasicBlock,
    Bottleneck,
    PooledBranch,
    SegHead,
    bn_relu_conv,
    make_layer,
    stem,
)

__all__ = ["LEGACY_OPTIONS", "PIDNet", "build_pidnet_s"]

#: option values for a model config stored before the options existed (effseg's first PIDNet).
LEGACY_OPTIONS = {"pool_order": "bn_pool", "align_corners": False}


class PAPPM(nn.Module):
    """Parallel aggregation PPM: (B, cin, h, w) -> (B, cout, h, w); see the module docstring."""

    def __init__(self, cin: int, branch: int, cout: int, pool_order: str = "pool_bn") -> None:
        super().__init__()
        n = len(POOL_KERNELS)
        self.scale0 = bn_relu_conv(cin, branch)
        self.scales = nn.ModuleList(PooledBranch(cin, branch, k, pool_order) for k in POOL_KERNELS)
        self.scale_process = bn_relu_conv(branch * n, branch * n, 3, groups=n)
        self.compression = bn_relu_conv(branch * (n + 1), cout)
        self.shortcut = bn_relu_conv(cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        x0 = self.scale0(x)
        pooled = torch.cat([resize(scale(x), size) + x0 for scale in self.scales], dim=1)
        return self.compression(torch.cat([x0, self.scale_process(pooled)], dim=1)) + self.shortcut(x)


class Pag(nn.Module):
    """Pixel-attention-guided fusion of P (B, C, h, w) with a coarser I map (B, C, h', w') -> (B, C, h, w)."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.f_p = conv_bn(channels, mid, 1)
        self.f_i = conv_bn(channels, mid, 1)

    def forward(self, p: Tensor, i: Tensor) -> Tensor:
        size = p.shape[-2:]
        sigma = torch.sigmoid((self.f_p(p) * resize(self.f_i(i), size)).sum(dim=1, keepdim=True))
        return (1 - sigma) * p + sigma * resize(i, size)


class Bag(nn.Module):
    """Light boundary-attention-guided fusion of P, I and D maps (same size) -> (B, cout, h, w)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_p = conv_bn(cin, cout, 1)
        self.conv_i = conv_bn(cin, cout, 1)

    def forward(self, p: Tensor, i: Tensor, d: Tensor) -> Tensor:
        sigma = torch.sigmoid(d)
        return self.conv_p((1 - sigma) * i + p) + self.conv_i(i + sigma * p)


class PIDNet(RealtimeNet):
    """PIDNet (S/M widths, m=2 n=3); see the module docstring."""

    head_names = ("final_layer", "p_head", "boundary_head")
    aux_losses = {
        "p": LossTerm(0.4),
        "boundary": LossTerm(20.0, "boundary"),
        "out_bas": LossTerm(1.0, "boundary_seg"),
    }
    max_stride = 64

    def __init__(self, config: Mapping[str, Any]) -> None:
        """``config``: :func:`build_pidnet_s`'s checked options (its signature holds the defaults)."""
        super().__init__(config)
        self.output_align_corners = config["align_corners"]
        p, num_classes, head_planes = config["planes"], config["num_classes"], config["head_planes"]
        m, n = 2, 3  # blocks per stage of PIDNet-S/M
        # I branch
        self.conv1 = stem(p)
        self.layer1 = make_layer(BasicBlock, p, p, m)
        self.layer2 = make_layer(BasicBlock, p, 2 * p, m, stride=2)
        self.layer3 = make_layer(BasicBlock, 2 * p, 4 * p, n, stride=2)
        self.layer4 = make_layer(BasicBlock, 4 * p, 8 * p, n, stride=2)
        self.layer5 = make_layer(Bottleneck, 8 * p, 8 * p, 2, stride=2)
        self.spp = PAPPM(16 * p, config["ppm_planes"], 4 * p, config["pool_order"])
        # P branch
        self.compression3 = conv_bn(4 * p, 2 * p, 1)
        self.compression4 = conv_bn(8 * p, 2 * p, 1)
        self.pag3 = Pag(2 * p, p)
        self.pag4 = Pag(2 * p, p)
        self.layer3_ = make_layer(BasicBlock, 2 * p, 2 * p, m)
        self.layer4_ = make_layer(BasicBlock, 2 * p, 2 * p, m)
        self.layer5_ = make_layer(Bottleneck, 2 * p, 2 * p, 1)
        # D branch
        self.layer3_d = BasicBlock(2 * p, p, relu=False)
        self.layer4_d = make_layer(Bottleneck, p, p, 1)
        self.layer5_d = make_layer(Bottleneck, 2 * p, 2 * p, 1)
        self.diff3 = conv_bn(4 * p, p, 3)
        self.diff4 = conv_bn(8 * p, 2 * p, 3)
        self.dfm = Bag(4 * p, 4 * p)
        # heads
        self.final_layer = SegHead(4 * p, head_planes, num_classes)
        self.p_head = SegHead(2 * p, head_planes, num_classes) if self.aux else None
        self.boundary_head = SegHead(2 * p, p, 1) if self.aux else None
        init_weights(self)

    def _aux_modules(self) -> tuple[str, ...]:
        return ("p_head", "boundary_head")

    def _logits(self, x: Tensor) -> dict[str, Tensor]:
        x = self.layer1(self.conv1(x))
        x = torch.relu(self.layer2(torch.relu(x)))  # stride 8
        size = x.shape[-2:]
        p = self.layer3_(x)
        d = self.layer3_d(x)
        i = torch.relu(self.layer3(x))  # stride 16
        p = self.pag3(p, self.compression3(i))
        d = d + resize(self.diff3(i), size)
        p_out = p
        i = torch.relu(self.layer4(i))  # stride 32
        p = self.layer4_(torch.relu(p))
        d = self.layer4_d(torch.relu(d))
        p = self.pag4(p, self.compression4(i))
        d = d + resize(self.diff4(i), size)
        d_out = d
        p = self.layer5_(torch.relu(p))
        d = self.layer5_d(torch.relu(d))
        i = resize(self.spp(self.layer5(i)), size)  # stride 64 -> 8
        out = {"out": self.final_layer(self.dfm(p, i, d))}
        if self.with_aux and self.p_head is not None and self.boundary_head is not None:
            out["p"] = self.p_head(p_out)
            out["boundary"] = self.boundary_head(d_out)
        return out


def build_pidnet_s(
    num_classes: int = 19,
    aux: bool = True,
    planes: int = 32,
    ppm_planes: int = 96,
    head_planes: int = 128,
    pool_order: str = "pool_bn",
    align_corners: bool = True,
) -> PIDNet:
    """PIDNet-S (7.63M inference parameters at 19 classes).

    ``aux``: build the P-branch and boundary heads (training only); ``planes``: base width
    (32; PIDNet-M: 64); ``ppm_planes``: PAPPM branch width (96); ``head_planes``: head width (128);
    ``pool_order``: ``pool_bn`` (official) or ``bn_pool`` (effseg's earlier order);
    ``align_corners``: the final bilinear resize's ``align_corners`` (official: true).
    """
    return PIDNet(network_config("pidnet_s", build_pidnet_s, locals(), {"pool_order": POOL_ORDERS}))
