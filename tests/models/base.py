"""One tester for every registered model (in the style of segmentation_models.pytorch's
``tests/models/base.py``).

:class:`ModelTester` holds the checks every effseg model must pass (the contract of
:mod:`effseg.models.contract`, export and serialisation); a test module subclasses it and
provides a ``case`` fixture parametrized over :func:`registry_cases`, which derives one small
configuration per registry entry (two backbones for each Segmentor head), so a model added to
the registry is tested without a line here. A model that cannot support a check declares why
in :data:`LIMITS`; the check then skips with that reason.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from effseg.engine.losses import build_criterion
from effseg.models import build_model, list_models
from effseg.models.registry import MODELS

NUM_CLASSES = 3
ODD = (97, 131)  # (H, W): odd, and not a multiple of any stride
SEGMENTOR_BACKBONES = ("resnet18", "mobilenetv3_small")

#: Narrow widths that keep each check fast (defaults otherwise: a registered model needs none).
SMALL_OPTIONS: dict[str, dict[str, Any]] = {
    "fcn": {"channels": 16},
    "pspnet": {"channels": 32},
    "aspp": {"channels": 32},
    "ocr": {"key_channels": 16, "mid_channels": 32},
    "lraspp": {"inter_channels": 16},
    "bisenetv2": {"head_channels": 64, "booster_channels": 16},
    "ddrnet23_slim": {"planes": 8, "spp_planes": 16, "head_planes": 16},
    "pidnet_s": {"planes": 8, "ppm_planes": 16, "head_planes": 16},
}

#: name -> {check: why the model cannot support it}.
LIMITS: dict[str, dict[str, str]] = {
    "pspnet": {
        "onnx_two_sizes": "PPM's adaptive pooling to bins that do not divide the feature map is "
        "fixed at trace time, so no one ONNX graph serves two sizes; effseg export writes one "
        "graph per size (tests/test_export.py checks its parity)",
    },
}


@dataclass(frozen=True)
class ModelCase:
    """One registered model in a small configuration: ``build_model(name, **options)``."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        backbone = self.options.get("backbone")
        return f"{self.name}-{backbone}" if backbone else self.name

    def build(self, **extra: Any) -> nn.Module:
        return build_model(self.name, num_classes=NUM_CLASSES, **{**self.options, **extra})


def registry_cases() -> list[ModelCase]:
    """Every registry entry once (each Segmentor head on :data:`SEGMENTOR_BACKBONES`)."""
    cases = []
    for name in list_models():
        small = SMALL_OPTIONS.get(name, {})
        if MODELS[name].family == "segmentor":
            cases += [ModelCase(name, {"backbone": b, **small}) for b in SEGMENTOR_BACKBONES]
        else:
            cases.append(ModelCase(name, small))
    return cases


def calibrate_batchnorm(model: nn.Module, size: tuple[int, int] = (64, 96)) -> nn.Module:
    """Running statistics from two random batches (eval logits O(1) instead of O(50)); eval mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, *size))
    return model.eval()


def assert_close_logits(got: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> None:
    """Equal up to fp32 round-off relative to the logits' scale, and the same argmax."""
    assert got.shape == ref.shape
    scale = max(1.0, ref.abs().max().item())
    assert (got - ref).abs().max().item() <= rel * scale
    assert (got.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.999


class ModelTester:
    """The checks every registered model passes; a subclass provides the ``case`` fixture."""

    @staticmethod
    def limit(case: ModelCase, check: str) -> None:
        reason = LIMITS.get(case.name, {}).get(check)
        if reason:
            pytest.skip(f"{case.name}: {reason}")

    def test_train_forward_backward_batch1_odd_size(self, case: ModelCase) -> None:
        """Batch 1 in training mode at an odd size: the declared outputs at the input size, the
        criterion built from ``loss_terms`` alone, and a gradient for every parameter."""
        model = case.build().train()
        out = model(torch.randn(1, 3, *ODD))
        assert isinstance(out, dict) and set(out) == set(model.loss_terms)
        assert "out" in out
        for name, term in model.loss_terms.items():
            assert math.isfinite(term.weight) and term.weight >= 0, (name, term)
            channels = 1 if term.kind == "boundary" else NUM_CLASSES
            assert out[name].shape == (1, channels, *ODD), name
            assert torch.isfinite(out[name]).all(), name
        cfg = SimpleNamespace(loss="ce", class_weights=None, ohem_thresh=0.7, ohem_min_kept=100_000)
        cfg.aux_weight = None
        target = torch.randint(0, NUM_CLASSES, (1, *ODD))
        loss, parts = build_criterion(cfg, model.loss_terms)(out, target)
        assert torch.isfinite(loss) and set(parts) == {"main" if k == "out" else k for k in out}
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"parameters without a gradient in training mode: {missing[:5]}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    def test_eval_returns_one_tensor_at_input_size(self, case: ModelCase) -> None:
        model = case.build().eval()
        with torch.no_grad():
            y = model(torch.randn(2, 3, 75, 53))
        assert isinstance(y, torch.Tensor) and y.shape == (2, NUM_CLASSES, 75, 53)
        assert torch.isfinite(y).all()

    def test_state_dict_round_trip(self, case: ModelCase) -> None:
        """``build_model(**model.config)`` + the saved state dict (``weights_only`` load) gives
        the same eval logits."""
        torch.manual_seed(0)
        model = calibrate_batchnorm(case.build())
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "model_config": model.config}, buf)
        buf.seek(0)
        ckpt = torch.load(buf, weights_only=True)
        torch.manual_seed(1)  # a different initialisation, overwritten by the load
        again = build_model(**ckpt["model_config"])
        again.load_state_dict(ckpt["model"])  # strict
        again.eval()
        x = torch.randn(1, 3, 64, 80)
        with torch.no_grad():
            torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
        assert again.config == model.config and again.loss_terms == model.loss_terms

    def test_torch_export(self, case: ModelCase) -> None:
        model = calibrate_batchnorm(case.build())
        x = torch.randn(1, 3, *ODD)
        with torch.no_grad():
            program = torch.export.export(model, (x,))
            assert_close_logits(program.module()(x), model(x))

    def test_onnx_parity_two_sizes(self, case: ModelCase, tmp_path) -> None:
        """One ONNX graph with symbolic height and width, run by onnxruntime at two sizes.

        The TorchScript-based exporter keeps this at a second per model; ``effseg export``'s
        ``torch.export``-based path is :meth:`test_onnx_effseg_export` (slow) and
        tests/test_export.py.
        """
        self.limit(case, "onnx_two_sizes")
        ort = pytest.importorskip("onnxruntime")
        model = calibrate_batchnorm(case.build())
        path = tmp_path / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.randn(1, 3, 64, 96),),
                str(path),
                dynamo=False,
                opset_version=18,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}},
            )
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for h, w in ((64, 96), ODD):
            x = torch.randn(1, 3, h, w)
            with torch.no_grad():
                ref = model(x)
            got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
            assert_close_logits(got, ref)
