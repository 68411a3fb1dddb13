"""Training losses: the sum of the terms a model declares, and the distillation hook.

A model declares ``loss_terms: dict[str, LossTerm]`` (see :mod:`effseg.models.contract`): one
weighted loss per training output. :func:`build_criterion` turns that declaration and the run's
``train`` section into a :class:`Criterion`; the trainer calls it once and then
``criterion(outputs, target) -> (total, parts)`` with the model's training outputs. Loss kinds:

- ``"seg"``: segmentation loss of a ``(B, C, H, W)`` output (optional ``train.class_weights``,
  label 255 ignored): the run's ``train.loss`` (cross-entropy or OHEM) for the main output
  ``"out"``, cross-entropy for auxiliary outputs (as PIDNet, and effseg before the contract);
- ``"boundary"``: PIDNet's class-balanced binary cross-entropy of a ``(B, 1, H, W)`` boundary
  logit map against :func:`boundary_targets` of the labels;
- ``"boundary_seg"``: PIDNet's boundary-aware loss: the ``"seg"`` loss of a ``(B, C, H, W)``
  output on the pixels where ``sigmoid(outputs["boundary"]) > 0.8`` only (``train.loss``, as
  PIDNet's official code, which applies its OHEM loss there).

Distillation is pluggable: :func:`build_distill_loss` returns ``None`` when no teacher is
configured, otherwise the module made by ``effseg.engine.distill.build_distill_loss(distill_cfg)``,
whose contract is ``loss_fn(student_logits, teacher_logits, target) -> scalar`` (unweighted; the
trainer multiplies by ``distill.weight``), logits ``(B, C, H, W)`` at input size.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from effseg.errors import ConfigError, ModelError
from effseg.models.contract import LossTerm

__all__ = [
    "BOUNDARY_THRESHOLD",
    "Criterion",
    "boundary_bce",
    "boundary_targets",
    "build_criterion",
    "build_distill_loss",
    "ohem_cross_entropy",
]

#: PIDNet's confidence threshold for the boundary-aware loss: pixels with
#: ``sigmoid(boundary logit) > 0.8`` (strictly) keep their label, the others are ignored.
BOUNDARY_THRESHOLD = 0.8


def ohem_cross_entropy(
    logits: Tensor,
    target: Tensor,
    thresh: float = 0.7,
    min_kept: int = 100_000,
    ignore_index: int = 255,
    weight: Tensor | None = None,
) -> Tensor:
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


def boundary_targets(label: Tensor, ignore_index: int = 255, width: int = 2) -> Tensor:
    """Boundary map ``(B, H, W)`` float in {0, 1} of a label map ``(B, H, W)`` int64.

    The rule: pixel ``p`` is a boundary pixel (1) iff its label is not ``ignore_index`` and
    some pixel ``q`` with ``max(|dy|, |dx|) <= width`` (the ``(2 width + 1)``-square around
    ``p``, cut at the image border) has a different label that is not ``ignore_index``.
    Ignored pixels are 0 and never make a neighbour a boundary pixel, so the edge between a
    class and the void region (or a padded crop border) is not a boundary. Both sides of a
    change are marked: a straight edge between two regions gives a band ``2 * width`` pixels
    wide (PIDNet dilates Canny edges of the label with a 4x4 kernel; ``width=2`` matches it).
    """
    if label.dim() != 3:
        raise ModelError(f"boundary_targets: expected a label map (B, H, W), got shape {tuple(label.shape)}")
    if width < 1:
        raise ModelError(f"boundary_targets: width={width!r}, expected an integer >= 1")
    valid = label != ignore_index
    lab = label.unsqueeze(1).float()  # train ids <= 255 are exact in float32
    inf = torch.finfo(lab.dtype).max
    k = 2 * width + 1
    # largest / smallest valid label in the window; max_pool2d pads with -inf (outside the image)
    high = F.max_pool2d(lab.masked_fill(~valid.unsqueeze(1), -inf), k, stride=1, padding=width)
    low = -F.max_pool2d((-lab).masked_fill(~valid.unsqueeze(1), -inf), k, stride=1, padding=width)
    edge = ((high > lab) | (low < lab)).squeeze(1) & valid
    return edge.to(torch.float32)


def boundary_bce(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """PIDNet's class-balanced BCE (its boundary loss, without the weight of 20).

    ``logits`` ``(B, 1, H, W)``, ``targets`` ``(B, H, W)`` in {0, 1}, ``valid`` ``(B, H, W)`` bool.
    Over the valid pixels of the batch, a boundary pixel weighs ``n_neg / n`` and a non-boundary
    pixel ``n_pos / n`` (``n = n_pos + n_neg``); the weighted BCE is averaged over the valid pixels.
    """
    valid = valid.to(logits.dtype)
    pos = targets * valid
    n_pos, n = pos.sum(), valid.sum()
    n_neg = n - n_pos
    weight = (pos * n_neg + (valid - pos) * n_pos) / n.clamp(min=1)
    bce = F.binary_cross_entropy_with_logits(logits.squeeze(1), targets, reduction="none")
    return (weight * bce).sum() / n.clamp(min=1)


class Criterion(nn.Module):
    """``sum(weight * loss_kind(outputs[name]))`` over the declared ``loss_terms``.

    ``forward(outputs, target)`` with ``outputs`` the model's training outputs (a dict whose
    keys are exactly ``loss_terms``' keys) and ``target`` ``(B, H, W)`` int64 (255 ignored)
    returns ``(total, parts)``: ``parts`` maps each output name to its unweighted detached
    loss, the main output ``"out"`` reported as ``"main"`` (log key ``loss_main``).
    """

    def __init__(
        self,
        loss_terms: Mapping[str, LossTerm],
        kind: str = "ce",
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
        ohem_thresh: float = 0.7,
        ohem_min_kept: int = 100_000,
        boundary_width: int = 2,
    ) -> None:
        super().__init__()
        if kind not in ("ce", "ohem"):
            raise ConfigError(f"train.loss: expected 'ce' or 'ohem', got {kind!r}")
        for name, term in loss_terms.items():
            if not isinstance(term, LossTerm) or not math.isfinite(term.weight) or term.weight < 0:
                raise ModelError(
                    f"loss term {name!r}: expected a LossTerm with a finite weight >= 0, got {term!r}"
                )
        uses_boundary = any(t.kind == "boundary_seg" for t in loss_terms.values())
        if uses_boundary and "boundary" not in loss_terms:
            raise ModelError(
                "a 'boundary_seg' loss term needs the model's 'boundary' output; it declares none"
            )
        self.loss_terms = dict(loss_terms)
        self.kind = kind
        self.ignore_index = ignore_index
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept = ohem_min_kept
        self.boundary_width = boundary_width
        weight = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weight, persistent=False)

    def seg_loss(self, logits: Tensor, target: Tensor, main: bool = True) -> Tensor:
        """Segmentation loss of ``logits`` ``(B, C, H, W)``: ``train.loss`` (CE or OHEM) for the
        main output, cross-entropy for an auxiliary one (``main=False``)."""
        if self.kind == "ohem" and main:
            return ohem_cross_entropy(
                logits.float(),
                target,
                self.ohem_thresh,
                self.ohem_min_kept,
                self.ignore_index,
                self.class_weights,
            )
        return F.cross_entropy(
            logits.float(), target, weight=self.class_weights, ignore_index=self.ignore_index
        )

    def _boundary_seg_loss(self, logits: Tensor, target: Tensor, boundary: Tensor) -> Tensor:
        with torch.no_grad():
            confident = torch.sigmoid(boundary.detach().float().squeeze(1)) > BOUNDARY_THRESHOLD
            masked = target.masked_fill(~confident, self.ignore_index)
        if self.kind == "ohem":
            return self.seg_loss(logits, masked)
        # cross-entropy that stays 0 (not NaN) when no pixel is confident, e.g. early in training
        pixel = F.cross_entropy(
            logits.float(),
            masked,
            weight=self.class_weights,
            ignore_index=self.ignore_index,
            reduction="none",
        )
        keep = masked != self.ignore_index
        if self.class_weights is None:
            return pixel.sum() / keep.sum().clamp(min=1)
        denom = self.class_weights[masked.masked_fill(~keep, 0)] * keep
        return pixel.sum() / denom.sum().clamp(min=1e-12)

    def forward(self, outputs: Mapping[str, Tensor], target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if set(outputs) != set(self.loss_terms):
            raise ModelError(
                f"model training outputs {sorted(outputs)} differ from its declared loss_terms "
                f"{sorted(self.loss_terms)}"
            )
        total: Tensor | None = None
        parts: dict[str, Tensor] = {}
        edges: Tensor | None = None
        for name, term in self.loss_terms.items():
            out = outputs[name]
            if term.kind == "seg":
                loss = self.seg_loss(out, target, main=name == "out")
            elif term.kind == "boundary":
                if edges is None:
                    edges = boundary_targets(target, self.ignore_index, self.boundary_width)
                loss = boundary_bce(out.float(), edges, target != self.ignore_index)
            else:
                loss = self._boundary_seg_loss(out, target, outputs["boundary"])
            parts["main" if name == "out" else name] = loss.detach()
            if term.weight > 0:
                total = term.weight * loss if total is None else total + term.weight * loss
        if total is None:
            raise ModelError(f"every loss term has weight 0: {self.loss_terms}")
        return total, parts


def build_criterion(train_cfg: Any, loss_terms: Mapping[str, LossTerm], ignore_index: int = 255) -> Criterion:
    """The criterion of a model's ``loss_terms`` under a :class:`effseg.config.TrainConfig`.

    ``train.aux_weight`` (when set, i.e. not ``None``) overrides the weight of the model's
    ``"aux"`` term; the other terms keep the weights the model declares.
    """
    terms = dict(loss_terms)
    aux_weight = getattr(train_cfg, "aux_weight", None)
    if aux_weight is not None and "aux" in terms:
        terms["aux"] = LossTerm(float(aux_weight), terms["aux"].kind)
    return Criterion(
        terms,
        kind=train_cfg.loss,
        ignore_index=ignore_index,
        class_weights=train_cfg.class_weights,
        ohem_thresh=train_cfg.ohem_thresh,
        ohem_min_kept=train_cfg.ohem_min_kept,
    )


def build_distill_loss(distill_cfg: Any) -> nn.Module | None:
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
