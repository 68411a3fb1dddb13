"""The real-time networks (BiSeNetV2, DDRNet-23-slim, PIDNet-S, RegSeg): contract, losses, sizes,
published parameter counts, ONNX parity, batch-1 training and option checks."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from effseg.bench.models_table import count_params
from effseg.engine.losses import build_criterion
from effseg.errors import ModelError
from effseg.models import model_options
from effseg.models.contract import LossTerm
from effseg.models.realtime import REALTIME_MODELS
from effseg.models.realtime._base import AffineBatchNorm2d
from effseg.models.realtime.ddrnet import DAPPM

NAMES = list(REALTIME_MODELS)
NUM_CLASSES = 4

#: published parameter counts of the inference networks at 19 classes, and half their last digit:
#: BiSeNetV2 "3.4M" (as later papers' comparison tables quote it, two significant digits),
#: DDRNet-23-slim 5.7M (DDRNet paper), PIDNet-S 7.6M (PIDNet paper), RegSeg 3.34M (RegSeg paper).
#: Sources in docs/models.md.
PUBLISHED_PARAMS = {
    "bisenetv2": (3.4e6, 0.05e6),
    "ddrnet23_slim": (5.7e6, 0.05e6),
    "pidnet_s": (7.6e6, 0.05e6),
    "regseg": (3.34e6, 0.005e6),
}

EXPECTED_TERMS = {
    "bisenetv2": {"out": LossTerm(1.0), **{f"aux{i}": LossTerm(1.0) for i in (2, 3, 4, 5)}},
    "ddrnet23_slim": {"out": LossTerm(1.0), "aux": LossTerm(0.4)},
    "pidnet_s": {
        "out": LossTerm(1.0),
        "p": LossTerm(0.4),
        "boundary": LossTerm(20.0, "boundary"),
        "out_bas": LossTerm(1.0, "boundary_seg"),
    },
    "regseg": {"out": LossTerm(1.0)},
}


def build(name: str, **options) -> nn.Module:
    return REALTIME_MODELS[name](num_classes=options.pop("num_classes", NUM_CLASSES), **options)


def _criterion(model: nn.Module):
    cfg = SimpleNamespace(
        loss="ce", class_weights=None, ohem_thresh=0.7, ohem_min_kept=100_000, aux_weight=None
    )
    return build_criterion(cfg, model.loss_terms)


@pytest.mark.parametrize("name", NAMES)
def test_eval_output_is_one_tensor_at_odd_input_size(name: str) -> None:
    model = build(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 97, 131))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, NUM_CLASSES, 97, 131)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_training_outputs_and_loss_weights(name: str) -> None:
    model = build(name).train()
    assert model.loss_terms == EXPECTED_TERMS[name]
    out = model(torch.randn(2, 3, 65, 79))
    assert set(out) == set(EXPECTED_TERMS[name])
    for key, value in out.items():
        channels = 1 if EXPECTED_TERMS[name][key].kind == "boundary" else NUM_CLASSES
        assert value.shape == (2, channels, 65, 79), key
    if name == "pidnet_s":
        assert out["out_bas"] is out["out"]  # the boundary-aware CE scores the main output
    # without aux: only the main output, one loss term
    plain = build(name, aux=False).train()
    assert set(plain(torch.randn(2, 3, 64, 64))) == {"out"}
    assert plain.loss_terms == {"out": LossTerm(1.0)}


@pytest.mark.parametrize("name", [n for n in NAMES if n != "regseg"])
def test_eval_mode_skips_the_auxiliary_heads(name: str) -> None:
    model = build(name).eval()
    aux = [getattr(model, n) for n in model._aux_modules()]
    assert aux and all(m is not None for m in aux)
    calls: list[str] = []
    for m in aux:
        m.register_forward_hook(lambda mod, i, o: calls.append(type(mod).__name__))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert calls == []
    model.train()(torch.randn(2, 3, 64, 64))
    assert len(calls) == len(aux)


@pytest.mark.parametrize("name", NAMES)
def test_published_parameter_count(name: str) -> None:
    model = build(name, num_classes=19, aux=False)
    count = sum(p.numel() for p in model.parameters())
    published, half_unit = PUBLISHED_PARAMS[name]
    # within 1% of the published figure, or within its rounding when that is coarser (BiSeNetV2's 3.4M)
    assert abs(count - published) <= max(0.01 * published, half_unit), (name, count)
    with_aux = build(name, num_classes=19, aux=True)
    assert with_aux.inference_parameters() == count
    # what `effseg bench` and `effseg models` print is the inference network's count
    assert count_params(with_aux)["params_m"] == count / 1e6
    assert count_params(with_aux)["params_total_m"] == sum(p.numel() for p in with_aux.parameters()) / 1e6
    groups = with_aux.parameter_groups()
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(with_aux.parameters()))
    assert groups["head"] and groups["backbone"]


@pytest.mark.parametrize("name", NAMES)
def test_sgd_steps_on_a_fixed_batch_lower_the_loss(name: str) -> None:
    torch.manual_seed(0)
    model = build(name).train()
    criterion = _criterion(model)
    x = torch.randn(2, 3, 64, 96)
    target = torch.zeros(2, 64, 96, dtype=torch.long)
    target[:, :, 48:] = 1
    target[:, 32:, :] += 2
    target[0, :4] = 255
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(6):
        total, parts = criterion(model(x), target)
        assert "main" in parts
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_batch_one_training_step(name: str) -> None:
    model = build(name).train()
    out = model(torch.randn(1, 3, 97, 131))
    total, _ = _criterion(model)(out, torch.randint(0, NUM_CLASSES, (1, 97, 131)))
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_batch_one_input_too_small_names_the_constraint() -> None:
    model = build("ddrnet23_slim").train()
    with pytest.raises(ModelError, match=r"stride 64.*batch > 1 or an input larger than 64x64"):
        model(torch.randn(1, 3, 64, 64))
    model(torch.randn(2, 3, 64, 64))  # two images: two values per channel, fine


def test_dappm_batchnorm_before_pooling_matches_pool_then_bn_in_eval() -> None:
    # the global branch: BN -> mean equals mean -> BN once BN is an affine map (eval mode)
    dappm = DAPPM(8, 4, 8)
    branch = dappm.scales[-1]
    branch.bn.running_mean.uniform_(-1, 1)
    branch.bn.running_var.uniform_(0.5, 2)
    branch.bn.weight.data.uniform_(0.5, 2)
    branch.bn.bias.data.uniform_(-1, 1)
    dappm.eval()
    x = torch.randn(2, 8, 5, 7)
    got = branch(x)
    want = branch.conv(torch.relu(branch.bn(x.mean(dim=(2, 3), keepdim=True))))
    torch.testing.assert_close(got, want)


def test_affine_batchnorm_is_batchnorm() -> None:
    # eval mode: x * scale + shift (exports as Mul/Add) equals BatchNorm; training: BatchNorm
    ref, bn = nn.BatchNorm2d(6), AffineBatchNorm2d(6)
    for m in (ref, bn):
        m.train()(torch.randn(4, 6, 3, 5) * 3 + 1)
    bn.load_state_dict(ref.state_dict())
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        ref.weight.copy_(bn.weight)
    x = torch.randn(2, 6, 4, 4)
    torch.testing.assert_close(bn.eval()(x), ref.eval()(x))
    torch.testing.assert_close(bn.train()(x), ref.train()(x))


def _calibrate_batchnorm(model: nn.Module) -> None:
    """Running statistics from two random batches, so that eval-mode logits are O(1)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, 96, 128))
    model.eval()


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_parity_at_two_sizes(name: str, tmp_path) -> None:
    """One export with symbolic height and width, run by onnxruntime at 128x96 and 160x128.

    The TorchScript-based exporter keeps this test at a few seconds per model (the
    ``torch.export``-based one that ``effseg export`` uses takes ~20 s here; the shared model
    tester and the export tests run that path).  Untrained logits reach |50| and fp32 round-off
    grows with them, so the tolerance is 1e-4 of the logits' scale (absolute below |1|).
    """
    ort = pytest.importorskip("onnxruntime")
    model = build(name)
    _calibrate_batchnorm(model)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 96, 128),),
            str(path),
            dynamo=False,
            opset_version=18,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in ((96, 128), (128, 160)):
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ref = model(x)
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
        assert got.shape == (1, NUM_CLASSES, h, w)
        scale = ref.abs().max().item()
        assert (got - ref).abs().max().item() <= 1e-4 * max(1.0, scale), (h, w, scale)
        assert (got.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.999


@pytest.mark.parametrize("name", NAMES)
def test_config_rebuilds_the_same_architecture(name: str) -> None:
    model = build(name)
    assert model.config["name"] == name
    assert model.num_classes == NUM_CLASSES
    options = {k: v for k, v in model.config.items() if k != "name"}
    again = REALTIME_MODELS[name](**options)
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("bisenetv2", {"num_classes": 0}, "bisenetv2 option num_classes=0: expected an integer >= 1"),
        ("bisenetv2", {"expansion": 1.5}, "expansion=1.5"),
        ("ddrnet23_slim", {"aux": "yes"}, "ddrnet23_slim option aux='yes': expected true or false"),
        ("pidnet_s", {"planes": True}, "pidnet_s option planes=True"),
        ("regseg", {"dilations": [[1, 2, 3]]}, "regseg option dilations=.*1 or 2 integers"),
        ("regseg", {"group_width": 24}, "group_width=24: must divide 128"),
        ("pidnet_s", {"align_corners": 1}, "pidnet_s option align_corners=1: expected true or false"),
        ("pidnet_s", {"pool_order": "bn"}, "pool_order='bn': expected one of pool_bn, bn_pool"),
        ("bisenetv2", {"boosters": "big"}, "boosters='big': expected one of light, official"),
    ],
)
def test_bad_options_raise_one_line_model_errors(name: str, options: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message) as err:
        REALTIME_MODELS[name](**options)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["bisenetv2", "ddrnet23_slim", "pidnet_s"])
def test_config_is_the_builders_signature_in_order(name: str) -> None:
    """A default build's config is its name, then every builder option at its default, in order."""
    config = REALTIME_MODELS[name]().config
    assert list(config.items()) == [("name", name), *model_options(name).items()]
