"""Joint image/label transforms built on albumentations.

Both builders return a callable ``(image uint8 (H, W, 3) RGB, label uint8 (H, W)) ->
(image FloatTensor (3, h, w) normalised, label LongTensor (h, w))``.  Labels are only
ever resampled by nearest neighbour: every geometric op below sets
``mask_interpolation=cv2.INTER_NEAREST`` explicitly, and padding fills labels with 255.

:meth:`JointTransform.as_uint8` is the same augmentation (the same random draws for the same
seed) without the normalisation: ``(image uint8 (h, w, 3) RGB, label uint8 (h, w))`` tensors,
a quarter of the bytes for a DataLoader worker to hand over; the trainer normalises the batch
(:func:`effseg.engine.speed.model_input`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from effseg.config import IMAGENET_MEAN, IMAGENET_STD
from effseg.errors import DataError

IGNORE_INDEX = 255


class JointTransform:
    """An albumentations pipeline applied to an image and its label together (picklable).

    ``uint8=False``: the pipeline ends in ``Normalize`` + ``ToTensorV2`` and the call returns
    ``(float (3, h, w), int64 (h, w))``; ``uint8=True``: it has neither and the call returns
    ``(uint8 (h, w, 3), uint8 (h, w))`` (:meth:`as_uint8`).
    """

    def __init__(self, pipeline: A.Compose, uint8: bool = False) -> None:
        self.pipeline = pipeline
        self.uint8 = uint8

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.pipeline(image=image, mask=label)
        if self.uint8:
            return torch.from_numpy(np.ascontiguousarray(out["image"])), torch.from_numpy(
                np.ascontiguousarray(out["mask"], dtype=np.uint8)
            )
        return out["image"], out["mask"].long()

    def as_uint8(self) -> JointTransform:
        """This augmentation without its normalisation (``Normalize``, ``ToTensorV2``): the
        same crops, flips and colours for the same seed, as uint8 ``(h, w, 3)`` image and
        ``(h, w)`` label tensors."""
        if self.uint8:
            return self
        # copies: albumentations ops hold their own random generators, which must not be shared
        ops = [
            copy.deepcopy(op)
            for op in self.pipeline.transforms
            if not isinstance(op, (A.Normalize, ToTensorV2))
        ]
        return JointTransform(A.Compose(ops), uint8=True)

    def set_random_seed(self, seed: int) -> None:
        """Seed the pipeline's own generators (albumentations ignores the global RNGs)."""
        self.pipeline.set_random_seed(seed)

    def __repr__(self) -> str:
        return f"JointTransform({self.pipeline!r})"


def _hw(size: Sequence[int] | int, what: str) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise DataError(f"{what} {size!r}: expected (height, width)") from None
    if h <= 0 or w <= 0:
        raise DataError(f"{what} {size!r}: height and width must be positive")
    return h, w


def build_train_transform(
    crop_size: Sequence[int] | int = (512, 1024),
    scale_range: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    jitter: bool = True,
    blur: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> JointTransform:
    """Random scale -> pad (image 0, label 255) -> random crop ``crop_size = (H, W)`` -> flip
    -> photometric jitter -> blur (probability ``blur``: Gaussian or motion, 3-7 px kernels; the
    label is untouched) -> normalise -> tensors."""
    ch, cw = _hw(crop_size, "crop_size")
    lo, hi = float(scale_range[0]), float(scale_range[1])
    if not 0 < lo <= hi:
        raise DataError(f"scale_range {scale_range!r}: expected 0 < low <= high")
    if not 0.0 <= blur <= 1.0:
        raise DataError(f"blur {blur!r}: expected a probability in [0, 1]")
    ops: list = []
    if (lo, hi) != (1.0, 1.0):
        # albumentations biases scale_limit by 1: (lo - 1, hi - 1) samples factors in [lo, hi].
        ops.append(
            A.RandomScale(
                scale_limit=(lo - 1.0, hi - 1.0),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=1.0,
            )
        )
    ops += [
        A.PadIfNeeded(
            min_height=ch,
            min_width=cw,
            position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=IGNORE_INDEX,
        ),
        A.RandomCrop(height=ch, width=cw),
    ]
    if hflip:
        ops.append(A.HorizontalFlip(p=0.5))
    if jitter:
        ops.append(A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.03, p=0.8))
    if blur > 0:
        ops.append(A.OneOf([A.GaussianBlur(blur_limit=(3, 7)), A.MotionBlur(blur_limit=(3, 7))], p=blur))
    ops += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    return JointTransform(A.Compose(ops))


def build_eval_transform(
    resize: Sequence[int] | int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> JointTransform:
    """Optional resize to ``resize = (H, W)`` (bilinear image, nearest label) -> normalise -> tensors.

    Evaluating at label resolution means ``resize=None`` (the default).
    """
    ops: list = []
    if resize is not None:
        h, w = _hw(resize, "resize")
        ops.append(
            A.Resize(height=h, width=w, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)
        )
    ops += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    return JointTransform(A.Compose(ops))


def denormalize(
    image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """Inverse of the normalisation: ``(3, H, W)`` float tensor -> ``uint8 (H, W, 3)`` RGB."""
    m = torch.tensor(mean, dtype=image.dtype).view(3, 1, 1)
    s = torch.tensor(std, dtype=image.dtype).view(3, 1, 1)
    out = (image.detach().cpu() * s + m).clamp(0, 1) * 255.0
    return out.round().to(torch.uint8).permute(1, 2, 0).numpy()
