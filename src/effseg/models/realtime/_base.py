"""What the four real-time networks share: the model contract, option checks, small blocks.

:class:`RealtimeNet` implements :mod:`effseg.models.contract` once: a subclass computes its
logits at feature resolution in ``_logits(x) -> dict[str, Tensor]`` (``"out"`` plus, in
training mode with ``aux=True``, its auxiliary outputs) and this class checks the input,
upsamples every output bilinearly (``align_corners=False``) to the exact input size (odd sizes
included) and returns the ``"out"`` tensor alone in eval mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from effseg.errors import ModelError
from effseg.models.contract import LossTerm

__all__ = [
    "AffineBatchNorm2d",
    "RealtimeNet",
    "conv_bn",
    "conv_bn_relu",
    "check_bool",
    "check_int",
    "init_weights",
    "resize",
]


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of ``x`` (B, C, h, w) to ``size`` = (H, W), ``align_corners=False``."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class AffineBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm that no convolution precedes (pre-activation, or before a pool).

    Training is plain BatchNorm. In eval mode it computes ``x * scale + shift`` from the
    running statistics (the same affine map), so an exported ONNX graph holds a Mul and an
    Add, not a ``BatchNormalization`` node that cannot be folded into a preceding convolution
    (effseg's ONNX export refuses unfolded BatchNorm nodes).
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training or self.running_var is None or self.running_mean is None:
            return super().forward(x)
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def conv_bn(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Sequential:
    """Conv (no bias, 'same' padding for odd ``kernel``) -> BatchNorm."""
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


def conv_bn_relu(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU."""
    return nn.Sequential(*conv_bn(cin, cout, kernel, stride, groups, dilation), nn.ReLU(inplace=True))


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) convolutions with zero bias; BatchNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_int(model: str, key: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, else a one-line :class:`ModelError`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ModelError(f"{model} option {key}={value!r}: expected an integer >= {minimum}")
    return int(value)


def check_bool(model: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ModelError(f"{model} option {key}={value!r}: expected true or false")
    return value


class RealtimeNet(nn.Module):
    """Base of the real-time networks: contract, loss declaration and parameter groups.

    Subclasses set ``head_names`` (the attribute names of their prediction heads, main and
    auxiliary, for :meth:`parameter_groups`), ``aux_losses`` (training output name ->
    :class:`LossTerm`, used when ``aux=True``), ``max_stride`` (the output stride of their
    coarsest BatchNorm'd map, to name the batch-1 size limit) and implement ``_logits``.
    """

    head_names: tuple[str, ...] = ()
    aux_losses: dict[str, LossTerm] = {}
    max_stride: int = 32

    def __init__(self, num_classes: int, aux: bool, config: dict[str, Any]) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.aux = aux
        self.config: dict[str, Any] = dict(config)
        self.loss_terms: dict[str, LossTerm] = {"out": LossTerm(1.0), **(self.aux_losses if aux else {})}

    def _logits(self, x: Tensor) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def with_aux(self) -> bool:
        """True when the auxiliary heads run (training mode and ``aux=True``)."""
        return self.training and self.aux

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        """``x`` float (B, 3, H, W) -> eval: logits (B, C, H, W); training: dict of outputs at (H, W)."""
        if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise ModelError(
                f"{self.config['name']}: expected a float image batch of shape (B, 3, H, W), "
                f"got a {x.dtype} tensor of shape {tuple(x.shape)}"
            )
        size = x.shape[-2:]
        if self.training:
            s = self.max_stride
            coarse = -(-int(size[0]) // s) * -(-int(size[1]) // s)
            if x.shape[0] * coarse < 2:
                raise ModelError(
                    f"{self.config['name']}: training on {x.shape[0]} image(s) of {size[1]}x{size[0]} "
                    f"leaves one pixel per channel at stride {s} for BatchNorm; use a batch > 1 "
                    f"or an input larger than {s}x{s}"
                )
        logits = self._logits(x)
        if not self.training:
            return resize(logits["out"], size)
        outputs = {name: resize(value, size) for name, value in logits.items()}
        for name, term in self.loss_terms.items():
            if name not in outputs and term.kind == "boundary_seg":
                outputs[name] = outputs["out"]  # the same tensor, scored by a second loss
        return outputs

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"backbone": [...], "head": [...]}``: ``head`` holds the prediction heads (main and aux)."""
        head_ids: set[int] = set()
        head: list[nn.Parameter] = []
        for name in self.head_names:
            module = getattr(self, name, None)
            if module is not None:
                for p in module.parameters():
                    head_ids.add(id(p))
                    head.append(p)
        backbone = [p for p in self.parameters() if id(p) not in head_ids]
        return {"backbone": backbone, "head": head}

    def inference_parameters(self) -> int:
        """Parameters used in eval mode (auxiliary heads excluded)."""
        aux = set(self._aux_modules())
        return sum(p.numel() for n, m in self.named_children() if n not in aux for p in m.parameters())

    def _aux_modules(self) -> Iterable[str]:
        """Names of the child modules that only run in training (the auxiliary heads)."""
        return ()
