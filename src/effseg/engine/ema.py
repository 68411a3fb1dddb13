"""An exponential moving average (EMA) of the weights, for ``train.ema_decay``.

After every optimiser step ``ema = d * ema + (1 - d) * weights``, BatchNorm running statistics
included (they are averaged like the weights, so the averaged network carries statistics that
match its own weights). The decay warms up as ``d_n = min(decay, (1 + n) / (10 + n))`` after
``n`` updates (timm's ModelEmaV2 / TF's ``num_updates`` rule): a short schedule is not dragged
back to the random initialisation. The averaging itself is torch's
:class:`torch.optim.swa_utils.AveragedModel`; only the decay rule is ours.

The trainer validates and saves the averaged weights as the checkpoint's ``model`` (what
``effseg eval``, ``export`` and ``predict`` load), and keeps the raw weights the optimiser
steps under ``train_model`` for exact resume.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from effseg.engine.checkpoint import load_state_dict_checked

__all__ = ["WeightEMA", "ema_decay_at"]


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay used for the update after ``updates`` earlier ones (warm-up rule above)."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class WeightEMA:
    """The averaged copy of ``model`` (same device and memory format); :meth:`update` after
    each optimiser step; :attr:`module` is the averaged network."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay

        def average(avg: list[torch.Tensor], cur: list[torch.Tensor], n: torch.Tensor) -> None:
            if not avg[0].is_floating_point():  # num_batches_tracked: a counter, not averaged
                torch._foreach_copy_(avg, cur)
                return
            torch._foreach_lerp_(avg, cur, 1.0 - ema_decay_at(self.decay, int(n)))

        self._avg = AveragedModel(model, multi_avg_fn=average, use_buffers=True)

    @property
    def module(self) -> nn.Module:
        return self._avg.module

    @property
    def updates(self) -> int:
        return int(self._avg.n_averaged)

    def update(self, model: nn.Module) -> None:
        self._avg.update_parameters(model)

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int, where: str) -> None:
        """Restore the average and its update count (``where`` names the file in errors)."""
        load_state_dict_checked(self._avg.module, state, where)
        self._avg.n_averaged.fill_(updates)
