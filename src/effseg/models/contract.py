"""The model contract, stated once.

Every effseg model (a :class:`~effseg.models.segmentor.Segmentor` or a whole real-time
network) takes a float image batch ``x`` of shape ``(B, 3, H, W)`` and

- in **eval mode** returns one logits tensor ``(B, C, H, W)`` at the input size;
- in **training mode** returns a ``dict[str, Tensor]`` of named outputs at the input size:
  ``"out"`` (the main logits, always present) plus the model's auxiliary outputs
  (``"aux"``, BiSeNetV2's ``"aux2"``..``"aux5"`` boosters, PIDNet's ``"p"``, ``"boundary"``
  and ``"out_bas"``); segmentation outputs are ``(B, C, H, W)``, a boundary output is
  ``(B, 1, H, W)`` logits. One output has one loss: a tensor scored twice is returned under
  two names (PIDNet's ``"out_bas"`` is its ``"out"`` logits again, for the boundary-aware term).

and declares, in its attribute ``loss_terms: dict[str, LossTerm]``, the loss and the weight
of every training output (the keys are exactly the training-mode output names), and in its
method ``inference_parameters() -> int`` the number of parameters an eval-mode forward uses
(training-only auxiliary heads excluded: the ``params_m`` of ``effseg models`` / ``bench``). The trainer
and :mod:`effseg.engine.losses` (``build_criterion(train_cfg, model.loss_terms)``) read only
this declaration: no per-model branches. ``tests/models/base.py`` checks every registered model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from effseg.config import check_output_stride
from effseg.errors import ModelError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["Backbone", "LossTerm", "LOSS_KINDS", "class_ids", "eval_logits"]

#: ``seg``: the run's segmentation loss (``train.loss``: CE or OHEM) against the label map;
#: ``boundary``: weighted binary CE against boundary targets derived from the labels (PIDNet's l_1);
#: ``boundary_seg``: the segmentation loss restricted to pixels where the model's ``"boundary"``
#: output is confident, ``sigmoid > 0.8`` (PIDNet's boundary-aware CE, l_3).
LOSS_KINDS = ("seg", "boundary", "boundary_seg")


@dataclass(frozen=True)
class LossTerm:
    """The loss of one training output: ``weight * loss(kind)(output, target)``."""

    weight: float
    kind: str = "seg"

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"LossTerm kind {self.kind!r}: expected one of {', '.join(LOSS_KINDS)}")


class Backbone(nn.Module):
    """The Segmentor family's backbone (ResNet, MobileNetV2/V3): ``forward(x)`` returns a dict of
    named feature maps (``"low"`` at 1/8, ``"aux"``, ``"out"`` at ``1/output_stride``), the
    ``out_channels`` attribute their channels (name -> int), and ``output_stride`` is 8, 16 or
    32: checked here, once for every backbone (``effseg.config.check_output_stride``, a one-line
    ModelError), so :func:`~effseg.models.backbones.build_backbone` and
    :func:`~effseg.models.segmentor.build_segmentor` do not repeat it."""

    def __init__(self, output_stride: int) -> None:
        super().__init__()
        self.output_stride = check_output_stride(output_stride)


def class_ids(logits: Tensor, dim: int = 1) -> Tensor:
    """The predicted class of every pixel: ``logits`` ``(B, C, H, W)`` -> ``(B, H, W)`` int64
    (``dim`` is the class dimension), the first index on ties, exactly as ``torch.argmax``.

    Computed as ``logits.max(dim).indices`` (documented to return the first maximal index too):
    on CPU ``argmax`` over a dimension that is not the innermost one is not vectorised, and took
    94 ms against 9.6 ms for ``(1, 11, 512, 1024)`` float32 logits (torch 2.13, Intel Xeon, 2
    threads), more than the whole DDRNet-23-slim forward pass in OpenVINO at 480x360.
    """
    return logits.max(dim).indices


def eval_logits(output: Any, num_classes: int | None = None, source: str = "model") -> Tensor:
    """An eval-mode model's output as float32 logits ``(B, C, H, W)``: the one place that reads it.

    The contract's output is one logits tensor. Callables that stand in for a model (an ONNX
    Runtime or OpenVINO session, a user's function) may also give a numpy array, or a list /
    tuple whose first item is the logits (a session's ``run`` result); both become a tensor.

    Raises:
        ModelError: one line naming ``source``: named outputs (a model left in training mode,
            ``model.eval()`` fixes it), or with ``num_classes`` any shape but
            ``(B, num_classes, H, W)``.
    """
    import torch

    if isinstance(output, (list, tuple)) and output:
        output = output[0]
    if isinstance(output, dict):
        raise ModelError(
            f"{source}: model returned named outputs {sorted(output)}; put it in eval mode "
            "(model.eval()), which returns one logits tensor"
        )
    logits = torch.as_tensor(output).float()
    if num_classes is not None and (logits.ndim != 4 or logits.shape[1] != num_classes):
        raise ModelError(
            f"{source}: model returned shape {tuple(logits.shape)}; expected (B, {num_classes}, H, W)"
        )
    return logits
