"""Precise BatchNorm: re-estimate every BatchNorm's running statistics with the weights fixed.

Wu & Johnson (2021), *Rethinking "Batch" in BatchNorm*: the exponential running averages lag
weights that are still moving (after a short schedule, or with torchvision's MobileNetV3
momentum 0.01), so the network evaluated with them is not the one that was trained.  Setting
``momentum=None`` makes PyTorch keep the plain cumulative average, which is what is wanted here;
no hand-written statistics.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["precise_batchnorm", "recompute_batchnorm_stats", "train_image_loader"]


def recompute_batchnorm_stats(model: nn.Module, images: Iterable[torch.Tensor]) -> int:
    """Reset every BatchNorm's running mean/variance and re-estimate them as the average over
    the batches of ``images`` (each (B, 3, H, W), on the model's device), weights untouched.

    The model runs in training mode under ``torch.no_grad()``; each BatchNorm's momentum and the
    model's train/eval mode are restored afterwards.  Returns the number of batches used (0 and
    nothing changed when the model has no BatchNorm).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = model.training
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the batches below
    batches = 0
    model.train()
    try:
        with torch.no_grad():
            for batch in images:
                model(batch)
                batches += 1
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
    return batches


def train_image_loader(cfg: Any, batch_size: int = 8) -> DataLoader:
    """``cfg.data``'s training images as (images (B, 3, H, W), labels) batches, whole, eval
    transform (resize and normalisation, no augmentation), in file order: what precise BN
    averages over."""
    from effseg.data import build_dataset, build_eval_transform

    d = cfg.data
    dataset = build_dataset(
        d.dataset,
        d.root,
        d.train_split,
        transform=build_eval_transform(mean=tuple(d.mean), std=tuple(d.std)),
        **d.options,
    )
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def precise_batchnorm(checkpoint: str | Path, cfg: Any, batch_size: int = 8) -> int:
    """Recompute every BatchNorm's running mean/variance of ``checkpoint`` as the plain average
    over the training images of ``cfg.data`` (:func:`train_image_loader`), and save it back
    atomically.

    After a short schedule, or with MobileNetV3's BatchNorm momentum 0.01, the exponential
    running averages still lag the fast-changing weights and the network predicts one or two
    classes in eval mode although it segments well in train mode (measured on CamVid:
    docs/camvid.md). Returns the number of images used; the checkpoint gains
    ``precise_bn: {"images": n}``. ``train.precise_bn`` does the same at the end of training.
    """
    from effseg.engine.checkpoint import load_checkpoint, load_model, save_checkpoint

    model, _ = load_model(checkpoint)
    loader = train_image_loader(cfg, batch_size)
    if recompute_batchnorm_stats(model, (images for images, _ in loader)) == 0:
        return 0
    ckpt = load_checkpoint(checkpoint)
    ckpt["model"] = model.state_dict()
    ckpt["precise_bn"] = {"images": len(loader.dataset)}
    save_checkpoint(checkpoint, ckpt)
    return len(loader.dataset)
