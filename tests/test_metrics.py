"""Confusion matrix and IoU scores against hand-computed values and the cityscapesScripts rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from effseg.engine.metrics import MIOU_RULE, ConfusionMatrix, scores_from_matrix

# 5 classes; class 3 is predicted but absent from the ground truth, class 4 never occurs.
TARGET = torch.tensor([[0, 0, 1, 1], [2, 255, 0, 1]])
PRED = torch.tensor([[0, 1, 1, 1], [3, 2, 0, 0]])


def test_matrix_counts_skip_ignore() -> None:
    cm = ConfusionMatrix(5)
    cm.update(PRED, TARGET)
    expected = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in [(0, 0), (0, 1), (1, 1), (1, 1), (2, 3), (0, 0), (1, 0)]:  # the 255 pixel is skipped
        expected[t, p] += 1
    assert torch.equal(cm.mat, expected)
    assert cm.mat.sum() == 7


def test_scores_hand_computed() -> None:
    cm = ConfusionMatrix(5)
    cm.update(PRED, TARGET)
    s = cm.compute(["a", "b", "c", "d", "e"])
    iou = {k: v["iou"] for k, v in s["per_class"].items()}
    # a: TP 2, FN 1, FP 1 -> 2/4; b: same; c: TP 0, FN 1 (its predicted-2 pixel is on ignore) -> 0;
    # d: predicted once, never in GT -> 0 and averaged; e: never seen -> excluded.
    assert iou == {"a": 0.5, "b": 0.5, "c": 0.0, "d": 0.0, "e": None}
    assert s["classes_averaged"] == 4
    assert s["miou"] == pytest.approx(0.25)
    acc = {k: v["acc"] for k, v in s["per_class"].items()}
    assert acc["a"] == pytest.approx(2 / 3) and acc["c"] == 0.0 and acc["d"] is None and acc["e"] is None
    assert s["mean_acc"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert s["pixel_acc"] == pytest.approx(4 / 7)
    assert s["num_pixels"] == 7
    assert "TP+FP+FN > 0" in s["miou_rule"] and s["miou_rule"] == MIOU_RULE


def _cityscapes_scripts_miou(conf: np.ndarray) -> float:
    """cityscapesScripts' getIouScoreForLabel + getScoreAverage, restated on a train-id matrix."""
    scores = []
    n = conf.shape[0]
    for label in range(n):
        tp = conf[label, label]
        fn = conf[label, :].sum() - tp
        fp = conf[[x for x in range(n) if x != label], label].sum()
        denom = tp + fp + fn
        scores.append(float("nan") if denom == 0 else tp / denom)
    valid = [v for v in scores if not math.isnan(v)]
    return sum(valid) / len(valid)


def test_agrees_with_cityscapes_scripts_rule_on_random_predictions() -> None:
    g = torch.Generator().manual_seed(0)
    cm = ConfusionMatrix(19)
    for _ in range(3):
        target = torch.randint(0, 12, (16, 24), generator=g)  # classes 12..18 absent from GT
        target[torch.rand(16, 24, generator=g) < 0.1] = 255
        pred = torch.randint(0, 15, (16, 24), generator=g)  # 12..14 predicted, 15..18 never
        cm.update(pred, target)
    s = cm.compute()
    assert s["miou"] == pytest.approx(_cityscapes_scripts_miou(cm.mat.numpy()), abs=1e-12)
    assert s["classes_averaged"] == 15


def test_accumulates_and_resets() -> None:
    cm = ConfusionMatrix(5)
    cm.update(PRED, TARGET)
    cm.update(PRED, TARGET)
    assert cm.mat.sum() == 14
    cm.reset()
    assert cm.mat.sum() == 0
    cm.update(torch.zeros(3, dtype=torch.long), torch.full((3,), 255))
    assert cm.mat.sum() == 0 and math.isnan(cm.compute()["miou"])


def test_bad_inputs_raise() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="label values"):
        cm.update(torch.zeros(2, dtype=torch.long), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="predicted"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class names"):
        scores_from_matrix(torch.zeros(3, 3), ["a"])
