"""Knowledge distillation losses for segmentation: pixel-wise KD and channel-wise (CWD).

The trainer (``effseg.engine.train``) loads the teacher with
:func:`effseg.engine.checkpoint.load_model` (eval mode, ``requires_grad=False``, never
wrapped in DDP), runs it under ``torch.no_grad()`` on the student's batch, and calls
``loss_fn(student_logits, teacher_logits, target)``; the result is unweighted (the
trainer multiplies it by ``distill.weight``).

- ``kd`` (Hinton et al. 2015, per pixel): ``T^2 * KL(softmax(t/T) || softmax(s/T))``
  over the classes of each pixel, averaged over the valid pixels (``target != 255``).
- ``cwd`` (Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction",
  ICCV 2021): every channel (class map) of every image is turned into a distribution
  over the ``H*W`` locations by a softmax with temperature ``T``;
  ``T^2 * KL(teacher || student)`` summed over the locations, averaged over channels
  and images.  As in the paper it uses no labels (``target`` is only checked for shape).

Teacher logits at another spatial size are resized bilinearly (``align_corners=False``)
to the student's.  Both are computed in float32.  Hand-written (a few lines over
``torch.nn.functional.log_softmax``/``kl_div``) because torch ships no masked or
spatial-softmax KD loss; ``F.kl_div`` with ``log_target=True`` does the KL itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from effseg.errors import ConfigError, ModelError

__all__ = ["PixelKDLoss", "ChannelWiseDistillLoss", "Distiller", "build_distill_loss", "match_teacher"]


def match_teacher(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Check the shapes and return the teacher logits (detached, float32) at the student's size.

    ``student`` and ``teacher``: (B, C, H, W) and (B, C, H', W').  A different number of
    classes or images raises :class:`ModelError` naming both.
    """
    if student.dim() != 4 or teacher.dim() != 4:
        raise ModelError(
            f"distillation expects logits of shape (B, C, H, W); got student {tuple(student.shape)}, "
            f"teacher {tuple(teacher.shape)}"
        )
    if teacher.shape[1] != student.shape[1]:
        raise ModelError(
            f"distillation: the teacher predicts {teacher.shape[1]} classes but the student "
            f"{student.shape[1]}; both must share the same class set"
        )
    if teacher.shape[0] != student.shape[0]:
        raise ModelError(
            f"distillation: teacher batch {teacher.shape[0]} != student batch {student.shape[0]}"
        )
    teacher = teacher.detach().float()
    if teacher.shape[-2:] != student.shape[-2:]:
        teacher = F.interpolate(teacher, size=student.shape[-2:], mode="bilinear", align_corners=False)
    return teacher


class PixelKDLoss(nn.Module):
    """Pixel-wise KD: ``T^2 * mean over valid pixels of KL(p_teacher || p_student)``.

    ``forward(student (B, C, H, W), teacher (B, C, H', W'), target (B, H, W) or None)``
    -> scalar.  Pixels whose target is ``ignore_index`` are left out; with no valid pixel
    the loss is 0 (still attached to the student's graph).
    """

    def __init__(self, temperature: float = 1.0, ignore_index: int = 255) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"distill.temperature: expected a positive number, got {temperature!r}")
        self.temperature = float(temperature)
        self.ignore_index = ignore_index

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        teacher = match_teacher(student, teacher)
        t = self.temperature
        log_s = F.log_softmax(student.float() / t, dim=1)
        log_t = F.log_softmax(teacher / t, dim=1)
        kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(1)  # (B, H, W)
        if target is None:
            return kl.mean() * t * t
        valid = _valid_mask(target, kl.shape, self.ignore_index)
        return (kl * valid).sum() / valid.sum().clamp(min=1) * (t * t)


class ChannelWiseDistillLoss(nn.Module):
    """Channel-wise distillation (Shu et al., ICCV 2021).

    ``forward(student (B, C, H, W), teacher (B, C, H', W'), target=None)`` -> scalar:
    ``T^2 / (B*C) * sum_{b,c} KL(softmax_HW(t_bc / T) || softmax_HW(s_bc / T))``.
    ``target`` is not used (the paper's loss needs no labels).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"distill.temperature: expected a positive number, got {temperature!r}")
        self.temperature = float(temperature)

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        teacher = match_teacher(student, teacher)
        b, c = student.shape[:2]
        t = self.temperature
        log_s = F.log_softmax(student.float().reshape(b * c, -1) / t, dim=1)
        log_t = F.log_softmax(teacher.reshape(b * c, -1) / t, dim=1)
        kl = F.kl_div(log_s, log_t, reduction="sum", log_target=True)
        return kl / (b * c) * (t * t)


def _valid_mask(target: torch.Tensor, shape: torch.Size, ignore_index: int) -> torch.Tensor:
    """Float (B, H, W) mask of ``target != ignore_index`` at the logits' size (nearest)."""
    if target.dim() != 3 or target.shape[0] != shape[0]:
        raise ModelError(
            f"distillation: target of shape {tuple(target.shape)} does not fit logits {tuple(shape)}"
        )
    valid = (target != ignore_index).float()
    if valid.shape[-2:] != shape[-2:]:
        valid = F.interpolate(valid[:, None], size=shape[-2:], mode="nearest")[:, 0]
    return valid


def build_distill_loss(distill_cfg) -> nn.Module:
    """The loss of a :class:`effseg.config.DistillConfig` (``type`` ``"kd"`` or ``"cwd"``)."""
    kind = distill_cfg.type
    if kind == "kd":
        return PixelKDLoss(distill_cfg.temperature)
    if kind == "cwd":
        return ChannelWiseDistillLoss(distill_cfg.temperature)
    raise ConfigError(f"distill.type: expected 'kd' or 'cwd', got {kind!r}")


class Distiller:
    """The distillation term of a training step, for the trainer.

    Loads the teacher of ``cfg.distill.teacher`` (eval mode, frozen, never in DDP) and checks
    that it was trained on images normalised as this run's (``data.mean`` / ``data.std``).
    ``distiller(images, student_logits, target)`` returns ``(distill.weight x loss, loss
    detached)``; ``per_image`` says whether the loss is a mean over images (CWD) rather
    than over valid pixels (KD), which the trainer needs to rescale it under torchrun.
    """

    def __init__(self, cfg: Any, device: torch.device):
        from effseg.engine.checkpoint import load_model

        d = cfg.distill
        self.weight, self.per_image = d.weight, d.type == "cwd"
        self.loss = build_distill_loss(d).to(device)
        self.teacher, meta = load_model(d.teacher, device, num_classes=cfg.model.num_classes)
        for key in ("mean", "std"):  # the teacher must see images normalised as in its training
            want, got = getattr(cfg.data, key), meta.get(key)
            if got is not None and not np.allclose(got, want, atol=1e-6):
                raise ConfigError(
                    f"distill.teacher {d.teacher} was trained with data.{key}={list(got)}, "
                    f"this run uses {want}; train the student with the teacher's normalisation"
                )
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg: Any, device: torch.device) -> Distiller | None:
        """A distiller, or None when ``distill.teacher`` is not set."""
        return cls(cfg, device) if cfg.distill.teacher is not None else None

    def __call__(
        self, images: torch.Tensor, student: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` (B, 3, H, W), ``student`` logits (B, C, H, W), ``target`` (B, H, W)."""
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        kd = self.loss(student.float(), teacher_logits.float(), target)
        return self.weight * kd, kd.detach()
