"""Process-group set-up for ``torchrun`` (single- and multi-node) and rank helpers.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them and initialises NCCL on CUDA
or gloo on CPU. Without them everything runs as a single process (rank 0 of 1).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from effseg.device import resolve_device
from effseg.errors import ConfigError, EffsegError

__all__ = [
    "DistInfo",
    "broadcast_float",
    "check_setup",
    "scale_to_global_batch",
    "init_distributed",
    "cleanup",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "all_reduce_sum",
    "broadcast_flag",
    "convert_sync_bn",
    "rank_failure",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", what: str = "train.device") -> DistInfo:
    """Join the process group described by torchrun's environment (or run alone).

    ``device`` is resolved by :func:`effseg.device.resolve_device` (the one device rule; ``cuda``
    and ``auto`` on a CUDA machine mean ``cuda:<LOCAL_RANK>``); ``what`` names the setting in
    its errors."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank, what=what)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, **_store_per_restart(rank, world))
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def _store_per_restart(rank: int, world: int) -> dict:
    """``init_process_group`` arguments that give each torchrun restart its own store keys.

    torchrun's agent keeps one key-value store for every restart of a job, and the workers'
    process group writes its addresses there under the same names each round. After a worker
    was killed, the next round's workers found the dead round's keys: they connected to closed
    ports ("connectFullMesh failed: Connection refused", restart after restart) or waited for
    each other forever (tests/test_distributed.py, a 2-core machine under load). A prefix per
    restart gives each round clean keys. Only when one agent runs all the workers
    (``GROUP_WORLD_SIZE`` 1): agents count restarts per node, so with several nodes the counts
    can differ and the workers would wait under different prefixes; there torch's own store
    use is kept. Empty (torch's defaults) outside torchrun's agent store."""
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if (
        restart is None
        or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
        or os.environ.get("GROUP_WORLD_SIZE", "1") != "1"
    ):
        return {}
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False)
    return {"store": dist.PrefixStore(f"effseg/restart_{restart}", store), "rank": rank, "world_size": world}


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (identity when running alone); returns the tensor."""
    if get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is True on any rank (e.g. a NaN loss on one GPU)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(t).item() > 0)


def broadcast_float(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (float64; ``value`` itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def convert_sync_bn(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm by SyncBatchNorm (statistics over the whole global batch)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def check_setup(t: Any, info: DistInfo) -> None:
    """What a ``TrainConfig`` cannot check alone: the batch split, SyncBN and fp16 on this device."""
    world = info.world_size
    if t.batch_size % world:
        raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by the {world} processes")
    if t.sync_bn and info.distributed and info.device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA: torch's SyncBatchNorm does not run on CPU")
    if t.amp == "fp16" and info.device.type == "cpu":
        raise ConfigError("train.amp=fp16 is for CUDA; use train.amp=bf16 on CPU")


def scale_to_global_batch(
    loss: torch.Tensor, distill_loss: torch.Tensor | None, labels: torch.Tensor, per_image: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rescale this rank's loss terms so that DDP's gradient average over N ranks equals one
    process with the whole batch: per-pixel means (cross-entropy, pixel KD) by the rank's
    share of the valid pixels (label != 255), per-image means (CWD: ``per_image``) by its
    share of the images. ``labels``: (b, H, W) of this rank. Collective (all ranks call it)."""
    world = get_world_size()
    n_images = torch.full((), labels.shape[0], dtype=torch.float32, device=labels.device)
    counts = torch.stack([(labels != 255).sum().to(torch.float32), n_images])
    totals = all_reduce_sum(counts.clone()).clamp(min=1)
    pixel_scale, image_scale = (counts * world / totals).unbind()
    loss = loss * pixel_scale
    if distill_loss is not None:
        distill_loss = distill_loss * (image_scale if per_image else pixel_scale)
    return loss, distill_loss


def rank_failure(err: BaseException) -> BaseException:
    """The error to stop this process with: under torchrun one line naming the rank, also written
    to the error file torchrun's agent reads (``TORCHELASTIC_ERROR_FILE``), so that its failure
    summary shows effseg's line for each rank instead of a pointer to torch's docs.

    ``err`` is an :class:`EffsegError` (bad input, or "rank 0 could not ...") or a collective that
    failed because another process died (``torch.distributed.DistError``, many lines: its first
    one is kept). Run alone, ``err`` is returned unchanged."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return err
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if not isinstance(err, EffsegError):
        text = f"lost the other processes ({type(err).__name__}: {text}); the first rank's error says why"
    message = f"rank {os.environ.get('RANK', '?')} of {world}: {text}"
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        try:
            with open(path, "w", encoding="utf-8") as f:
                # torchrun's structured form without a "py_callstack": its summary shows the message
                line = {
                    "message": f"effseg: error: {message}",
                    "extraInfo": {"timestamp": str(int(time.time()))},
                }
                json.dump({"message": line}, f)
        except OSError:
            pass  # the summary then says less; the line below is printed all the same
    return EffsegError(message)
