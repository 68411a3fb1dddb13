"""``Segmentor`` (backbone -> head [+ aux head]) and ``build_model``."""

from __future__ import annotations

import copy
from collections.abc import Sequence
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

# head name -> its options and defaults (None: derived, see build_model)
HEAD_OPTIONS: dict[str, dict[str, Any]] = {
    "fcn": {"channels": None, "dropout": 0.1},
    "pspnet": {"bins": [1, 2, 3, 6], "channels": 512, "dropout": 0.1},
    "aspp": {"rates": None, "image_pooling": True, "channels": 256, "dropout": 0.5},
    "ocr": {"key_channels": 256, "mid_channels": 512, "dropout": 0.05},
    "lraspp": {"inter_channels": 128},
}
HEADS = tuple(HEAD_OPTIONS)


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

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"backbone": [...], "head": [...]}``; ``head`` includes the aux head (for a 10x head LR)."""
        head = list(self.head.parameters())
        if self.aux_head is not None:
            head += list(self.aux_head.parameters())
        return {"backbone": list(self.backbone.parameters()), "head": head}


def list_backbones() -> list[str]:
    """Backbone names accepted by :func:`build_model`."""
    return list(BACKBONES)


def list_heads() -> list[str]:
    """Head names accepted by :func:`build_model`."""
    return list(HEADS)


def list_models() -> list[tuple[str, str]]:
    """Every valid ``(head, backbone)`` pair (every head works on every backbone)."""
    return [(h, b) for h in HEADS for b in BACKBONES]


def _int_list(head: str, key: str, value: Any, allow_empty: bool = False) -> list[int]:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and (allow_empty or len(value) > 0)
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        raise ModelError(f"{head} option {key}={value!r}: expected a list of positive integers")
    return [int(v) for v in value]


def _resolve_options(head: str, output_stride: int, options: dict[str, Any]) -> dict[str, Any]:
    valid = HEAD_OPTIONS[head]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ModelError(
            f"unknown option(s) {', '.join(unknown)} for head {head!r}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    opts = {**copy.deepcopy(valid), **options}
    if head == "aspp" and opts["rates"] is None:
        opts["rates"] = list(DEEPLAB_RATES[output_stride])
    for key in ("bins", "rates"):
        if key in opts:
            opts[key] = _int_list(head, key, opts[key], allow_empty=key == "rates")
    for key in ("channels", "key_channels", "mid_channels", "inter_channels"):
        v = opts.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ModelError(f"{head} option {key}={v!r}: expected a positive integer")
    if "dropout" in opts and not (isinstance(opts["dropout"], int | float) and 0 <= opts["dropout"] < 1):
        raise ModelError(f"{head} option dropout={opts['dropout']!r}: expected a number in [0, 1)")
    if "image_pooling" in opts and not isinstance(opts["image_pooling"], bool):
        raise ModelError(f"aspp option image_pooling={opts['image_pooling']!r}: expected true or false")
    return opts


def build_model(
    head: str,
    backbone: str = "resnet18",
    num_classes: int = 19,
    output_stride: int = 8,
    pretrained_backbone: str | Path | None = None,
    aux: bool = True,
    aux_weight: float = 0.4,
    width_mult: float = 1.0,
    reduced_tail: bool = False,
    **head_options: Any,
) -> Segmentor:
    """Build a segmentor, e.g. ``build_model("pspnet", backbone="resnet50", num_classes=19)``.

    ``head``: one of :func:`list_heads`; ``backbone``: one of :func:`list_backbones`;
    ``output_stride``: 8, 16 or 32; ``pretrained_backbone``: path to a
    torchvision-format ImageNet state dict (see :func:`load_pretrained`);
    ``aux``: add the auxiliary output (FCN head on the ``"aux"`` feature, or OCR's
    object regions); ``aux_weight``: the loss weight the model declares for ``"aux"``
    (``loss_terms``; ``train.aux_weight`` overrides it); ``width_mult``: MobileNet width
    multiplier; ``reduced_tail``: MobileNetV3's halved last stage (the paper's segmentation
    variant).  Head options:
    ``fcn``: channels, dropout; ``pspnet``: bins, channels, dropout; ``aspp``:
    rates (default DeepLabV3's 12/24/36 at output stride 8, 6/12/18 at 16),
    image_pooling, channels, dropout; ``ocr``: key_channels, mid_channels,
    dropout; ``lraspp``: inter_channels.

    ``model.config`` holds the resolved arguments: ``build_model(**model.config)``
    rebuilds the same architecture (without loading weights).
    """
    if head not in HEAD_OPTIONS:
        raise ModelError(f"unknown head {head!r}; expected one of: {', '.join(HEADS)}")
    if backbone not in BACKBONES:
        raise ModelError(f"unknown backbone {backbone!r}; expected one of: {', '.join(BACKBONES)}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelError(f"num_classes={num_classes!r}: expected an integer >= 1")
    if output_stride not in (8, 16, 32) or isinstance(output_stride, bool):
        raise ModelError(f"output_stride={output_stride!r} is not supported; expected 8, 16 or 32")
    if not isinstance(width_mult, int | float) or isinstance(width_mult, bool) or not width_mult > 0:
        raise ModelError(f"width_mult={width_mult!r}: expected a number > 0")
    if not isinstance(aux, bool):
        raise ModelError(f"aux={aux!r}: expected true or false")
    if not isinstance(aux_weight, int | float) or isinstance(aux_weight, bool) or not 0 <= aux_weight < 1e6:
        raise ModelError(f"aux_weight={aux_weight!r}: expected a number >= 0")
    if not isinstance(reduced_tail, bool):
        raise ModelError(f"reduced_tail={reduced_tail!r}: expected true or false")
    opts = _resolve_options(head, output_stride, head_options)
    net = build_backbone(
        backbone, output_stride=output_stride, width_mult=width_mult, reduced_tail=reduced_tail
    )
    ch = net.out_channels
    if head == "fcn":
        main: nn.Module = FCNHead(ch["out"], num_classes, in_key="out", **opts)
    elif head == "pspnet":
        main = PPMHead(ch["out"], num_classes, **opts)
    elif head == "aspp":
        main = ASPPHead(ch["out"], num_classes, **opts)
    elif head == "ocr":
        main = OCRHead(ch["out"], ch["aux"], num_classes, return_aux=aux, **opts)
    else:
        main = LRASPPHead(ch["low"], ch["out"], num_classes, **opts)
    aux_head = FCNHead(ch["aux"], num_classes, in_key="aux") if aux and head != "ocr" else None
    config = {
        "head": head,
        "backbone": backbone,
        "num_classes": num_classes,
        "output_stride": output_stride,
        "aux": aux,
        "width_mult": float(width_mult),
        **({"reduced_tail": True} if reduced_tail else {}),
        **({"aux_weight": float(aux_weight)} if aux_weight != 0.4 else {}),
        **opts,
    }
    loss_terms = {"out": LossTerm(1.0), **({"aux": LossTerm(float(aux_weight))} if aux else {})}
    model = Segmentor(net, main, aux_head, num_classes=num_classes, config=config, loss_terms=loss_terms)
    if pretrained_backbone is not None:
        load_pretrained(model.backbone, pretrained_backbone)
    return model
