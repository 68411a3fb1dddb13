"""The optimiser, its parameter groups (learning rate, weight decay) and the LR schedule.

Groups: ``backbone`` (``train.lr``) and ``head`` (``train.lr x head_lr_mult``), as the
model's ``parameter_groups()`` splits them, without the parameters ``train.freeze`` froze. With
``train.loaded_lr_mult`` != 1, the parameters ``model.init`` loaded move to ``<group>_loaded``
(the group's rate times ``loaded_lr_mult``). Weight decay applies to every parameter
unless a no-decay rule moves it to a ``<group>_no_decay`` group (same learning rate):

- ``train.no_decay_norm_bias``: every 1-D parameter (norm weights and biases, biases);
- ``train.no_decay_se``: the parameters the model itself lists in
  ``model.no_decay_parameters()`` (MobileNetV3: its squeeze-excitation layers). A model
  without that method falls back to its modules whose class is named
  ``*SqueezeExcitation`` (torchvision's name), so the trainer imports no model class.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from effseg.config import TrainConfig
from effseg.engine.budget import TrainClock, budget_lr_factor, poly_lr_factor

__all__ = ["build_optimizer", "build_scheduler", "model_no_decay_parameters", "param_groups"]


def model_no_decay_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters ``model`` exempts from weight decay under ``train.no_decay_se``."""
    own = getattr(model, "no_decay_parameters", None)
    if callable(own):
        return list(own())
    return [
        p for m in model.modules() if type(m).__name__.endswith("SqueezeExcitation") for p in m.parameters()
    ]


def param_groups(model: nn.Module, t: TrainConfig) -> list[dict[str, Any]]:
    """Optimizer parameter groups of ``model`` (see the module docstring), each with a ``name``."""
    from effseg.engine.init_weights import loaded_parameter_ids

    # train.freeze: frozen parameters (requires_grad False) are not optimised
    groups = {k: [p for p in v if p.requires_grad] for k, v in model.parameter_groups().items()}  # type: ignore[operator]
    out: list[dict[str, Any]] = [
        {"params": groups["backbone"], "lr": t.lr, "name": "backbone"},
        {"params": groups["head"], "lr": t.lr * t.head_lr_mult, "name": "head"},
    ]
    loaded = loaded_parameter_ids(model) if t.loaded_lr_mult != 1.0 else set()
    if loaded:  # train.loaded_lr_mult: what model.init loaded learns at a multiple of its group's rate
        for g in list(out):
            g["params"], mine = (
                [p for p in g["params"] if id(p) not in loaded],
                [p for p in g["params"] if id(p) in loaded],
            )
            out.append({"params": mine, "lr": g["lr"] * t.loaded_lr_mult, "name": f"{g['name']}_loaded"})
    if not (t.no_decay_norm_bias or t.no_decay_se):
        return out
    se = {id(p) for p in model_no_decay_parameters(model)} if t.no_decay_se else set()

    def exempt(p: nn.Parameter) -> bool:
        return (t.no_decay_norm_bias and p.ndim <= 1) or id(p) in se

    for g in list(out):
        g["params"], no_decay = (
            [p for p in g["params"] if not exempt(p)],
            [p for p in g["params"] if exempt(p)],
        )
        out.append({"params": no_decay, "lr": g["lr"], "weight_decay": 0.0, "name": f"{g['name']}_no_decay"})
    return out


def _implementation(groups: list[dict[str, Any]]) -> dict[str, bool]:
    """The optimiser's fastest implementation for these parameters: ``fused`` (one kernel over
    every tensor) where they are all floating point on one CPU or CUDA device, else ``foreach``.
    The same update up to float rounding, and the same state dict (resume works across them)."""
    params = [p for g in groups for p in g["params"]]
    devices = {p.device.type for p in params}
    if (
        params
        and len(devices) == 1
        and devices <= {"cpu", "cuda"}
        and all(p.is_floating_point() for p in params)
    ):
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(model: nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or AdamW (betas) over :func:`param_groups`, fused where the
    device allows (:func:`_implementation`)."""
    groups = param_groups(model, t)
    fast = _implementation(groups)
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.nesterov, **fast
        )
    return torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay, **fast)


def build_scheduler(
    optimizer: torch.optim.Optimizer, t: TrainConfig, max_iters: int | None, clock: TrainClock
) -> torch.optim.lr_scheduler.LambdaLR:
    """Poly with warm-up, stepped once per iteration: on the iteration out of ``max_iters``,
    or, by the clock (``max_iters=None``), on the share of the time budget ``clock`` has spent."""

    def lr_lambda(it: int) -> float:
        if max_iters is None:
            return budget_lr_factor(clock.fraction, t.poly_power, t.warmup_fraction, t.warmup_ratio)
        return poly_lr_factor(it, max_iters, t.poly_power, t.warmup_iters, t.warmup_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
