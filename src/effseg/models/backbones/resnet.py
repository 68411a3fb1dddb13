"""Dilated ResNet-18/34/50/101 with torchvision's parameter names.

The layout (``conv1, bn1, layer1.0.conv1 ... layerN.0.downsample.0/1, fc``) and
every shape are torchvision's, so an ImageNet state dict saved by torchvision
loads with strict key checking.  Dilation follows torchvision's
``replace_stride_with_dilation``: the first block of a dilated stage keeps the
previous dilation and loses its stride, the following blocks use the new
dilation (output stride 8: 2 in layer3, 4 in layer4).
"""

from __future__ import annotations

from torch import Tensor, nn

from effseg.errors import ModelError
from effseg.models.contract import Backbone
from effseg.models.layers import conv_bn

# name -> (block type, blocks per stage); torchvision's resnet18/34/50/101.
RESNET_SPECS: dict[str, tuple[str, list[int]]] = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
}

# output stride -> torchvision's replace_stride_with_dilation for layer2..4
_DILATE = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups, bias=False
    )


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, dilated.

    torchvision refuses ``dilation > 1`` here; we dilate it like the a-trous
    algorithm: ``conv1`` (the convolution that lost its stride) keeps
    ``dilation`` (the previous one for a stage's first block) and ``conv2``,
    which in the strided network ran on the downsampled grid, uses
    ``next_dilation`` (the stage's new dilation).  For later blocks both are
    equal.  Given the same weights this is the stride-2 network evaluated
    densely.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
        next_dilation: int | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, next_dilation or dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: the stride sits on the 3x3 ``conv2``)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
        next_dilation: int | None = None,  # unused: conv3 is 1x1; kept for a uniform signature
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """Dilated ResNet returning a feature dict.

    ``forward(x)`` with ``x`` (B, 3, H, W) returns
    ``{"low": layer2 (1/8), "aux": layer3, "out": layer4}``; ``aux`` and ``out``
    are at ``1/output_stride`` (``aux`` at 1/16 when ``output_stride`` is 32).
    ``out_channels``: 128/256/512 (BasicBlock) or 512/1024/2048 (Bottleneck).

    ``classifier=True`` attaches torchvision's ``avgpool`` + ``fc`` (1000 classes)
    so the parameter count equals torchvision's published one; ``forward``
    ignores it (``classify`` uses it).
    """

    def __init__(self, name: str = "resnet18", output_stride: int = 8, classifier: bool = False) -> None:
        super().__init__(output_stride)
        if name not in RESNET_SPECS:
            raise ModelError(f"unknown ResNet {name!r}; expected one of {sorted(RESNET_SPECS)}")
        output_stride = self.output_stride
        kind, layers = RESNET_SPECS[name]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.name = name
        self.inplanes = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        dilate = _DILATE[output_stride]
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=dilate[2])
        e = block.expansion
        self.out_channels = {"low": 128 * e, "aux": 256 * e, "out": 512 * e}
        self.pretrained_ignore: tuple[str, ...] = ("fc.",)
        if classifier:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512 * e, 1000)
            self.pretrained_ignore = ()
        self._init_weights()

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1, dilate: bool = False):
        # torchvision's _make_layer, plus next_dilation so BasicBlock can dilate conv2.
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = conv_bn(self.inplanes, planes * block.expansion, 1, stride)  # keys 0, 1
        layers = [block(self.inplanes, planes, stride, downsample, previous_dilation, self.dilation)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, dilation=self.dilation, next_dilation=self.dilation))
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision's initialisation (used when no ImageNet weights are loaded).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer2(self.layer1(x))
        aux = self.layer3(low)
        out = self.layer4(aux)
        return {"low": low, "aux": aux, "out": out}

    def classify(self, x: Tensor) -> Tensor:
        """ImageNet logits (B, 1000); needs ``classifier=True``."""
        if not hasattr(self, "fc"):
            raise ModelError(f"{self.name} was built without its classifier; pass classifier=True")
        return self.fc(self.avgpool(self.forward(x)["out"]).flatten(1))


def resnet(name: str = "resnet18", output_stride: int = 8, classifier: bool = False) -> ResNet:
    """Build a dilated ResNet (``resnet18``/``34``/``50``/``101``)."""
    return ResNet(name, output_stride=output_stride, classifier=classifier)
