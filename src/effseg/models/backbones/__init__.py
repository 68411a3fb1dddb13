"""Backbones: ``build_backbone(name, output_stride, ...)`` -> module returning a feature dict."""

from __future__ import annotations

from torch import nn

from effseg.errors import ModelError
from effseg.models.backbones.mobilenetv2 import MobileNetV2
from effseg.models.backbones.mobilenetv3 import MobileNetV3
from effseg.models.backbones.resnet import ResNet

BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "mobilenetv2",
    "mobilenetv3_large",
    "mobilenetv3_small",
)


def build_backbone(
    name: str,
    output_stride: int = 8,
    width_mult: float = 1.0,
    classifier: bool = False,
    reduced_tail: bool = False,
) -> nn.Module:
    """Build a backbone by name; ``classifier=True`` attaches torchvision's ImageNet classifier.

    ``reduced_tail=True`` (MobileNetV3 only) halves the last stage's channels.

    The module's ``forward(x)`` returns ``{"low", "aux", "out"}`` feature maps; it has
    ``out_channels: dict[str, int]`` and ``output_stride: int`` (checked by
    :class:`~effseg.models.contract.Backbone`, the base of every backbone).
    """
    if name not in BACKBONES:
        raise ModelError(f"unknown backbone {name!r}; expected one of: {', '.join(BACKBONES)}")
    if reduced_tail and not name.startswith("mobilenetv3"):
        raise ModelError(f"reduced_tail=true is only supported by the MobileNetV3 backbones, not {name!r}")
    if name.startswith("resnet"):
        if width_mult != 1.0:
            raise ModelError(f"width_mult={width_mult!r} is only supported by the MobileNet backbones")
        return ResNet(name, output_stride=output_stride, classifier=classifier)
    if name == "mobilenetv2":
        return MobileNetV2(output_stride=output_stride, width_mult=width_mult, classifier=classifier)
    return MobileNetV3(
        name.split("_")[1],
        output_stride,
        width_mult=width_mult,
        classifier=classifier,
        reduced_tail=reduced_tail,
    )


__all__ = ["BACKBONES", "MobileNetV2", "MobileNetV3", "ResNet", "build_backbone"]
