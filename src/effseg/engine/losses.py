"""Training losses: cross-entropy (ignore 255) + weighted auxiliary loss; OHEM; distillation hook.

The trainer calls :func:`build_criterion` once and then ``criterion(outputs, target)``
with the Segmentor's training output (``{"out": (B, C, H, W), "aux": (B, C, H, W)}``;
for OCR ``aux`` is the object-region classifier, so its loss is the OCR auxiliary
loss). Distillation is pluggable: :func:`build_distill_loss` returns ``None`` when no
teacher is configured, otherwise the module made by
``effseg.engine.distill.build_distill_loss(distill_cfg)``, whose contract is
``loss_fn(student_logits, teacher_logits, target) -> scalar`` (unweighted; the
trainer multiplies by ``distill.weight``), logits ``(B, C, H, W)`` at input size.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from effseg.errors import ConfigError

__all__ = ["SegLoss", "ohem_cross_entropy", "build_criterion", "build_distill_loss"]


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    thresh: float = 0.7,
    min_kept: int = 100_000,
    ignore_index: int = 255,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Online hard example mining cross-entropy (as in mmsegmentation's OHEMPixelSampler).

    Keeps the pixels whose predicted probability of the true class is below
    ``max(thresh, p_k)``, where ``p_k`` is the ``k = min_kept * B``-th smallest such
    probability, and averages their CE. ``logits`` ``(B, C, H, W)``, ``target`` ``(B, H, W)``.
    """
    valid = target != ignore_index
    with torch.no_grad():
        prob = logits.detach().float().softmax(1)
        safe_target = target.masked_fill(~valid, 0)
        true_prob = prob.gather(1, safe_target.unsqueeze(1)).squeeze(1)
        valid_prob = true_prob[valid]
        if valid_prob.numel() > 0:
            k = min(min_kept * target.shape[0], valid_prob.numel() - 1)
            kth = valid_prob.kthvalue(k + 1).values if k >= 0 else valid_prob.new_tensor(0.0)
            threshold = torch.clamp(kth, min=thresh)
        else:
            threshold = true_prob.new_tensor(0.0)
        keep = valid & (true_prob < threshold)
    pixel_loss = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="none")
    kept = keep.sum()
    # No kept pixel (all easy or all ignored): a zero that still depends on the graph.
    return (pixel_loss * keep).sum() / kept.clamp(min=1)


class SegLoss(nn.Module):
    """``main_loss(out) + aux_weight * CE(aux)``; returns ``(total, parts)``.

    ``parts`` maps ``"main"``/``"aux"`` to detached scalars for logging.
    """

    def __init__(
        self,
        kind: str = "ce",
        aux_weight: float = 0.4,
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
        ohem_thresh: float = 0.7,
        ohem_min_kept: int = 100_000,
    ):
        super().__init__()
        if kind not in ("ce", "ohem"):
            raise ConfigError(f"train.loss: expected 'ce' or 'ohem', got {kind!r}")
        self.kind = kind
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept = ohem_min_kept
        weight = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weight, persistent=False)

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), target, weight=self.class_weights, ignore_index=self.ignore_index
        )

    def forward(
        self, outputs: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if isinstance(outputs, torch.Tensor):
            outputs = {"out": outputs}
        out = outputs["out"]
        if self.kind == "ohem":
            main = ohem_cross_entropy(
                out.float(),
                target,
                self.ohem_thresh,
                self.ohem_min_kept,
                self.ignore_index,
                self.class_weights,
            )
        else:
            main = self._ce(out, target)
        parts = {"main": main.detach()}
        total = main
        aux = outputs.get("aux")
        if aux is not None and self.aux_weight > 0:
            aux_loss = self._ce(aux, target)
            parts["aux"] = aux_loss.detach()
            total = total + self.aux_weight * aux_loss
        return total, parts


def build_criterion(train_cfg, ignore_index: int = 255) -> SegLoss:
    """The segmentation loss of a :class:`effseg.config.TrainConfig`."""
    return SegLoss(
        kind=train_cfg.loss,
        aux_weight=train_cfg.aux_weight,
        ignore_index=ignore_index,
        class_weights=train_cfg.class_weights,
        ohem_thresh=train_cfg.ohem_thresh,
        ohem_min_kept=train_cfg.ohem_min_kept,
    )


def build_distill_loss(distill_cfg) -> nn.Module | None:
    """``None`` without a teacher; else the loss from ``effseg.engine.distill`` (see module doc)."""
    if distill_cfg.teacher is None:
        return None
    try:
        module = importlib.import_module("effseg.engine.distill")
    except ModuleNotFoundError as err:
        if err.name != "effseg.engine.distill":
            raise
        raise ConfigError(
            "distill.teacher is set but this effseg has no distillation loss (effseg.engine.distill)"
        ) from None
    return module.build_distill_loss(distill_cfg)
