"""MobileNetV2 at output stride 8 with torchvision's parameter names.

``features.0`` ... ``features.17`` are torchvision's layers (``features.18``, the
1280-channel conv, and ``classifier`` exist only with ``classifier=True``).
The main feature is the 320-channel block (no 1280 conv), the auxiliary one
the 96-channel block, the low-level one the 32-channel block (1/8).

Dilation (torchvision has none for MobileNetV2) follows the a-trous rule of
the dilated ResNets: the block that loses its stride keeps the previous
dilation in its depthwise conv, the following blocks use the new one.
"""

from __future__ import annotations

from torch import Tensor, nn

from effseg.errors import ModelError
from effseg.models.contract import Backbone
from effseg.models.layers import ConvBNAct

__all__ = ["ConvBNAct", "InvertedResidual", "MobileNetV2", "init_mobilenet_weights", "make_divisible"]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: round channels to a multiple of ``divisor``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:  # do not round down by more than 10%
        new_v += divisor
    return new_v


class InvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block: keys ``conv.0`` ... ``conv.3``."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(inp, hidden, kernel_size=1, activation=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, stride=stride, groups=hidden, dilation=dilation, activation=nn.ReLU6),
            *ConvBNAct(hidden, oup, 1, activation=None),  # keys conv.2 (conv), conv.3 (BN)
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# torchvision's inverted_residual_setting: expand ratio t, channels c, repeats n, stride s
_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


def init_mobilenet_weights(module: nn.Module) -> None:
    """torchvision's initialisation for MobileNetV2/V3 (fan-out Kaiming convs, unit BN, small linear)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class MobileNetBackbone(Backbone):
    """What MobileNetV2 and V3 share: ``features`` tapped by index (``_taps``: ``low``, ``aux``,
    ``out`` -> the layer whose output it is), their weight init, the classifier check."""

    features: nn.Sequential
    _taps: dict[str, int]

    def _init_weights(self) -> None:
        init_mobilenet_weights(self)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``{"low", "aux", "out"}``; stops at the ``out`` layer (MobileNetV2's last 1280 conv only
        serves ImageNet classification)."""
        feats: dict[str, Tensor] = {}
        last = max(self._taps.values())
        for i, layer in enumerate(self.features):
            if i > last:
                break
            x = layer(x)
            for name, idx in self._taps.items():
                if idx == i:
                    feats[name] = x
        return {"low": feats["low"], "aux": feats["aux"], "out": feats["out"]}

    def _check_classifier(self) -> None:
        if not hasattr(self, "classifier"):
            name = type(self).__name__.lower()
            raise ModelError(f"{name} was built without its classifier; pass classifier=True")


class MobileNetV2(MobileNetBackbone):
    """MobileNetV2 feature extractor.

    ``forward(x)`` with ``x`` (B, 3, H, W) returns ``{"low": 32-ch block (1/8),
    "aux": 96-ch block, "out": 320-ch block}``, ``aux``/``out`` at
    ``1/output_stride`` (``aux`` at 1/16 for output stride 32).  Channels scale with
    ``width_mult`` as in torchvision.
    """

    def __init__(self, output_stride: int = 8, width_mult: float = 1.0, classifier: bool = False) -> None:
        super().__init__(output_stride)
        output_stride = self.output_stride
        if not width_mult > 0:
            raise ModelError(f"width_mult={width_mult!r} must be > 0")
        input_channel = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvBNAct(3, input_channel, stride=2, activation=nn.ReLU6)]
        current_stride, dilation = 2, 1
        self._taps: dict[str, int] = {}
        for t, c, n, s in _SETTING:
            output_channel = make_divisible(c * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                block_dilation = dilation
                if stride > 1 and current_stride >= output_stride:
                    # replace the stride by dilation: this block keeps the previous
                    # dilation, the next ones use the new one (a-trous rule)
                    dilation *= stride
                    stride = 1
                elif stride > 1:
                    current_stride *= stride
                layers.append(InvertedResidual(input_channel, output_channel, stride, t, block_dilation))
                input_channel = output_channel
            self._taps[{32: "low", 96: "aux", 320: "out"}.get(c, "")] = len(layers) - 1
        self._taps.pop("", None)
        self.pretrained_ignore: tuple[str, ...] = (f"features.{len(layers)}.", "classifier.")
        last_channel = make_divisible(1280 * max(1.0, width_mult))
        if classifier:
            layers.append(ConvBNAct(input_channel, last_channel, kernel_size=1, activation=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        if classifier:  # registered after features, as in torchvision (same state_dict order)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last_channel, 1000))
            self.pretrained_ignore = ()
        self.out_channels = {k: self.features[i].out_channels for k, i in self._taps.items()}
        self._init_weights()

    def classify(self, x: Tensor) -> Tensor:
        """ImageNet logits (B, 1000); needs ``classifier=True``."""
        self._check_classifier()
        x = self.features[-1](self.forward(x)["out"])
        return self.classifier(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


def mobilenetv2(output_stride: int = 8, width_mult: float = 1.0, classifier: bool = False) -> MobileNetV2:
    """Build MobileNetV2 (320-ch main feature at ``1/output_stride``)."""
    return MobileNetV2(output_stride=output_stride, width_mult=width_mult, classifier=classifier)
