"""The trainer's set-up steps: the data (datasets, sampler, loader) and the model (BatchNorm
momentum, SyncBN, device, memory format, DDP wrapper), each one function of the config."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from effseg.config import Config
from effseg.data.base import check_readable
from effseg.data.from_config import build_datasets
from effseg.data.transforms import JointTransform
from effseg.engine import distributed as du
from effseg.engine.sampler import EpochSampler, build_train_loader
from effseg.errors import ConfigError, EffsegError

__all__ = ["build_data", "build_model", "uint8_batches"]


def build_data(cfg: Config, info: du.DistInfo) -> tuple[Dataset, Dataset, EpochSampler, DataLoader]:
    """Train and val datasets (rank 0 first: the synthetic set is generated on first use), the
    epoch sampler of this rank and the train loader."""
    t = cfg.train
    err = None
    if info.is_main:
        try:
            train_set, val_set = build_datasets(cfg)
            # a corrupt image stops the run now (header + last bytes, no decode: ~0.2 s for CamVid's
            # 734 train files), not in a loader worker mid-run or at the first validation
            check_readable(train_set)
            check_readable(val_set)
        except EffsegError as e:
            err = e
    if du.broadcast_flag(err is not None, info.device):  # also the barrier for the other ranks
        raise err if err is not None else ConfigError("rank 0 could not build the datasets")
    if not info.is_main:
        train_set, val_set = build_datasets(cfg)
    n = len(train_set)
    if n < t.batch_size:
        fit = n - n % info.world_size  # the largest global batch the set fills, split over the ranks
        raise ConfigError(
            f"train.batch_size={t.batch_size} is larger than the train set ({n} images); "
            f"set --set train.batch_size={fit} or less (or add images)"
        )
    uint8_batches(train_set)
    sampler = EpochSampler(n, t.batch_size, info.world_size, info.rank, t.seed)
    loader = build_train_loader(train_set, sampler, cfg.data.num_workers, t.seed, info.device.type == "cuda")
    return train_set, val_set, sampler, loader


def uint8_batches(dataset: Dataset) -> None:
    """Let the workers hand over uint8 crops (a quarter of the bytes of normalised float32) where
    ``dataset``'s transform is effseg's own: the same augmentation, normalised on the training
    side (:func:`effseg.engine.speed.model_input`). Any other transform is left as it is."""
    transform = getattr(dataset, "transform", None)
    if isinstance(transform, JointTransform):
        dataset.transform = transform.as_uint8()  # type: ignore[attr-defined]


def build_model(
    cfg: Config, info: du.DistInfo, resume: bool
) -> tuple[nn.Module, DistributedDataParallel | None]:
    """The model on its device (BatchNorm momentum, SyncBN, memory format as configured) and,
    under torchrun, its DDP wrapper; ``model.init`` loaded and ``train.freeze`` applied
    (:mod:`effseg.engine.init_weights`). No pretrained backbone or init weights are loaded when
    resuming (the checkpoint holds every weight)."""
    from effseg.engine.init_weights import finish_model, prepare_model
    from effseg.models import build_model as build_network

    t, m = cfg.train, cfg.model
    source, backbone = prepare_model(cfg, resume)  # model.init; the options it fixes join cfg.model
    model = build_network(**m.build_kwargs(), pretrained_backbone=backbone)
    if t.bn_momentum is not None:
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.momentum = t.bn_momentum
    if t.sync_bn and info.distributed:
        model = du.convert_sync_bn(model)
    finish_model(model, source, cfg, resume, info.is_main)  # load model.init (not on resume), train.freeze
    model.to(info.device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ddp = None
    if info.distributed:
        ids = [info.device.index] if info.device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids)
    return model, ddp
