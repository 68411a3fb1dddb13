"""models/layers.py: the shared conv-norm-act block keeps torchvision's keys and sizes."""

from __future__ import annotations

import torch
from torch import nn

from effseg.models.layers import ConvBNAct, conv_bn


def test_conv_bn_act_layout_and_output_size() -> None:
    block = ConvBNAct(4, 6, 3, stride=2, dilation=1, activation=nn.ReLU6, bn_eps=1e-3, bn_momentum=0.01)
    assert list(block.state_dict()) == [
        "0.weight",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    assert block[0].bias is None and block[0].padding == (1, 1) and isinstance(block[2], nn.ReLU6)
    assert block[1].eps == 1e-3 and block[1].momentum == 0.01 and block.out_channels == 6
    assert block(torch.randn(2, 4, 9, 12)).shape == (2, 6, 5, 6)  # ceil(9 / 2), 12 / 2
    dilated = ConvBNAct(4, 4, 3, dilation=4)
    assert dilated[0].padding == (4, 4) and dilated(torch.randn(1, 4, 7, 5)).shape == (1, 4, 7, 5)
    proj = conv_bn(4, 8, 1, 2)
    assert len(proj) == 2 and proj[0].stride == (2, 2) and proj(torch.randn(1, 4, 7, 7)).shape == (1, 8, 4, 4)


def test_unpacked_into_a_sequential_keeps_flat_keys() -> None:
    head = nn.Sequential(*ConvBNAct(8, 4, 3), nn.Dropout(0.1), nn.Conv2d(4, 2, 1))
    assert [k for k in head.state_dict() if k.endswith("weight")] == ["0.weight", "1.weight", "4.weight"]


def test_real_time_networks_build_their_conv_bn_units_here() -> None:
    """One conv-BN-act block: the real-time networks' former private ``conv_bn`` / ``conv_bn_relu``
    are gone, and their units keep the keys ``0`` / ``1`` that their checkpoints hold (the shipped
    model loads unchanged: tests/test_official_checkpoints.py)."""
    import effseg.models.realtime._base as base
    from effseg.models import build_model

    assert not hasattr(base, "conv_bn") and not hasattr(base, "conv_bn_relu")
    model = build_model("ddrnet23_slim", num_classes=2, planes=8, spp_planes=8, head_planes=8)
    units = [m for m in model.modules() if isinstance(m, ConvBNAct)]
    assert len(units) == 38 and {type(u[1]) for u in units} == {nn.BatchNorm2d}  # every conv-BN pair
    keys = list(model.state_dict())
    assert "layer1.0.conv1.0.weight" in keys and "layer1.0.conv1.1.running_var" in keys
