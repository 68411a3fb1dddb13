"""RegSeg (Gao, "Rethink Dilated Convolution for Real-time Semantic Segmentation", arXiv:2111.09957),
written from the paper; widths and dilations checked against RolandGao/RegSeg's ``blocks.py``
(``RegSegBody`` with the ``exp48`` dilations and ``Exp2_Decoder26``; read, not copied).

- Stem: a stride-2 3x3 conv-BN-ReLU (32 channels).
- Body: :class:`DBlock` everywhere (the paper's **D block**, a RegNet Y block whose grouped 3x3
  conv is split into dilation branches): 1x1 conv-BN-ReLU -> grouped 3x3 conv (group width 16;
  with two dilations the channels are split in two halves, one dilation each) -> BN-ReLU ->
  squeeze-excitation (global mean -> 1x1 -> ReLU -> 1x1 -> sigmoid; no BatchNorm) -> 1x1
  conv-BN -> add the shortcut (2x2 average pool + 1x1 conv-BN when it strides) -> ReLU.
  Stages: stride 4 (1 block, 48 channels), stride 8 (3 blocks, 128), stride 16 (14 blocks,
  256 then 320) with dilations (1), (1), (1,2), (1,4) x4, (1,14) x7.
- :class:`Decoder`: 1x1 conv-BN-ReLU of the stride-16 (128), stride-8 (128) and stride-4 (8)
  maps; stride-16 upsampled and added at stride 8, a 3x3 conv-BN-ReLU (64), upsampled and
  concatenated at stride 4, a 3x3 conv-BN-ReLU (64), a 1x1 classifier.

RegSeg has no auxiliary output (the paper trains with one cross-entropy): ``aux`` is accepted
for a uniform registry and changes nothing; training outputs: ``out`` (weight 1.0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from effseg.errors import ModelError
from effseg.models.layers import ConvBNAct, conv_bn
from effseg.models.realtime._base import RealtimeNet, init_weights, network_config, resize

__all__ = ["RegSeg", "build_regseg", "DBlock", "REGSEG_DILATIONS"]

#: the stride-16 dilations of RegSeg (the paper's final model, ``exp48``): one entry per D block
#: after the strided one; the last block widens to 320 channels.
REGSEG_DILATIONS: tuple[tuple[int, ...], ...] = ((1,), (1, 2)) + ((1, 4),) * 4 + ((1, 14),) * 7


class SqueezeExcitation(nn.Module):
    """x * sigmoid(fc2(relu(fc1(mean_hw(x))))), 1x1 convs with bias; (B, C, H, W) -> same shape."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = torch.mean(x, dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class DilatedGroupConv(nn.Module):
    """Grouped 3x3 conv whose channels are split in ``len(dilations)`` equal parts, one dilation
    each, then BatchNorm: (B, C, H, W) -> (B, C, H/stride, W/stride).

    Each part has its own BatchNorm (per-channel, so the same as one BatchNorm after the
    concatenation, with the same parameters), so that every BatchNorm folds into its conv.
    """

    def __init__(self, channels: int, dilations: Sequence[int], group_width: int, stride: int) -> None:
        super().__init__()
        part = channels // len(dilations)
        self.splits = [part] * len(dilations)
        self.convs = nn.ModuleList(
            conv_bn(part, part, 3, stride, groups=part // group_width, dilation=d) for d in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        parts = torch.split(x, self.splits, dim=1)
        return torch.cat([conv(t) for conv, t in zip(self.convs, parts, strict=True)], dim=1)


class DBlock(nn.Module):
    """RegSeg's D block: (B, cin, H, W) -> (B, cout, H/stride, W/stride); see the module docstring."""

    def __init__(
        self, cin: int, cout: int, dilations: Sequence[int], group_width: int = 16, stride: int = 1
    ) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 1)
        self.conv2 = nn.Sequential(
            DilatedGroupConv(cout, dilations, group_width, stride), nn.ReLU(inplace=True)
        )
        self.se = SqueezeExcitation(cout, cin // 4)
        self.conv3 = conv_bn(cout, cout, 1)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            pool: nn.Module = nn.AvgPool2d(2, 2, ceil_mode=True) if stride != 1 else nn.Identity()
            self.shortcut = nn.Sequential(pool, *conv_bn(cin, cout, 1))

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv3(self.se(self.conv2(self.conv1(x))))
        return torch.relu(out + self.shortcut(x))


class Decoder(nn.Module):
    """RegSeg's decoder (``Decoder26``): stride-4/8/16 maps -> logits (B, num_classes, H/4, W/4)."""

    def __init__(self, channels: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c4, c8, c16 = channels
        self.head16 = ConvBNAct(c16, 128, 1)
        self.head8 = ConvBNAct(c8, 128, 1)
        self.head4 = ConvBNAct(c4, 8, 1)
        self.conv8 = ConvBNAct(128, 64)
        self.conv4 = ConvBNAct(64 + 8, 64)
        self.classifier = nn.Conv2d(64, num_classes, 1)

    def forward(self, x4: Tensor, x8: Tensor, x16: Tensor) -> Tensor:
        x8 = self.head8(x8) + resize(self.head16(x16), x8.shape[-2:])
        x8 = resize(self.conv8(x8), x4.shape[-2:])
        return self.classifier(self.conv4(torch.cat([x8, self.head4(x4)], dim=1)))


class RegSeg(RealtimeNet):
    """RegSeg; see the module docstring.  Training outputs: ``out`` only."""

    head_names = ("decoder",)
    aux_losses = {}
    max_stride = 16

    def __init__(self, config: Mapping[str, Any]) -> None:
        """``config``: :func:`build_regseg`'s checked options (its signature holds the defaults)."""
        super().__init__(config)
        gw, dilations = config["group_width"], [tuple(d) for d in config["dilations"]]
        self.stem = ConvBNAct(3, 32, 3, 2)
        self.stage4 = DBlock(32, 48, (1,), gw, 2)
        self.stage8 = nn.Sequential(
            DBlock(48, 128, (1,), gw, 2), DBlock(128, 128, (1,), gw), DBlock(128, 128, (1,), gw)
        )
        self.stage16 = nn.Sequential(
            DBlock(128, 256, (1,), gw, 2),
            *(DBlock(256, 256, d, gw) for d in dilations[:-1]),
            DBlock(256, 320, dilations[-1], gw),
        )
        self.decoder = Decoder((48, 128, 320), config["num_classes"])
        init_weights(self)

    def _logits(self, x: Tensor) -> dict[str, Tensor]:
        x4 = self.stage4(self.stem(x))
        x8 = self.stage8(x4)
        return {"out": self.decoder(x4, x8, self.stage16(x8))}


def build_regseg(
    num_classes: int = 19,
    aux: bool = True,
    dilations: Sequence[Sequence[int]] | None = None,
    group_width: int = 16,
) -> RegSeg:
    """RegSeg (3.33M parameters at 19 classes; published: 3.34M).

    ``aux``: accepted, unused (RegSeg has no auxiliary head); ``dilations``: one list of
    dilation rates per stride-16 D block after the strided one (default
    :data:`REGSEG_DILATIONS`; 1 or 2 rates each); ``group_width``: channels per group of
    the 3x3 convs (16).
    """
    config = network_config("regseg", build_regseg, locals())
    gw = config["group_width"]
    dil = config["dilations"] = _check_dilations(REGSEG_DILATIONS if dilations is None else dilations)
    for width, parts in [(48, 1), (128, 1)] + [(w, len(d)) for w in (256, 320) for d in dil]:
        if (width // parts) % gw:
            raise ModelError(
                f"regseg option group_width={gw}: must divide {width // parts} (channels per branch)"
            )
    return RegSeg(config)


def _check_dilations(value: Any) -> list[list[int]]:
    """``value`` as a non-empty list of lists of 1 or 2 positive integers, else a :class:`ModelError`."""

    def rate_ok(r: Any) -> bool:
        return isinstance(r, int) and not isinstance(r, bool) and r >= 1

    ok = isinstance(value, list | tuple) and len(value) > 0
    ok = ok and all(isinstance(d, list | tuple) and 1 <= len(d) <= 2 and all(map(rate_ok, d)) for d in value)
    if not ok:
        raise ModelError(
            f"regseg option dilations={value!r}: expected a non-empty list of lists of 1 or 2 integers >= 1"
        )
    return [[int(r) for r in d] for d in value]
