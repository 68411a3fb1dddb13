"""The model contract's helpers: eval_logits (the one reading of an eval-mode output) and the
Backbone base (the one output-stride check)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effseg.errors import ModelError
from effseg.models.backbones import BACKBONES, build_backbone
from effseg.models.contract import Backbone, eval_logits


def test_eval_logits_reads_tensors_arrays_and_session_lists() -> None:
    x = torch.arange(24, dtype=torch.float64).reshape(1, 2, 3, 4)
    out = eval_logits(x, num_classes=2)
    assert out.dtype == torch.float32 and torch.equal(out, x.float())
    arr = x.numpy().astype(np.float16)
    assert torch.equal(eval_logits([arr]), x.float())  # an ONNX Runtime session's run() result
    assert torch.equal(eval_logits((x,)), x.float())


def test_eval_logits_refuses_named_outputs_and_wrong_shapes_in_one_line() -> None:
    with pytest.raises(
        ModelError, match=r"^m\.pt: model returned named outputs \['aux', 'out'\]; put it in eval"
    ):
        eval_logits({"out": torch.zeros(1), "aux": torch.zeros(1)}, source="m.pt")
    with pytest.raises(
        ModelError, match=r"^model: model returned shape \(1, 3, 4, 4\); expected \(B, 2, H, W\)$"
    ):
        eval_logits(torch.zeros(1, 3, 4, 4), num_classes=2)
    with pytest.raises(ModelError, match=r"shape \(3, 4\)"):
        eval_logits(torch.zeros(3, 4), num_classes=2)


def test_every_backbone_is_a_backbone_with_its_checked_output_stride() -> None:
    for name in BACKBONES:
        net = build_backbone(name, output_stride=16)
        assert isinstance(net, Backbone) and net.output_stride == 16
    with pytest.raises(ModelError, match=r"^output_stride=12 is not supported; expected 8, 16 or 32$"):
        build_backbone("resnet18", output_stride=12)
