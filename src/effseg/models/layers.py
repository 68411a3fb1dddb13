"""Shared building blocks: convolution -> BatchNorm -> activation, written once.

:class:`ConvBNAct` is torchvision's ``Conv2dNormActivation``: an ``nn.Sequential`` whose
children are ``0`` (bias-free conv with "same" padding), ``1`` (BatchNorm) and ``2`` (the
activation, absent for ``activation=None``), so torchvision checkpoints load by key. Where a
block sits inside a larger ``nn.Sequential`` whose keys must not change (a head's
``block.0/1/2/3``), unpack it: ``nn.Sequential(*ConvBNAct(...), nn.Dropout(p), ...)``.

The Segmentor family and the real-time networks (:mod:`effseg.models.realtime`) both build their
conv-BN(-ReLU) units here; the real-time networks' former private ``conv_bn`` / ``conv_bn_relu``
made the same ``nn.Sequential`` of children ``0`` / ``1`` (/ ``2``), so their checkpoints load
unchanged (the key map is the identity; ``tests/models/test_layers.py`` checks it).
"""

from __future__ import annotations

from torch import nn

__all__ = ["ConvBNAct", "conv_bn"]


class ConvBNAct(nn.Sequential):
    """``Conv2d(bias=False)`` -> ``BatchNorm2d`` [-> ``activation(inplace=True)``].

    Input (B, cin, H, W) -> (B, cout, ceil(H / stride), ceil(W / stride)): padding is
    ``(kernel_size - 1) // 2 * dilation`` (odd kernels keep the size at stride 1).
    ``out_channels`` is ``cout``.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        activation: type[nn.Module] | None = nn.ReLU,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = cout


def conv_bn(
    cin: int, cout: int, kernel_size: int = 1, stride: int = 1, groups: int = 1, dilation: int = 1
) -> ConvBNAct:
    """``Conv2d(bias=False)`` -> ``BatchNorm2d`` without activation (projections, ResNet downsample,
    the real-time networks' conv-BN units): keys ``0`` / ``1``."""
    return ConvBNAct(cin, cout, kernel_size, stride, groups, dilation, activation=None)
