"""Every registered model through the shared tester (tests/models/base.py)."""

from __future__ import annotations

import pytest
import torch
from base import (
    NUM_CLASSES,
    ODD,
    ModelCase,
    ModelTester,
    assert_close_logits,
    calibrate_batchnorm,
    registry_cases,
)

from effseg.models import list_models

CASES = registry_cases()


def test_every_registered_model_has_a_case() -> None:
    assert {c.name for c in CASES} == set(list_models())


class TestEveryModel(ModelTester):
    @pytest.fixture(params=CASES, ids=[c.id for c in CASES])
    def case(self, request: pytest.FixtureRequest) -> ModelCase:
        return request.param


@pytest.mark.slow
def test_torch_compile() -> None:
    """``torch.compile`` (inductor, CPU) gives the eager logits; one small model (compiling is slow)."""
    model = calibrate_batchnorm(ModelCase("fcn", {"backbone": "resnet18", "channels": 16}).build())
    x = torch.randn(1, 3, *ODD)
    compiled = torch.compile(model)
    with torch.no_grad():
        assert_close_logits(compiled(x), model(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddrnet23_slim", "pidnet_s"])
def test_onnx_effseg_export(name: str, tmp_path) -> None:
    """``effseg export``'s torch.export-based ONNX path (BatchNorm folded, fp32 parity) for the two
    networks whose fixed-kernel pyramid pooling (DAPPM, PAPPM) is the export risk; the Segmentor
    heads go through it in tests/test_export.py."""
    from effseg.deploy.export import export_onnx

    case = next(c for c in CASES if c.name == name)
    model = calibrate_batchnorm(case.build())
    report = export_onnx(model, tmp_path / f"{name}.onnx", input_size=(64, 96))
    assert report.batchnorm_nodes == 0 and report.parity["argmax_agreement"] >= 0.999
    assert report.metadata["num_classes"] == NUM_CLASSES
