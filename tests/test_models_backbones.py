"""Backbones: torchvision layout and parameter counts, output strides, dilation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from effseg.errors import ModelError
from effseg.models.backbones import BACKBONES, build_backbone


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: one thread is as fast, and on a loaded 2-core machine two OpenMP
    # threads spin-wait on each other (a training step measured 60x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "torchvision_keys.json").read_text())

# torchvision's published parameter counts (ImageNet classifier included)
PUBLISHED = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "mobilenetv2": 3_504_872,
    "mobilenetv3_large": 5_483_032,
    "mobilenetv3_small": 2_542_856,
}
TV_NAMES = {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "mobilenetv2": "mobilenet_v2",
    "mobilenetv3_large": "mobilenet_v3_large",
}
CHANNELS = {
    "resnet18": (128, 256, 512),
    "resnet34": (128, 256, 512),
    "resnet50": (512, 1024, 2048),
    "resnet101": (512, 1024, 2048),
    "mobilenetv2": (32, 96, 320),
    "mobilenetv3_large": (40, 112, 960),
    "mobilenetv3_small": (24, 48, 576),
}


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", BACKBONES)
def test_parameter_count_with_classifier_equals_torchvision(name: str) -> None:
    with torch.device("meta"):
        net = build_backbone(name, classifier=True)
    assert sum(p.numel() for p in net.parameters()) == PUBLISHED[name]


@pytest.mark.parametrize("name", sorted(TV_NAMES))
def test_state_dict_matches_torchvision_layout(name: str) -> None:
    expected = FIXTURE[TV_NAMES[name]]
    with torch.device("meta"):
        full = build_backbone(name, classifier=True)
        bare = build_backbone(name)
    assert _shapes(full) == expected
    assert list(full.state_dict()) == list(expected)  # same order too
    # without the classifier, exactly the keys load_pretrained keeps
    kept = {k: v for k, v in expected.items() if not k.startswith(bare.pretrained_ignore)}
    assert _shapes(bare) == kept
    dropped = set(expected) - set(kept)
    if name.startswith("resnet"):
        assert dropped == {"fc.weight", "fc.bias"}
    elif name == "mobilenetv2":  # classifier + the 1280-channel conv (main feature is the 320-ch block)
        assert {k.split(".")[0] + "." + k.split(".")[1] for k in dropped} == {"classifier.1", "features.18"}
    else:
        assert {k for k in dropped if not k.startswith("classifier.")} == set()


def test_fixture_is_consistent_with_published_counts() -> None:
    # the fixture was written by hand: its parameter shapes must add up to torchvision's counts
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    for ours, tv in TV_NAMES.items():
        total = sum(int(torch.Size(s).numel()) for k, s in FIXTURE[tv].items() if not k.endswith(buffers))
        assert total == PUBLISHED[ours], tv


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_feature_strides_and_channels(name: str, output_stride: int) -> None:
    with torch.device("meta"):
        net = build_backbone(name, output_stride=output_stride).eval()
        feats = net(torch.empty(2, 3, 256, 320))
    low, aux, out = CHANNELS[name]
    assert net.output_stride == output_stride
    assert net.out_channels == {"low": low, "aux": aux, "out": out}
    assert tuple(feats["out"].shape) == (2, out, 256 // output_stride, 320 // output_stride)
    aux_stride = min(output_stride, 16)
    assert tuple(feats["aux"].shape) == (2, aux, 256 // aux_stride, 320 // aux_stride)
    assert tuple(feats["low"].shape) == (2, low, 32, 40)


def test_main_feature_is_ceil_of_one_eighth_for_odd_sizes() -> None:
    net = build_backbone("resnet18").eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 97, 131))["out"]
    assert out.shape[-2:] == (13, 17)  # ceil(97 / 8), ceil(131 / 8)


def _dilations(layer: torch.nn.Sequential, conv: str) -> list[tuple[int, int]]:
    return [(getattr(b, conv).dilation[0], getattr(b, conv).stride[0]) for b in layer]


def test_resnet50_os8_dilation_follows_torchvision() -> None:
    with torch.device("meta"):
        net = build_backbone("resnet50", output_stride=8)
    assert _dilations(net.layer2, "conv2") == [(1, 2), (1, 1), (1, 1), (1, 1)]
    assert _dilations(net.layer3, "conv2") == [(1, 1)] + [(2, 1)] * 5
    assert _dilations(net.layer4, "conv2") == [(2, 1), (4, 1), (4, 1)]
    assert net.layer3[0].downsample[0].stride == (1, 1)
    assert net.layer4[0].downsample[0].stride == (1, 1)
    os16 = build_backbone("resnet50", output_stride=16)
    assert _dilations(os16.layer3, "conv2") == [(1, 2)] + [(1, 1)] * 5
    assert _dilations(os16.layer4, "conv2") == [(1, 1), (2, 1), (2, 1)]


def test_basicblock_is_dilated_too() -> None:
    with torch.device("meta"):
        net = build_backbone("resnet34", output_stride=8)
    # conv1 replaced the stride: keeps the previous dilation; conv2 and later blocks use the new one
    assert _dilations(net.layer3, "conv1") == [(1, 1)] + [(2, 1)] * 5
    assert _dilations(net.layer3, "conv2") == [(2, 1)] * 6
    assert _dilations(net.layer4, "conv1") == [(2, 1), (4, 1), (4, 1)]
    assert _dilations(net.layer4, "conv2") == [(4, 1)] * 3


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenetv2"])
def test_dilated_features_equal_the_strided_network_densely(name: str) -> None:
    """A-trous exactness: with the same weights, OS8 features sampled every 4th pixel equal OS32's.

    This is what makes an ImageNet checkpoint mean the same thing in the dilated network
    (and is the property of torchvision's replace_stride_with_dilation for ResNet-50/101).
    """
    torch.manual_seed(0)
    os32 = build_backbone(name, output_stride=32).eval()
    os8 = build_backbone(name, output_stride=8).eval()
    os8.load_state_dict(os32.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        dense, strided = os8(x), os32(x)
    torch.testing.assert_close(dense["out"][..., ::4, ::4], strided["out"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dense["aux"][..., ::2, ::2], strided["aux"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dense["low"], strided["low"])


def test_mobilenetv3_dilation_is_torchvision_dilated() -> None:
    def depthwise(net: torch.nn.Module, i: int) -> tuple[int, int]:
        conv = net.features[i].block[1][0]
        assert conv.groups == conv.in_channels
        return conv.dilation[0], conv.stride[0]

    with torch.device("meta"):
        os16 = build_backbone("mobilenetv3_large", output_stride=16)
        os8 = build_backbone("mobilenetv3_large", output_stride=8)
        small = build_backbone("mobilenetv3_small", output_stride=16)
    # torchvision dilated=True: the C4 blocks (features.13-15) use dilation 2, stride 1
    assert [depthwise(os16, i) for i in (7, 12, 13, 14, 15)] == [(1, 2), (1, 1), (2, 1), (2, 1), (2, 1)]
    assert [depthwise(os8, i) for i in (6, 7, 12, 13, 15)] == [(1, 1), (2, 1), (2, 1), (4, 1), (4, 1)]
    assert [depthwise(small, i) for i in (4, 8, 9, 11)] == [(1, 2), (1, 1), (2, 1), (2, 1)]
    # h-swish and squeeze-excitation where the paper has them
    assert isinstance(os8.features[0][2], torch.nn.Hardswish)
    assert isinstance(os8.features[1].block[0][2], torch.nn.ReLU)
    assert isinstance(os8.features[7].block[0][2], torch.nn.Hardswish)
    assert isinstance(os8.features[4].block[2].scale_activation, torch.nn.Hardsigmoid)


def test_width_multiplier() -> None:
    with torch.device("meta"):
        half = build_backbone("mobilenetv2", width_mult=0.5)
        wide = build_backbone("mobilenetv2", width_mult=1.4, classifier=True)
    assert half.out_channels == {"low": 16, "aux": 48, "out": 160}
    # torchvision's rounding to multiples of 8: 32*1.4=44.8 -> 48, 96*1.4=134.4 -> 136, 320*1.4 -> 448,
    # and the 1280 conv scales up too (1792) while never shrinking below 1280
    assert wide.out_channels == {"low": 48, "aux": 136, "out": 448}
    assert wide.features[18][0].weight.shape == (1792, 448, 1, 1)
    assert wide.classifier[1].weight.shape == (1000, 1792)
    with torch.device("meta"):
        assert (
            build_backbone("mobilenetv2", width_mult=0.5, classifier=True).classifier[1].in_features == 1280
        )
    with pytest.raises(ModelError, match="width_mult"):
        build_backbone("resnet18", width_mult=0.5)


def test_bad_backbone_arguments() -> None:
    with pytest.raises(ModelError, match="resnet18, resnet34"):
        build_backbone("resnet19")
    with pytest.raises(ModelError, match="output_stride=4"):
        build_backbone("mobilenetv2", output_stride=4)
    net = build_backbone("mobilenetv3_small")
    with pytest.raises(ModelError, match="classifier=True"):
        net.classify(torch.randn(1, 3, 32, 32))


def test_classify_gives_imagenet_logits() -> None:
    net = build_backbone("mobilenetv3_small", output_stride=32, classifier=True).eval()
    with torch.no_grad():
        assert net.classify(torch.randn(2, 3, 64, 64)).shape == (2, 1000)


def test_mobilenetv3_reduced_tail_follows_torchvision() -> None:
    # torchvision's _mobilenet_v3_conf(reduced_tail=True): the last three blocks output 160 // 2
    # (Large) / 96 // 2 (Small) channels, the two after the first expand 960 // 2 / 576 // 2,
    # the last conv gives 6x the last block, the classifier's hidden layer is 1280 // 2 / 1024 // 2.
    with torch.device("meta"):
        large = build_backbone("mobilenetv3_large", output_stride=16, classifier=True, reduced_tail=True)
        small = build_backbone("mobilenetv3_small", output_stride=16, classifier=True, reduced_tail=True)
        full = build_backbone("mobilenetv3_large", output_stride=16, classifier=True)
    assert large.out_channels == {"low": 40, "aux": 112, "out": 480}
    assert small.out_channels == {"low": 24, "aux": 48, "out": 288}
    assert large.features[13].block[0][0].weight.shape == (672, 112, 1, 1)  # expansion unchanged
    assert large.features[13].block[-1][0].weight.shape == (80, 672, 1, 1)
    assert large.features[14].block[0][0].weight.shape == (480, 80, 1, 1)
    assert large.features[15].block[1][0].weight.shape == (480, 1, 5, 5)
    assert large.features[16][0].weight.shape == (480, 80, 1, 1)
    assert large.classifier[0].weight.shape == (640, 480)
    assert small.features[11].block[-1][0].weight.shape == (48, 288, 1, 1)
    assert small.classifier[0].weight.shape == (512, 288)
    # only the tail differs: every earlier tensor has the full network's shape
    full_shapes = _shapes(full)
    large_shapes = _shapes(large)
    early = [k for k in large_shapes if k.startswith("features.") and int(k.split(".")[1]) < 13]
    assert len(early) > 100
    for key in early:
        assert large_shapes[key] == full_shapes[key], key
    # dilation as without the reduction (torchvision's dilated=True at output stride 16)
    assert large.features[14].block[1][0].dilation == (2, 2)
    with pytest.raises(ModelError, match="reduced_tail=true is only supported by the MobileNetV3"):
        build_backbone("mobilenetv2", reduced_tail=True)


def test_reduced_tail_reaches_the_head_and_the_saved_config() -> None:
    from effseg.models import build_model

    with torch.device("meta"):
        model = build_model("lraspp", "mobilenetv3_large", num_classes=3, output_stride=16, reduced_tail=True)
        plain = build_model("lraspp", "mobilenetv3_large", num_classes=3, output_stride=16)
        rebuilt = build_model(**model.config)
    assert model.config["reduced_tail"] is True and "reduced_tail" not in plain.config
    assert rebuilt.backbone.out_channels["out"] == 480
    assert model.head.cbr[0].weight.shape == (128, 480, 1, 1)
    with pytest.raises(ModelError, match="reduced_tail='yes'"):
        build_model("lraspp", "mobilenetv3_large", reduced_tail="yes")
