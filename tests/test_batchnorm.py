"""Precise BatchNorm: running statistics re-estimated as the plain average, by hand."""

from __future__ import annotations

import torch
from torch import nn

from effseg.engine.batchnorm import recompute_batchnorm_stats


def test_running_stats_are_the_average_over_the_batches() -> None:
    bn = nn.BatchNorm2d(1, momentum=0.1)
    model = nn.Sequential(bn).eval()
    bn.running_mean.fill_(7.0)
    bn.running_var.fill_(9.0)
    weight = bn.weight.detach().clone()
    batches = [torch.tensor([0.0, 2.0]).reshape(2, 1, 1, 1), torch.tensor([4.0, 4.0]).reshape(2, 1, 1, 1)]
    assert recompute_batchnorm_stats(model, iter(batches)) == 2
    # batch means 1 and 4 -> 2.5; unbiased batch variances 2 and 0 -> 1.0 (the old 7 / 9 are gone)
    torch.testing.assert_close(bn.running_mean, torch.tensor([2.5]))
    torch.testing.assert_close(bn.running_var, torch.tensor([1.0]))
    assert bn.momentum == 0.1 and not model.training  # both restored
    torch.testing.assert_close(bn.weight.detach(), weight)


def test_model_without_batchnorm_is_left_alone() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 1)).train()
    assert recompute_batchnorm_stats(model, [torch.randn(1, 3, 4, 4)]) == 0
    assert model.training
