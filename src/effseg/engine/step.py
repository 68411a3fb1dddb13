"""One optimiser step on a batch: model input, forward, loss, backward, optimiser; eager or compiled.

``train.compile`` compiles :meth:`TrainStep.forward_loss`: the normalisation of a uint8 batch
(:func:`effseg.engine.speed.model_input`), the model's forward under autocast (``train.amp``,
resolved) and the loss the model declares, so inductor fuses the normalisation, the
BatchNorm / activation chains and the loss's upsample + log-softmax into generated kernels,
forward and backward. The rest (distillation, the global-batch scaling under torchrun, the
non-finite check, backward, gradient clipping, the optimiser) runs in eager PyTorch. Both paths
compute the same function, so eager training (``train.compile: false``) stays available and is
the reference the compiled path is tested against (tests/test_train_speed.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from effseg.engine import distributed as du
from effseg.engine.speed import compile_step, model_input

__all__ = ["TrainStep"]


class TrainStep:
    """``step(images, labels) -> (loss, parts)``: one optimiser step on a batch.

    ``images``: ``(B, H, W, 3)`` uint8 or normalised ``(B, 3, H, W)`` float, on the device;
    ``labels``: ``(B, H, W)`` uint8 or int64 train ids (255 ignored). Returns the detached
    total loss and its detached terms (:class:`effseg.engine.losses.Criterion`); a non-finite
    loss (on any rank) leaves the weights untouched and returns ``parts == {"nonfinite": 1}``.

    With ``compiled``, the first call compiles (:func:`effseg.engine.speed.compile_step`);
    ``first_step_s`` is how long the first step took (compilation included), ``None`` before.
    """

    def __init__(
        self,
        model: nn.Module,
        net: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        channels_last: bool,
        mean: Sequence[float],
        std: Sequence[float],
        grad_clip: float | None = None,
        distiller: Any = None,
        distributed: bool = False,
        compiled: bool = False,
    ) -> None:
        self.model, self.net, self.criterion = model, net, criterion
        self.optimizer, self.scaler, self.grad_clip = optimizer, scaler, grad_clip
        self.device, self.amp_dtype, self.channels_last = device, amp_dtype, channels_last
        self.mean, self.std = tuple(mean), tuple(std)
        self.distiller, self.distributed, self.compiled = distiller, distributed, compiled
        self.first_step_s: float | None = None
        self.forward_loss: Callable = compile_step(self._forward_loss) if compiled else self._forward_loss

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _forward_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple:
        """``(x, main logits | None, loss, parts)``; the logits only for distillation (a
        compiled graph need not materialise them otherwise)."""
        x = model_input(images, self.mean, self.std, self.channels_last)
        with self._autocast():
            outputs = self.net(x)
            loss, parts = self.criterion(outputs, labels.long())
        # training mode: named outputs (effseg.models.contract), "out" the main logits
        return x, (outputs["out"] if self.distiller is not None else None), loss, parts

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        start = time.perf_counter() if self.first_step_s is None else None
        out = self._step(images, labels)
        if start is not None:
            self.first_step_s = time.perf_counter() - start
        return out

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        x, logits, loss, parts = self.forward_loss(images, labels)
        distill_loss = None
        if self.distiller is not None:
            with self._autocast():
                distill_loss, parts["distill"] = self.distiller(x, logits, labels.long())
        if self.distributed:  # N ranks compute the update of one process with the whole batch
            per_image = self.distiller is not None and self.distiller.per_image
            loss, distill_loss = du.scale_to_global_batch(loss, distill_loss, labels, per_image)
        if distill_loss is not None:
            loss = loss + distill_loss
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self.distributed:
            bad = du.broadcast_flag(bad, self.device)  # every rank stops together
        if bad:
            return loss, {"nonfinite": torch.tensor(1.0)}
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), parts
