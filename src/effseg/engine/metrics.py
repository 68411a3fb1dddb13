"""Confusion matrix and the segmentation scores derived from it.

The mIoU rule is the official cityscapesScripts one
(``evalPixelLevelSemanticLabeling.getIouScoreForLabel`` / ``getScoreAverage``):
pixels whose ground truth is ``ignore_index`` are not counted at all; for each
class ``IoU = TP / (TP + FP + FN)``; a class with ``TP + FP + FN == 0`` (absent
from the ground truth *and* never predicted) has no IoU and is left out of the
mean. A class that is predicted but absent from the ground truth therefore
scores IoU 0 and *is* averaged. :data:`MIOU_RULE` states this in every output.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["ConfusionMatrix", "MIOU_RULE", "scores_from_matrix"]

MIOU_RULE = (
    "mIoU = mean of per-class IoU = TP/(TP+FP+FN) over pixels whose label is not ignore (255), "
    "averaged over the classes with TP+FP+FN > 0 (present in the ground truth or predicted), "
    "as in cityscapesScripts; mean accuracy averages TP/(TP+FN) over classes present in the ground truth"
)


class ConfusionMatrix:
    """``(C, C)`` int64 matrix; row = ground-truth class, column = predicted class.

    Accumulated on the tensors' device with ``torch.bincount``;
    :meth:`all_reduce` sums it over the ranks of a process group.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu"):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.mat.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add predictions ``pred`` and labels ``target``: integer tensors of the same shape.

        Pixels with ``target == ignore_index`` are skipped. Any other label outside
        ``0..C-1``, or a prediction outside it, is a bug upstream and raises ValueError.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        c = self.num_classes
        target = target.to(self.mat.device, torch.int64).flatten()
        pred = pred.to(self.mat.device, torch.int64).flatten()
        valid = target != self.ignore_index
        target, pred = target[valid], pred[valid]
        if target.numel() == 0:
            return
        if int(target.min()) < 0 or int(target.max()) >= c:
            raise ValueError(f"label values must be in 0..{c - 1} or {self.ignore_index}")
        if int(pred.min()) < 0 or int(pred.max()) >= c:
            raise ValueError(f"predicted class ids must be in 0..{c - 1}")
        self.mat += torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)

    def all_reduce(self) -> None:
        """Sum the matrix over all ranks (no-op without an initialised process group)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.mat, op=dist.ReduceOp.SUM)

    def compute(self, class_names: list[str] | None = None) -> dict[str, Any]:
        """Scores as a JSON-ready dict (see :func:`scores_from_matrix`)."""
        return scores_from_matrix(self.mat.cpu(), class_names)


def scores_from_matrix(mat: torch.Tensor, class_names: list[str] | None = None) -> dict[str, Any]:
    """Per-class IoU/accuracy, mIoU, mean accuracy and pixel accuracy of a ``(C, C)`` matrix.

    Scores are fractions in [0, 1]; undefined per-class scores are ``None`` (JSON null).
    """
    mat = mat.to(torch.float64)
    c = mat.shape[0]
    names = class_names or [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for a {c}-class confusion matrix")
    tp = mat.diag()
    gt = mat.sum(1)  # TP + FN
    predicted = mat.sum(0)  # TP + FP (over non-ignored pixels only)
    union = gt + predicted - tp
    total = float(mat.sum())

    iou = [float(tp[i] / union[i]) if union[i] > 0 else None for i in range(c)]
    acc = [float(tp[i] / gt[i]) if gt[i] > 0 else None for i in range(c)]
    valid_iou = [v for v in iou if v is not None]
    valid_acc = [v for v in acc if v is not None]
    return {
        "miou": sum(valid_iou) / len(valid_iou) if valid_iou else math.nan,
        "mean_acc": sum(valid_acc) / len(valid_acc) if valid_acc else math.nan,
        "pixel_acc": float(tp.sum()) / total if total > 0 else math.nan,
        "num_pixels": int(total),
        "classes_averaged": len(valid_iou),
        "per_class": {
            name: {"iou": iou[i], "acc": acc[i], "gt_pixels": int(gt[i]), "pred_pixels": int(predicted[i])}
            for i, name in enumerate(names)
        },
        "miou_rule": MIOU_RULE,
    }
