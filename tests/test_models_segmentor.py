"""Segmentor, build_model and heads: shapes, train/eval outputs, learning, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import effseg
from effseg.errors import ModelError
from effseg.models import build_model, list_backbones, list_heads, list_models, list_segmentor_pairs
from effseg.models.contract import LossTerm


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: one thread is as fast, and on a loaded 2-core machine two OpenMP
    # threads spin-wait on each other (a training step measured 60x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_lists() -> None:
    assert list_heads() == ["fcn", "pspnet", "aspp", "ocr", "lraspp"]
    assert list_backbones() == [
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "mobilenetv2",
        "mobilenetv3_large",
        "mobilenetv3_small",
    ]
    pairs = list_segmentor_pairs()
    assert len(pairs) == 35 and ("lraspp", "resnet50") in pairs
    assert list_models()[:5] == list_heads()
    assert effseg.build_model is build_model


@pytest.mark.parametrize(("head", "backbone"), list_segmentor_pairs())
def test_every_pair_builds_with_input_size_output_meta(head: str, backbone: str) -> None:
    # shapes only, on the meta device: free even for ResNet-101
    with torch.device("meta"):
        model = build_model(head, backbone, num_classes=7)
        model.train()
        out = model(torch.empty(2, 3, 97, 131))
        assert set(out) == {"out", "aux"}
        assert all(tuple(v.shape) == (2, 7, 97, 131) for v in out.values())
        model.eval()
        assert tuple(model(torch.empty(1, 3, 97, 131)).shape) == (1, 7, 97, 131)


@pytest.mark.parametrize(
    ("head", "backbone"),
    [(h, b) for h in list_heads() for b in ("resnet18", "mobilenetv3_small")]
    + [("pspnet", "mobilenetv2"), ("lraspp", "mobilenetv3_large")],
)
def test_light_pairs_run_on_cpu_odd_sizes(head: str, backbone: str) -> None:
    model = build_model(head, backbone, num_classes=5)
    model.train()
    out = model(torch.randn(2, 3, 97, 131))
    assert isinstance(out, dict) and set(out) == {"out", "aux"}
    assert out["out"].shape == out["aux"].shape == (2, 5, 97, 131)
    assert torch.isfinite(out["out"]).all() and torch.isfinite(out["aux"]).all()
    model.eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 61, 45))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 5, 61, 45)


@pytest.mark.parametrize("head", ["pspnet", "aspp", "ocr", "lraspp", "fcn"])
def test_train_mode_with_batch_one(head: str) -> None:
    # the 1x1 pooled branches (PPM bin 1, ASPP image pooling) have no BatchNorm, so batch 1 trains
    model = build_model(head, "mobilenetv3_small", num_classes=3).train()
    out = model(torch.randn(1, 3, 64, 64))
    (out["out"].mean() + out["aux"].mean()).backward()
    assert out["out"].shape == (1, 3, 64, 64)


def test_aux_false_and_output_stride() -> None:
    model = build_model("pspnet", "resnet18", num_classes=4, aux=False).train()
    assert model.aux_head is None
    assert set(model(torch.randn(2, 3, 64, 64))) == {"out"}
    assert model.loss_terms == {"out": LossTerm(1.0)}
    ocr = build_model("ocr", "mobilenetv3_small", num_classes=4, aux=False).train()
    assert set(ocr(torch.randn(2, 3, 64, 64))) == {"out"} and set(ocr.loss_terms) == {"out"}
    for os_ in (16, 32):
        m = build_model("aspp", "mobilenetv2", num_classes=4, output_stride=os_).eval()
        assert m.backbone.output_stride == os_
        assert m.config["rates"] == {16: [6, 12, 18], 32: [3, 6, 9]}[os_]
        with torch.no_grad():
            assert m(torch.randn(1, 3, 65, 97)).shape == (1, 4, 65, 97)
    assert build_model("aspp").config["rates"] == [12, 24, 36]


def test_head_output_at_feature_resolution_and_upsampling() -> None:
    model = build_model("pspnet", "resnet18", num_classes=4).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = model.backbone(x)
        logits = model.head(feats)["out"]
        assert logits.shape == (1, 4, 8, 12)
        expected = F.interpolate(logits, size=(64, 96), mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(x), expected)


def test_config_rebuilds_the_same_architecture() -> None:
    model = build_model("aspp", "mobilenetv2", num_classes=6, rates=[1, 2, 3, 6], image_pooling=False)
    cfg = model.config
    assert cfg == {
        "head": "aspp",
        "backbone": "mobilenetv2",
        "num_classes": 6,
        "output_stride": 8,
        "aux": True,
        "width_mult": 1.0,
        "rates": [1, 2, 3, 6],
        "image_pooling": False,
        "channels": 256,
        "dropout": 0.5,
    }
    again = build_model(**cfg)
    again.load_state_dict(model.state_dict())  # strict: same keys and shapes
    assert again.config == cfg and again.num_classes == 6
    # 1x1 branch + 4 dilated 3x3 branches, no pooling
    assert [m[0].dilation[0] for m in again.head.aspp.convs] == [1, 1, 2, 3, 6]
    assert [m[0].kernel_size[0] for m in again.head.aspp.convs] == [1, 3, 3, 3, 3]


@pytest.mark.parametrize("head", ["pspnet", "ocr"])
def test_loss_terms_declare_the_aux_weight(head: str) -> None:
    model = build_model(head, "mobilenetv3_small", num_classes=3)
    assert model.loss_terms == {"out": LossTerm(1.0, "seg"), "aux": LossTerm(0.4, "seg")}
    assert "aux_weight" not in model.config  # the default is not written (old configs stay equal)
    heavy = build_model(head, "mobilenetv3_small", num_classes=3, aux_weight=1.0)
    assert heavy.loss_terms["aux"] == LossTerm(1.0) and heavy.config["aux_weight"] == 1.0
    assert build_model(**heavy.config).loss_terms == heavy.loss_terms
    # OCR's object regions are its aux output: no FCN aux head on top of them
    assert (heavy.aux_head is None) == (head == "ocr")


def test_parameter_groups_partition_the_parameters() -> None:
    model = build_model("pspnet", "resnet18", num_classes=4)
    groups = model.parameter_groups()
    assert set(groups) == {"backbone", "head"}
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in model.aux_head.parameters()} <= {id(p) for p in groups["head"]}
    assert {id(p) for p in model.backbone.parameters()} == {id(p) for p in groups["backbone"]}


def test_heads_structure() -> None:
    psp = build_model("pspnet", "resnet18", aux=False).head
    assert [b[0].output_size for b in psp.branches] == [1, 2, 3, 6]
    # bin 1: no BatchNorm (batch-1 training), a biased conv + ReLU instead
    assert [type(m).__name__ for m in psp.branches[0]] == ["AdaptiveAvgPool2d", "Conv2d", "ReLU"]
    assert psp.branches[0][1].bias is not None
    assert isinstance(psp.branches[1][2], torch.nn.BatchNorm2d)
    aspp = build_model("aspp", "resnet18").head.aspp
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in aspp.convs[-1].modules())
    ocr = build_model("ocr", "resnet18").head
    assert ocr.ocr.key_channels == 256 and ocr.classifier.in_channels == 512
    assert ocr.region_head[0][0].in_channels == 256  # soft object regions from C4


@pytest.mark.parametrize("head", ["fcn", "pspnet", "aspp", "ocr", "lraspp"])
def test_sgd_steps_lower_the_loss_and_reach_the_aux_head(head: str) -> None:
    torch.manual_seed(0)
    options = {} if head == "lraspp" else {"dropout": 0.0}
    model = build_model(head, "mobilenetv3_small", num_classes=4, **options).train()
    x = torch.randn(2, 3, 48, 64)
    # a learnable target: 4 classes in 16x16 blocks, some pixels ignored
    y = torch.arange(4).repeat_interleave(16).repeat(3)[:64].expand(2, 48, 64).clone()
    y[:, :, :3] = 255
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(6):
        opt.zero_grad()
        out = model(x)
        loss = F.cross_entropy(out["out"], y, ignore_index=255)
        loss = loss + 0.4 * F.cross_entropy(out["aux"], y, ignore_index=255)
        loss.backward()
        if step == 0:
            aux = model.head.region_head if head == "ocr" else model.aux_head
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in aux.parameters())
            assert model.backbone.features[0][0].weight.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head": "unet"}, "unknown model 'unet'; expected one of: fcn, pspnet, aspp, ocr, lraspp"),
        ({"head": "pspnet", "backbone": "vgg16"}, "unknown backbone 'vgg16'; expected one of: resnet18,"),
        ({"head": "pspnet", "num_classes": 0}, "num_classes=0"),
        ({"head": "pspnet", "num_classes": 2.5}, "num_classes=2.5"),
        ({"head": "pspnet", "output_stride": 4}, "output_stride=4"),
        (
            {"head": "pspnet", "rates": [1, 2]},
            "unknown option.* rates for model 'pspnet'; valid options: backbone, .*, channels, dropout$",
        ),
        ({"head": "aspp", "rates": [1, -2]}, "rates="),
        ({"head": "pspnet", "bins": []}, "bins="),
        ({"head": "ocr", "key_channels": 0}, "key_channels=0"),
        ({"head": "fcn", "dropout": 1.5}, "dropout=1.5"),
        ({"head": "fcn", "width_mult": 0.5}, "width_mult"),
        ({"head": "fcn", "backbone": "mobilenetv2", "width_mult": "wide"}, "width_mult='wide'"),
        ({"head": "fcn", "aux": "yes"}, "aux='yes'"),
        ({"head": "fcn", "aux_weight": -1}, "aux_weight=-1"),
    ],
)
def test_bad_model_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        build_model(**kwargs)


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (1, 4, 32, 32), (3, 32, 32)])
def test_bad_input_shape(shape: tuple[int, ...]) -> None:
    model = build_model("pspnet", "mobilenetv3_small", num_classes=3).eval()
    with pytest.raises(ModelError, match=r"expected a float image batch of shape \(B, 3, H, W\)") as err:
        model(torch.randn(*shape))
    assert str(tuple(shape)) in str(err.value) and "\n" not in str(err.value)


def test_bad_input_dtype() -> None:
    model = build_model("fcn", "mobilenetv3_small", num_classes=3).eval()
    with pytest.raises(ModelError, match="torch.uint8"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
