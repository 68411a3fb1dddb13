"""The criterion built from a model's declared loss terms: kinds, weights, boundary targets."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from effseg.config import TrainConfig
from effseg.engine.losses import (
    BOUNDARY_THRESHOLD,
    boundary_bce,
    boundary_targets,
    build_criterion,
    ohem_cross_entropy,
)
from effseg.errors import ModelError
from effseg.models import build_model
from effseg.models.contract import LossTerm

I = 255  # ignore


def _train_cfg(**overrides) -> SimpleNamespace:
    base = {"loss": "ce", "class_weights": None, "ohem_thresh": 0.7, "ohem_min_kept": 100_000}
    base["aux_weight"] = None
    return SimpleNamespace(**{**base, **overrides})


def test_boundary_targets_hand_made_label() -> None:
    label = torch.tensor(
        [
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [I, I, I, I, I, I],
            [3, 2, 2, 2, 2, 2],
        ]
    ).unsqueeze(0)
    expected = torch.tensor(
        [
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 0, 0],  # the ignored row below is no boundary
            [0, 0, 0, 0, 0, 0],  # ignored pixels are never boundary pixels
            [1, 1, 0, 0, 0, 0],  # 3 | 2; the 0/1 rows are two pixels away (width 1)
        ],
        dtype=torch.float32,
    ).unsqueeze(0)
    torch.testing.assert_close(boundary_targets(label, width=1), expected, rtol=0, atol=0)


def test_boundary_targets_width_and_diagonal() -> None:
    label = torch.zeros(1, 7, 9, dtype=torch.long)
    label[:, :, 5:] = 4
    edges = boundary_targets(label, width=2)  # a band of 2 * width columns
    assert edges.dtype == torch.float32 and edges.shape == (1, 7, 9)
    assert edges[0].sum(0).tolist() == [0, 0, 0, 7, 7, 7, 7, 0, 0]
    diag = torch.zeros(1, 4, 4, dtype=torch.long)
    diag[0, 2:, 2:] = 1  # (1, 1) touches (2, 2) only diagonally
    edges = boundary_targets(diag, width=1)
    assert edges[0, 1, 1] == 1 and edges[0, 0, 0] == 0 and edges[0, 3, 3] == 0
    with pytest.raises(ModelError, match=r"expected a label map \(B, H, W\)"):
        boundary_targets(label[0])


def test_boundary_bce_is_class_balanced() -> None:
    logits = torch.tensor([[[[2.0, -1.0, 0.5, 3.0]]]])  # (1, 1, 1, 4)
    targets = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    valid = torch.tensor([[[True, True, True, False]]])
    # 1 boundary and 2 non-boundary valid pixels: weights 2/3 and 1/3, mean over 3 valid pixels
    bce = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(-1.0)), math.log1p(math.exp(0.5))]
    expected = (2 / 3 * bce[0] + 1 / 3 * bce[1] + 1 / 3 * bce[2]) / 3
    assert boundary_bce(logits, targets, valid).item() == pytest.approx(expected, rel=1e-6)


def test_criterion_sums_the_declared_terms_and_names_the_parts() -> None:
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 8, 10))
    target[:, :2] = I
    outputs = {"out": torch.randn(2, 3, 8, 10), "aux": torch.randn(2, 3, 8, 10)}
    terms = {"out": LossTerm(1.0), "aux": LossTerm(0.25)}
    total, parts = build_criterion(_train_cfg(), terms)(outputs, target)
    ce = [F.cross_entropy(outputs[k], target, ignore_index=I) for k in ("out", "aux")]
    assert total.item() == pytest.approx(ce[0].item() + 0.25 * ce[1].item(), rel=1e-6)
    assert set(parts) == {"main", "aux"} and parts["aux"].item() == pytest.approx(ce[1].item())
    # TrainConfig's default aux_weight (null) keeps the weight the model declares ...
    assert TrainConfig().aux_weight is None
    total, _ = build_criterion(TrainConfig(), terms)(outputs, target)
    assert total.item() == pytest.approx(ce[0].item() + 0.25 * ce[1].item(), rel=1e-6)
    # ... and a number overrides the "aux" weight
    total, _ = build_criterion(TrainConfig(aux_weight=0.4), terms)(outputs, target)
    assert total.item() == pytest.approx(ce[0].item() + 0.4 * ce[1].item(), rel=1e-6)
    with pytest.raises(ModelError, match=r"training outputs \['out'\] differ .* \['aux', 'out'\]"):
        build_criterion(_train_cfg(), terms)({"out": outputs["out"]}, target)


def test_ohem_applies_to_the_main_output_only() -> None:
    torch.manual_seed(1)
    target = torch.randint(0, 4, (1, 16, 16))
    outputs = {"out": torch.randn(1, 4, 16, 16), "aux": torch.randn(1, 4, 16, 16)}
    cfg = _train_cfg(loss="ohem", ohem_min_kept=10)
    _, parts = build_criterion(cfg, {"out": LossTerm(1.0), "aux": LossTerm(0.4)})(outputs, target)
    assert parts["main"].item() == pytest.approx(ohem_cross_entropy(outputs["out"], target, 0.7, 10).item())
    assert parts["aux"].item() == pytest.approx(F.cross_entropy(outputs["aux"], target).item())


def test_boundary_terms_follow_pidnet() -> None:
    torch.manual_seed(2)
    target = torch.zeros(2, 12, 12, dtype=torch.long)
    target[:, :, 6:] = 1
    target[:, :1] = I
    out = torch.randn(2, 2, 12, 12, requires_grad=True)
    terms = {
        "out": LossTerm(1.0),
        "boundary": LossTerm(20.0, "boundary"),
        "out_bas": LossTerm(1.0, "boundary_seg"),
    }
    criterion = build_criterion(_train_cfg(), terms)
    # a boundary logit exactly at the threshold (sigmoid = 0.8) is not confident: strict ">"
    at_threshold = math.log(BOUNDARY_THRESHOLD / (1 - BOUNDARY_THRESHOLD))
    confident = torch.full((2, 1, 12, 12), -10.0)
    confident[..., 3:9] = 10.0
    confident[..., 3] = at_threshold
    total, parts = criterion({"out": out, "boundary": confident, "out_bas": out}, target)
    mask_target = target.clone()
    mask_target[..., :4] = I
    mask_target[..., 9:] = I
    expected_bas = F.cross_entropy(out, mask_target, ignore_index=I)
    edges = boundary_targets(target)
    expected_bd = boundary_bce(confident, edges, target != I)
    assert parts["out_bas"].item() == pytest.approx(expected_bas.item(), rel=1e-6)
    assert parts["boundary"].item() == pytest.approx(expected_bd.item(), rel=1e-6)
    ce = F.cross_entropy(out, target, ignore_index=I)
    assert total.item() == pytest.approx((ce + 20 * expected_bd + expected_bas).item(), rel=1e-5)
    # no confident pixel (early training): the boundary-aware term is 0, not NaN
    _, parts = criterion({"out": out, "boundary": torch.full_like(confident, -10.0), "out_bas": out}, target)
    assert parts["out_bas"].item() == 0.0
    with pytest.raises(ModelError, match="'boundary_seg' loss term needs the model's 'boundary' output"):
        build_criterion(_train_cfg(), {"out": LossTerm(1.0), "x": LossTerm(1.0, "boundary_seg")})


def test_criterion_of_a_segmentor_matches_its_outputs() -> None:
    model = build_model("ocr", "mobilenetv3_small", num_classes=3, aux_weight=0.7).train()
    x, target = torch.randn(2, 3, 33, 41), torch.randint(0, 3, (2, 33, 41))
    outputs = model(x)
    total, parts = build_criterion(_train_cfg(), model.loss_terms)(outputs, target)
    assert set(parts) == {"main", "aux"}
    assert total.item() == pytest.approx((parts["main"] + 0.7 * parts["aux"]).item(), rel=1e-6)
    total.backward()
    assert model.head.region_head[-1].weight.grad.abs().sum() > 0
