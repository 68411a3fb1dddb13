"""Precise BatchNorm: re-estimate every BatchNorm's running statistics with the weights fixed.

Wu & Johnson (2021), *Rethinking "Batch" in BatchNorm*: the exponential running averages lag
weights that are still moving (after a short schedule, or with torchvision's MobileNetV3
momentum 0.01), so the network evaluated with them is not the one that was trained.  Setting
``momentum=None`` makes PyTorch keep the plain cumulative average, which is what is wanted here;
no hand-written statistics.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["recompute_batchnorm_stats"]


def recompute_batchnorm_stats(model: nn.Module, images: Iterable[torch.Tensor]) -> int:
    """Reset every BatchNorm's running mean/variance and re-estimate them as the average over
    the batches of ``images`` (each (B, 3, H, W), on the model's device), weights untouched.

    The model runs in training mode under ``torch.no_grad()``; each BatchNorm's momentum and the
    model's train/eval mode are restored afterwards.  Returns the number of batches used (0 and
    nothing changed when the model has no BatchNorm).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = model.training
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the batches below
    batches = 0
    model.train()
    try:
        with torch.no_grad():
            for batch in images:
                model(batch)
                batches += 1
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
    return batches
