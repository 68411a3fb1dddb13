"""Test-time augmentation (flip, multi-scale) and sliding-window inference: the one implementation.

``effseg eval --tta``, ``effseg predict --tta`` and ``Predictor.predict(..., tta=...)`` all call
:func:`predict_scores`. A TTA spec is text such as ``"flip"`` or ``"flip,0.75,1.0,1.25"``: the
image is resized by each scale (of the network input size), optionally also flipped
horizontally; each pass's logits are upsampled to the output size (and unflipped), and several
passes are merged as the mean of their softmax probabilities. One pass returns logits.

``model`` may be an ``nn.Module`` (eval-mode output ``(B, C, H, W)`` logits) or any callable
with the same contract, e.g. an ONNX Runtime wrapper returning numpy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from effseg.errors import ConfigError
from effseg.models.contract import eval_logits

__all__ = ["ModelLike", "describe_tta", "parse_tta", "predict_scores", "slide_logits"]

ModelLike = nn.Module | Callable[[torch.Tensor], Any]


def parse_tta(spec: str | Sequence[str | float] | None) -> tuple[list[float], bool]:
    """``"flip,0.75,1.0,1.25"`` -> ``([0.75, 1.0, 1.25], True)``; ``None`` -> ``([1.0], False)``.

    ``"none"`` (or an empty text) is no augmentation. Raises :class:`~effseg.errors.ConfigError`
    (one line) for anything but ``flip`` and positive scales.
    """
    if spec is None:
        return [1.0], False
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    scales: list[float] = []
    flip = False
    for item in items:
        if item == "" or item is None or (isinstance(item, str) and item.lower() == "none"):
            continue
        if isinstance(item, str) and item.lower() == "flip":
            flip = True
            continue
        try:
            scale = float(item)
        except (TypeError, ValueError):
            raise ConfigError(
                f"--tta item {item!r}: expected 'flip' or a positive scale such as 0.75"
            ) from None
        if not scale > 0 or not math.isfinite(scale):
            raise ConfigError(f"--tta scale {item!r}: expected a positive number")
        scales.append(scale)
    return scales or [1.0], flip


def describe_tta(scales: Sequence[float], flip: bool) -> str:
    """``([0.75, 1.0], True)`` -> ``"flip,0.75,1.0"``; no augmentation -> ``"none"``."""
    parts = (["flip"] if flip else []) + ([f"{s:g}" for s in scales] if list(scales) != [1.0] else [])
    return ",".join(parts) or "none"


def _call(model: ModelLike, x: torch.Tensor) -> torch.Tensor:
    return eval_logits(model(x)).to(x.device)  # the contract's one logits tensor, as float32


def slide_logits(
    model: ModelLike, image: torch.Tensor, crop_size: Sequence[int], stride: Sequence[int], num_classes: int
) -> torch.Tensor:
    """Sliding-window logits ``(B, C, H, W)`` for ``image`` ``(B, 3, H, W)``.

    Windows of ``crop_size = (h, w)`` every ``stride``; the last window in each
    direction is shifted back to end at the border (a window larger than the image
    is clipped to it); overlapping logits are averaged (as mmsegmentation does).
    """
    b, _, h_img, w_img = image.shape
    ch, cw = crop_size
    sh, sw = stride
    rows = max(h_img - ch + sh - 1, 0) // sh + 1
    cols = max(w_img - cw + sw - 1, 0) // sw + 1
    logits = image.new_zeros((b, num_classes, h_img, w_img), dtype=torch.float32)
    count = image.new_zeros((1, 1, h_img, w_img), dtype=torch.float32)
    for r in range(rows):
        for c in range(cols):
            y2 = min(r * sh + ch, h_img)
            x2 = min(c * sw + cw, w_img)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            logits[:, :, y1:y2, x1:x2] += _call(model, image[:, :, y1:y2, x1:x2])
            count[:, :, y1:y2, x1:x2] += 1
    return logits / count


def _clock(device: torch.device) -> float:
    """``time.perf_counter()`` after the device's queued work is done (CUDA synchronises)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def predict_scores(
    model: ModelLike,
    image: torch.Tensor,
    out_size: Sequence[int],
    num_classes: int,
    mode: str = "whole",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    resize: Sequence[int] | None = None,
    crop_size: Sequence[int] = (512, 1024),
    stride: Sequence[int] = (341, 683),
    pass_times: list[tuple[float, bool, float]] | None = None,
) -> torch.Tensor:
    """Class scores ``(B, C, *out_size)`` for a normalised ``image`` ``(B, 3, H, W)``.

    The image is resized to ``resize`` ``(h, w)`` (or kept) times each scale, optionally also
    flipped; each pass's logits are upsampled to ``out_size`` ``(h, w)`` (the label size). One
    pass returns logits; several return the mean of their softmax probabilities.
    ``pass_times``, when given, receives ``(scale, flipped, seconds)`` per pass (the network
    and the upsampling of that pass; CUDA synchronised).
    """
    if mode not in ("whole", "slide"):
        raise ConfigError(f"eval mode {mode!r}: expected 'whole' or 'slide'")
    base_h, base_w = resize if resize is not None else image.shape[-2:]
    passes = [(s, f) for s in scales for f in ([False, True] if flip else [False])]
    total: torch.Tensor | None = None
    for scale, flipped in passes:
        t0 = _clock(image.device) if pass_times is not None else 0.0
        size = (max(1, round(base_h * scale)), max(1, round(base_w * scale)))
        x = image
        if tuple(size) != tuple(image.shape[-2:]):
            x = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        if flipped:
            x = x.flip(-1)
        if mode == "slide":
            logits = slide_logits(model, x, crop_size, stride, num_classes)
        else:
            logits = _call(model, x)
        if logits.shape[1] != num_classes:
            raise ConfigError(f"the model predicts {logits.shape[1]} classes, the dataset has {num_classes}")
        if flipped:
            logits = logits.flip(-1)
        if tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)
        if len(passes) > 1:
            probs = logits.softmax(1)
            total = probs if total is None else total + probs
        if pass_times is not None:
            pass_times.append((float(scale), flipped, _clock(image.device) - t0))
        if len(passes) == 1:
            return logits
    assert total is not None
    return total / len(passes)
