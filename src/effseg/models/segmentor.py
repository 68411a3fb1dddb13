"""``Segmentor`` (backbone -> head [+ aux head]), its head builders and ``build_segmentor``.

A head builder's signature is the single source of that head's options and defaults:
``builder(channels, num_classes, aux, *, <options>) -> (head, aux_head or None)``, where
``channels`` is the backbone's ``out_channels`` dict. :func:`build_segmentor` adds the options
shared by every head (its own signature); :mod:`effseg.models.registry` reads both signatures.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from effseg.errors import ModelError
from effseg.models.backbones import BACKBONES, build_backbone
from effseg.models.contract import LossTerm
from effseg.models.heads import ASPPHead, FCNHead, LRASPPHead, OCRHead, PPMHead
from effseg.models.heads.aspp import DEEPLAB_RATES
from effseg.models.pretrained import load_pretrained

__all__ = ["HEAD_BUILDERS", "Segmentor", "build_segmentor", "head_options", "list_backbones", "list_heads"]

HeadParts = tuple[nn.Module, nn.Module | None]


class Segmentor(nn.Module):
    """Backbone -> head (+ auxiliary head), logits upsampled to the input size.

    Follows the model contract (:mod:`effseg.models.contract`). ``forward(x)`` with ``x``
    float (B, 3, H, W):

    - training mode: ``{"out": (B, C, H, W), "aux": (B, C, H, W)}`` (``"aux"`` when
      the model has an auxiliary output: an FCN aux head or OCR's object regions);
    - eval mode: the main logits (B, C, H, W) only.

    The head (and the aux head) return named logits at feature resolution; every one is
    upsampled bilinearly (``align_corners=False``). ``loss_terms`` declares the loss of each
    training output (default: ``"out"`` weight 1, ``"aux"`` weight 0.4 when ``aux_head``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        aux_head: nn.Module | None = None,
        num_classes: int | None = None,
        config: dict[str, Any] | None = None,
        loss_terms: dict[str, LossTerm] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.num_classes = num_classes
        self.config: dict[str, Any] = dict(config or {})
        if loss_terms is None:
            loss_terms = {"out": LossTerm(1.0), **({"aux": LossTerm(0.4)} if aux_head is not None else {})}
        self.loss_terms: dict[str, LossTerm] = dict(loss_terms)

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise ModelError(
                "expected a float image batch of shape (B, 3, H, W), "
                f"got a {x.dtype} tensor of shape {tuple(x.shape)}"
            )
        size = x.shape[-2:]
        feats = self.backbone(x)
        outputs = self.head(feats)  # {"out": ...} plus the head's own auxiliary outputs
        if not self.training:
            return F.interpolate(outputs["out"], size=size, mode="bilinear", align_corners=False)
        if self.aux_head is not None:
            outputs = {**outputs, **self.aux_head(feats)}
        return {
            name: F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            for name, logits in outputs.items()
        }

    def inference_parameters(self) -> int:
        """Parameters an eval-mode forward uses: all but the auxiliary FCN head's (OCR's region
        classifier is part of its head and counts)."""
        aux = sum(p.numel() for p in self.aux_head.parameters()) if self.aux_head is not None else 0
        return sum(p.numel() for p in self.parameters()) - aux

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"backbone": [...], "head": [...]}``; ``head`` includes the aux head (for a 10x head LR)."""
        head = list(self.head.parameters())
        if self.aux_head is not None:
            head += list(self.aux_head.parameters())
        return {"backbone": list(self.backbone.parameters()), "head": head}


def _fcn_aux(ch: dict[str, int], num_classes: int, aux: bool) -> nn.Module | None:
    """The auxiliary FCN head on the ``"aux"`` feature (C4), output ``"aux"``."""
    return FCNHead(ch["aux"], num_classes, in_key="aux") if aux else None


def fcn(
    ch: dict[str, int], num_classes: int, aux: bool, *, channels: int | None = None, dropout: float = 0.1
) -> HeadParts:
    """FCN: 3x3 conv-BN-ReLU -> 1x1 classifier on ``"out"`` (``channels``: in_channels // 4)."""
    head = FCNHead(ch["out"], num_classes, in_key="out", channels=channels, dropout=dropout)
    return head, _fcn_aux(ch, num_classes, aux)


def pspnet(
    ch: dict[str, int],
    num_classes: int,
    aux: bool,
    *,
    bins: Sequence[int] = (1, 2, 3, 6),
    channels: int = 512,
    dropout: float = 0.1,
) -> HeadParts:
    """PSPNet's pyramid pooling module (one branch per bin) + 3x3 bottleneck."""
    head = PPMHead(ch["out"], num_classes, bins=bins, channels=channels, dropout=dropout)
    return head, _fcn_aux(ch, num_classes, aux)


def aspp(
    ch: dict[str, int],
    num_classes: int,
    aux: bool,
    *,
    rates: Sequence[int] | None = None,
    image_pooling: bool = True,
    channels: int = 256,
    dropout: float = 0.5,
) -> HeadParts:
    """DeepLabV3's ASPP (``rates`` None: DeepLabV3's 12/24/36 at output stride 8, 6/12/18 at 16)."""
    if rates is None:  # build_segmentor resolves it from the output stride
        raise ModelError("aspp: rates=None must be resolved from the output stride (use build_segmentor)")
    head = ASPPHead(ch["out"], num_classes, rates, image_pooling, channels, dropout)
    return head, _fcn_aux(ch, num_classes, aux)


def ocr(
    ch: dict[str, int],
    num_classes: int,
    aux: bool,
    *,
    key_channels: int = 256,
    mid_channels: int = 512,
    dropout: float = 0.05,
) -> HeadParts:
    """OCR. Its object-region classifier (on ``"aux"``, C4) IS the auxiliary output: with
    ``aux=True`` the head returns it as ``"aux"``, and OCR gets no FCN aux head on top."""
    head = OCRHead(ch["out"], ch["aux"], num_classes, key_channels, mid_channels, dropout, return_aux=aux)
    return head, None


def lraspp(ch: dict[str, int], num_classes: int, aux: bool, *, inter_channels: int = 128) -> HeadParts:
    """Lite R-ASPP (MobileNetV3 paper) on ``"out"`` and the 1/8 ``"low"`` feature."""
    return LRASPPHead(ch["low"], ch["out"], num_classes, inter_channels), _fcn_aux(ch, num_classes, aux)


#: head name -> builder; the builder's keyword-only parameters are the head's options.
HEAD_BUILDERS: dict[str, Callable[..., HeadParts]] = {
    "fcn": fcn,
    "pspnet": pspnet,
    "aspp": aspp,
    "ocr": ocr,
    "lraspp": lraspp,
}


def list_backbones() -> list[str]:
    """Backbone names accepted by :func:`build_segmentor`."""
    return list(BACKBONES)


def list_heads() -> list[str]:
    """Head names accepted by :func:`build_segmentor` (the Segmentor family of the registry)."""
    return list(HEAD_BUILDERS)


def head_options(head: str) -> dict[str, inspect.Parameter]:
    """A head's options (name -> parameter, default included), read from its builder's signature."""
    params = inspect.signature(HEAD_BUILDERS[head]).parameters.values()
    return {p.name: p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _positive_int(head: str, key: str, value: Any) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ModelError(f"{head} option {key}={value!r}: expected a positive integer")
    return value


def _int_list(head: str, key: str, value: Any, allow_empty: bool = False) -> list[int]:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and (allow_empty or len(value) > 0)
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        raise ModelError(f"{head} option {key}={value!r}: expected a list of positive integers")
    return [int(v) for v in value]


def _check_option(head: str, key: str, value: Any, output_stride: int) -> Any:
    """Validate (and resolve) one head option value; one-line :class:`ModelError` when bad."""
    if key == "rates":  # ASPP: None -> DeepLabV3's rates scaled to the output stride
        value = list(DEEPLAB_RATES[output_stride]) if value is None else value
        return _int_list(head, key, value, allow_empty=True)
    if key == "bins":
        return _int_list(head, key, value)
    if key == "dropout":
        if not (isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1):
            raise ModelError(f"{head} option dropout={value!r}: expected a number in [0, 1)")
        return value
    if key == "image_pooling":
        if not isinstance(value, bool):
            raise ModelError(f"{head} option image_pooling={value!r}: expected true or false")
        return value
    return _positive_int(head, key, value)  # channels, key_channels, mid_channels, inter_channels


def build_segmentor(
    head: str,
    backbone: str = "resnet18",
    num_classes: int = 19,
    output_stride: int = 8,
    pretrained_backbone: str | Path | None = None,
    aux: bool = True,
    aux_weight: float = 0.4,
    width_mult: float = 1.0,
    reduced_tail: bool = False,
    **options: Any,
) -> Segmentor:
    """Build a segmentor, e.g. ``build_segmentor("pspnet", backbone="resnet50", num_classes=19)``.

    ``head``: one of :func:`list_heads`; ``backbone``: one of :func:`list_backbones`;
    ``output_stride``: 8, 16 or 32; ``pretrained_backbone``: path to a torchvision-format
    ImageNet state dict (see :func:`load_pretrained`); ``aux``: add the auxiliary output (an
    FCN head on the ``"aux"`` feature, or OCR's object regions); ``aux_weight``: the loss weight
    the model declares for ``"aux"`` (``loss_terms``; ``train.aux_weight`` overrides it);
    ``width_mult``: MobileNet width multiplier; ``reduced_tail``: MobileNetV3's halved last stage
    (the paper's segmentation variant). ``options``: the head's options (its builder in
    :data:`HEAD_BUILDERS`; :func:`head_options`).

    ``model.config`` holds the resolved arguments: ``build_model(**model.config)`` rebuilds the
    same architecture (without loading weights).
    """
    if head not in HEAD_BUILDERS:
        raise ModelError(f"unknown head {head!r}; expected one of: {', '.join(HEAD_BUILDERS)}")
    if backbone not in BACKBONES:
        raise ModelError(f"unknown backbone {backbone!r}; expected one of: {', '.join(BACKBONES)}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelError(f"num_classes={num_classes!r}: expected an integer >= 1")
    if not isinstance(width_mult, int | float) or isinstance(width_mult, bool) or not width_mult > 0:
        raise ModelError(f"width_mult={width_mult!r}: expected a number > 0")
    if not isinstance(aux, bool):
        raise ModelError(f"aux={aux!r}: expected true or false")
    if not isinstance(aux_weight, int | float) or isinstance(aux_weight, bool) or not 0 <= aux_weight < 1e6:
        raise ModelError(f"aux_weight={aux_weight!r}: expected a number >= 0")
    if not isinstance(reduced_tail, bool):
        raise ModelError(f"reduced_tail={reduced_tail!r}: expected true or false")
    valid = head_options(head)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ModelError(
            f"unknown option(s) {', '.join(unknown)} for head {head!r}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    net = build_backbone(  # checks output_stride (effseg.models.contract.Backbone)
        backbone, output_stride=output_stride, width_mult=width_mult, reduced_tail=reduced_tail
    )
    output_stride = net.output_stride
    opts = {
        key: _check_option(head, key, options.get(key, param.default), output_stride)
        for key, param in valid.items()
    }
    main, aux_head = HEAD_BUILDERS[head](net.out_channels, num_classes, aux, **opts)
    default_aux_weight = inspect.signature(build_segmentor).parameters["aux_weight"].default
    config = {
        "head": head,
        "backbone": backbone,
        "num_classes": num_classes,
        "output_stride": output_stride,
        "aux": aux,
        "width_mult": float(width_mult),
        **({"reduced_tail": True} if reduced_tail else {}),
        **({"aux_weight": float(aux_weight)} if aux_weight != default_aux_weight else {}),
        **opts,
    }
    loss_terms = {"out": LossTerm(1.0), **({"aux": LossTerm(float(aux_weight))} if aux else {})}
    model = Segmentor(net, main, aux_head, num_classes=num_classes, config=config, loss_terms=loss_terms)
    if pretrained_backbone is not None:
        load_pretrained(model.backbone, pretrained_backbone)
    return model
