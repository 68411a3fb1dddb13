"""MobileNetV3-Large/-Small (h-swish, squeeze-excitation) with torchvision's names.

Layout, keys and shapes are torchvision's ``mobilenet_v3_large``/``_small``
(``features.N.block.M...``, SE as ``fc1``/``fc2`` 1x1 convs with a hard-sigmoid
gate, BatchNorm eps 0.001 / momentum 0.01).  Dilation follows torchvision's
``dilated=True``: a block that would reduce the resolution below
``1/output_stride`` loses its stride and it and every later block use the
doubled dilation in their depthwise conv; output stride 16 is exactly
torchvision's ``dilated=True``, output stride 8 extends the same rule to the
1/16 stage.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from effseg.errors import ModelError
from effseg.models.backbones.mobilenetv2 import MobileNetBackbone, make_divisible
from effseg.models.layers import ConvBNAct


class SqueezeExcitation(nn.Module):
    """torchvision's ``SqueezeExcitation`` with ReLU and hard-sigmoid (MobileNetV3 paper)."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = nn.ReLU(inplace=True)
        self.scale_activation = nn.Hardsigmoid(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        s = self.fc2(self.activation(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * self.scale_activation(s)


class BlockConf(NamedTuple):
    cin: int
    kernel: int
    expanded: int
    cout: int
    use_se: bool
    use_hs: bool
    stride: int


# torchvision's _mobilenet_v3_conf tables (width 1.0, reduced_tail=False).
_LARGE = [
    BlockConf(16, 3, 16, 16, False, False, 1),
    BlockConf(16, 3, 64, 24, False, False, 2),  # C1, 1/4
    BlockConf(24, 3, 72, 24, False, False, 1),
    BlockConf(24, 5, 72, 40, True, False, 2),  # C2, 1/8
    BlockConf(40, 5, 120, 40, True, False, 1),
    BlockConf(40, 5, 120, 40, True, False, 1),
    BlockConf(40, 3, 240, 80, False, True, 2),  # C3, 1/16
    BlockConf(80, 3, 200, 80, False, True, 1),
    BlockConf(80, 3, 184, 80, False, True, 1),
    BlockConf(80, 3, 184, 80, False, True, 1),
    BlockConf(80, 3, 480, 112, True, True, 1),
    BlockConf(112, 3, 672, 112, True, True, 1),
    BlockConf(112, 5, 672, 160, True, True, 2),  # C4, 1/32
    BlockConf(160, 5, 960, 160, True, True, 1),
    BlockConf(160, 5, 960, 160, True, True, 1),
]
_SMALL = [
    BlockConf(16, 3, 16, 16, True, False, 2),  # C1, 1/4
    BlockConf(16, 3, 72, 24, False, False, 2),  # C2, 1/8
    BlockConf(24, 3, 88, 24, False, False, 1),
    BlockConf(24, 5, 96, 40, True, True, 2),  # C3, 1/16
    BlockConf(40, 5, 240, 40, True, True, 1),
    BlockConf(40, 5, 240, 40, True, True, 1),
    BlockConf(40, 5, 120, 48, True, True, 1),
    BlockConf(48, 5, 144, 48, True, True, 1),
    BlockConf(48, 5, 288, 96, True, True, 2),  # C4, 1/32
    BlockConf(96, 5, 576, 96, True, True, 1),
    BlockConf(96, 5, 576, 96, True, True, 1),
]
# name -> (blocks, last conv channels (6x the last block), classifier hidden size)
_VARIANTS = {"large": (_LARGE, 960, 1280), "small": (_SMALL, 576, 1024)}


def _reduce_tail(confs: list[BlockConf]) -> list[BlockConf]:
    """The paper's optional "reduced tail" (torchvision's ``reduced_tail=True``): the channels
    of the last stage (its three blocks' outputs and the two later blocks' expansions) halved."""
    first, second, third = confs[-3:]
    first = first._replace(cout=first.cout // 2)
    rest = [c._replace(cin=c.cin // 2, expanded=c.expanded // 2, cout=c.cout // 2) for c in (second, third)]
    return [*confs[:-3], first, *rest]


_BN = {"bn_eps": 0.001, "bn_momentum": 0.01}


class InvertedResidual(nn.Module):
    """torchvision's MobileNetV3 block: ``block.0`` expand, ``block.1`` depthwise, [SE], project."""

    def __init__(self, cnf: BlockConf, width_mult: float, stride: int, dilation: int) -> None:
        super().__init__()
        cin, exp, cout = (make_divisible(c * width_mult) for c in (cnf.cin, cnf.expanded, cnf.cout))
        act = nn.Hardswish if cnf.use_hs else nn.ReLU
        # as torchvision: the residual depends on the configured stride, not the dilated one
        self.use_res_connect = cnf.stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(ConvBNAct(cin, exp, 1, activation=act, **_BN))
        layers.append(
            ConvBNAct(
                exp, exp, cnf.kernel, stride=stride, groups=exp, dilation=dilation, activation=act, **_BN
            )
        )
        if cnf.use_se:
            layers.append(SqueezeExcitation(exp, make_divisible(exp // 4)))
        layers.append(ConvBNAct(exp, cout, 1, activation=None, **_BN))
        self.block = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.use_res_connect else self.block(x)


class MobileNetV3(MobileNetBackbone):
    """MobileNetV3 feature extractor (``variant`` ``"large"`` or ``"small"``).

    ``forward(x)`` with ``x`` (B, 3, H, W) returns
    ``{"low": last 1/8 block (40 / 24 ch), "aux": last 1/16 block (112 / 48 ch),
    "out": last 1x1 conv (960 / 576 ch)}``; ``out`` is at ``1/output_stride``,
    ``aux`` at ``1/min(output_stride, 16)``.  ``reduced_tail=True`` halves the last
    stage (Large: 160 -> 80 channels per block, ``out`` 960 -> 480; Small: 96 -> 48,
    576 -> 288), the paper's segmentation variant ("RF2"); torchvision publishes no ImageNet
    weights for it, so :func:`effseg.models.load_pretrained` skips that stage (``pretrained_partial``).
    """

    def __init__(
        self,
        variant: str = "large",
        output_stride: int = 8,
        width_mult: float = 1.0,
        classifier: bool = False,
        reduced_tail: bool = False,
    ) -> None:
        super().__init__(output_stride)
        if variant not in _VARIANTS:
            raise ModelError(f"unknown MobileNetV3 variant {variant!r}; expected 'large' or 'small'")
        output_stride = self.output_stride
        if not width_mult > 0:
            raise ModelError(f"width_mult={width_mult!r} must be > 0")
        if not isinstance(reduced_tail, bool):
            raise ModelError(f"reduced_tail={reduced_tail!r}: expected true or false")
        self.variant = variant
        self.reduced_tail = reduced_tail
        confs, last_conv, hidden = _VARIANTS[variant]
        if reduced_tail:  # last conv stays 6x the last block's width, as in torchvision
            confs, last_conv, hidden = _reduce_tail(confs), last_conv // 2, hidden // 2
        layers: list[nn.Module] = [
            ConvBNAct(3, make_divisible(16 * width_mult), 3, stride=2, activation=nn.Hardswish, **_BN)
        ]
        nominal, current_stride, dilation = 2, 2, 1  # nominal: resolution without dilation
        self._taps: dict[str, int] = {}
        for cnf in confs:
            stride = cnf.stride
            if stride > 1:
                # the previous block closes the stage at nominal stride 8 ("low") or 16 ("aux")
                if nominal in (8, 16):
                    self._taps["low" if nominal == 8 else "aux"] = len(layers) - 1
                nominal *= stride
                if current_stride >= output_stride:
                    dilation *= stride  # torchvision's dilated=True: this block uses the new dilation
                    stride = 1
                else:
                    current_stride *= stride
            layers.append(InvertedResidual(cnf, width_mult, stride, dilation))
        last_in = layers[-1].out_channels
        last_out = make_divisible(last_conv * width_mult)
        layers.append(ConvBNAct(last_in, last_out, 1, activation=nn.Hardswish, **_BN))
        self._taps["out"] = len(layers) - 1
        self.features = nn.Sequential(*layers)
        self.out_channels = {k: self.features[i].out_channels for k, i in self._taps.items()}
        self.pretrained_ignore: tuple[str, ...] = ("classifier.",)
        # reduced tail: the last stage's shapes differ from every published checkpoint; those
        # layers keep their initialisation (load_pretrained says so) instead of failing the load.
        tail_start = self._taps["aux"] + 1
        self.pretrained_partial: tuple[str, ...] = (
            tuple(f"features.{i}." for i in range(tail_start, len(layers))) if reduced_tail else ()
        )
        if classifier:
            self.classifier = nn.Sequential(
                nn.Linear(last_out, hidden),
                nn.Hardswish(inplace=True),
                nn.Dropout(0.2, inplace=True),
                nn.Linear(hidden, 1000),
            )
            self.pretrained_ignore = ()
        self._init_weights()

    def classify(self, x: Tensor) -> Tensor:
        """ImageNet logits (B, 1000); needs ``classifier=True``."""
        self._check_classifier()
        return self.classifier(F.adaptive_avg_pool2d(self.forward(x)["out"], 1).flatten(1))


def mobilenetv3(
    variant: str = "large",
    output_stride: int = 8,
    width_mult: float = 1.0,
    classifier: bool = False,
    reduced_tail: bool = False,
) -> MobileNetV3:
    """Build MobileNetV3-Large or -Small dilated to ``output_stride``."""
    return MobileNetV3(
        variant,
        output_stride=output_stride,
        width_mult=width_mult,
        classifier=classifier,
        reduced_tail=reduced_tail,
    )
