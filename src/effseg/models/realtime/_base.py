"""What the four real-time networks share: the model contract, option checks, small blocks.

:class:`RealtimeNet` implements :mod:`effseg.models.contract` once: a subclass computes its
logits at feature resolution in ``_logits(x) -> dict[str, Tensor]`` (``"out"`` plus, in
training mode with ``aux=True``, its auxiliary outputs) and this class checks the input,
upsamples every output bilinearly (``align_corners=False``) to the exact input size (odd sizes
included) and returns the ``"out"`` tensor alone in eval mode. ``output_align_corners`` (class
or instance attribute, default ``False``) switches that final resize to ``align_corners=True``
(PIDNet's official recipe).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from effseg.errors import ModelError
from effseg.models.contract import LossTerm

__all__ = [
    "AffineBatchNorm2d",
    "POOL_ORDERS",
    "PooledBatchNorm2d",
    "RealtimeNet",
    "check_bool",
    "check_choice",
    "check_int",
    "init_weights",
    "network_config",
    "resize",
]

#: where the BatchNorm of a pooled branch sits: ``pool_bn`` (pool, then BatchNorm: the papers'
#: and the official code's order, the default) or ``bn_pool`` (BatchNorm, then pool: the order
#: effseg used before it loaded official checkpoints, which the models trained then need; a
#: checkpoint whose stored config has no ``pool_order`` is rebuilt with it, see
#: :data:`effseg.models.realtime.LEGACY_OPTIONS` and docs/models.md).
POOL_ORDERS = ("pool_bn", "bn_pool")


def resize(x: Tensor, size: Sequence[int], mode: str = "bilinear", align_corners: bool = False) -> Tensor:
    """Resize ``x`` (B, C, h, w) to ``size`` = (H, W): bilinear (``align_corners`` as given, default
    ``False``) or ``mode="nearest"``."""
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=align_corners)


def _one_value_per_channel(x: Tensor) -> bool:
    """True when a (B, C, H, W) batch holds one value per channel (B * H * W == 1)."""
    return x.numel() <= x.shape[1]


class PooledBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm that may see a pooled map of one value per channel while training.

    The official DAPPM / PAPPM / BiSeNetV2 context embedding pool first and normalise after; a
    global pool leaves a (B, C, 1, 1) map, and with one image (B = 1) plain BatchNorm cannot train
    on it ("Expected more than 1 value per channel"). This one then normalises with its running
    statistics (the eval-mode map, so the output is still defined and gradients reach its weight
    and bias) and leaves those statistics unchanged; with two or more values per channel it is
    plain BatchNorm. Eval mode: plain BatchNorm (it folds into a preceding convolution).
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and _one_value_per_channel(x) and self.running_mean is not None:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class AffineBatchNorm2d(PooledBatchNorm2d):
    """A BatchNorm that no convolution precedes (pre-activation, or before / after a pool).

    Training is plain BatchNorm (on one value per channel: the running statistics, see
    :class:`PooledBatchNorm2d`). In eval mode it computes ``x * scale + shift`` from the running
    statistics (the same affine map), so an exported ONNX graph holds a Mul and an Add, not a
    ``BatchNormalization`` node that cannot be folded into a preceding convolution (effseg's ONNX
    export refuses unfolded BatchNorm nodes).
    """

    def forward(self, x: Tensor) -> Tensor:
        frozen = not self.training or _one_value_per_channel(x)
        if not frozen or self.running_var is None or self.running_mean is None:
            return nn.BatchNorm2d.forward(self, x)
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


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


def check_choice(model: str, key: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a one-line :class:`ModelError` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ModelError(f"{model} option {key}={value!r}: expected one of {', '.join(choices)}")
    return value


def network_config(
    name: str,
    builder: Callable[..., nn.Module],
    arguments: Mapping[str, Any],
    choices: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The model config of network ``name``: ``{"name": name, option: value, ...}``.

    ``arguments``: the values ``builder`` was called with (its ``locals()`` on entry), taken in
    its signature's order; the signature is the one declaration of the options, so each value is
    checked against its default: an option in ``choices`` must be one of its values, a bool
    default takes true or false, an int default an integer >= 1 (else a one-line
    :class:`ModelError`); other options (RegSeg's ``dilations``) pass as given, for the builder
    to check.
    """
    choices = choices or {}
    config: dict[str, Any] = {"name": name}
    for key, param in inspect.signature(builder).parameters.items():
        value, default = arguments[key], param.default
        if key in choices:
            value = check_choice(name, key, value, choices[key])
        elif isinstance(default, bool):
            value = check_bool(name, key, value)
        elif isinstance(default, int):
            value = check_int(name, key, value)
        config[key] = value
    return config


class RealtimeNet(nn.Module):
    """Base of the real-time networks: contract, loss declaration and parameter groups.

    Subclasses set ``head_names`` (the attribute names of their prediction heads, main and
    auxiliary, for :meth:`parameter_groups`), ``aux_losses`` (training output name ->
    :class:`LossTerm`, used when ``aux=True``), ``max_stride`` (the output stride of their
    coarsest BatchNorm'd map, to name the batch-1 size limit) and implement ``_logits``. A
    subclass is built from its checked ``config`` (:func:`network_config`: the registry builder's
    options, whose signature holds the defaults), which it keeps as ``config``.
    """

    head_names: tuple[str, ...] = ()
    aux_losses: dict[str, LossTerm] = {}
    max_stride: int = 32
    output_align_corners: bool = False

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(config)
        self.num_classes: int = self.config["num_classes"]
        self.aux: bool = self.config["aux"]
        self.loss_terms: dict[str, LossTerm] = {"out": LossTerm(1.0), **(self.aux_losses if self.aux else {})}

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
        ac = self.output_align_corners
        if not self.training:
            return resize(logits["out"], size, align_corners=ac)
        outputs = {name: resize(value, size, align_corners=ac) for name, value in logits.items()}
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
