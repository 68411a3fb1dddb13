"""The data order: an epoch-seeded sampler, per-sample seeded augmentation, RNG states.

The sample order of epoch ``e`` is a permutation seeded by ``(train.seed, e)``, and
every sample's augmentation is seeded by ``(train.seed, e, position in the epoch)``,
independent of the rank and of the data-loading worker. A resumed run therefore
continues exactly where it stopped: the sampler position follows from the iteration,
and the training RNG (dropout) is restored from :func:`rng_state` in the checkpoint.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = [
    "EpochSampler",
    "seed_everything",
    "SeededDataset",
    "build_train_loader",
    "gather_rng",
    "rng_state",
    "sample_seed",
    "set_rng_state",
]


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """Augmentation seed of the sample at ``position`` of ``epoch`` (independent of rank/worker)."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


class EpochSampler(Sampler):
    """Yields ``(dataset index, augmentation seed)`` for this rank's share of one epoch.

    Epoch ``e`` uses ``randperm(n)`` seeded with ``seed + e`` (last incomplete global
    batch dropped). Global batch ``i`` is ``perm[i*B:(i+1)*B]``; rank ``r`` takes the
    contiguous slice ``[r*b, (r+1)*b)`` of it (``b = B / world``). ``set_epoch(e,
    start_iter)`` skips the first ``start_iter`` global batches (resume).
    """

    def __init__(self, n: int, global_batch: int, world_size: int = 1, rank: int = 0, seed: int = 0):
        self.n, self.global_batch, self.world, self.rank, self.seed = n, global_batch, world_size, rank, seed
        self.local_batch = global_batch // world_size
        self.iters_per_epoch = n // global_batch
        self.epoch, self.start_iter = 0, 0

    def set_epoch(self, epoch: int, start_iter: int = 0) -> None:
        self.epoch, self.start_iter = epoch, start_iter

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        for i in range(self.start_iter, self.iters_per_epoch):
            start = i * self.global_batch + self.rank * self.local_batch
            for pos in range(start, start + self.local_batch):
                yield perm[pos], sample_seed(self.seed, self.epoch, pos)

    def __len__(self) -> int:
        return (self.iters_per_epoch - self.start_iter) * self.local_batch


def _seed_transform(transform: Any, seed: int) -> None:
    """Re-seed an albumentations pipeline, which draws from its own generators, not the globals."""
    for obj in (transform, getattr(transform, "pipeline", None)):
        if obj is not None and hasattr(obj, "set_random_seed"):
            obj.set_random_seed(seed)


class SeededDataset(Dataset):
    """``dataset[(index, seed)]``: the sample with all its random augmentation seeded by ``seed``.

    Python, NumPy and torch global RNGs are seeded for the call and restored after it,
    so data loading never disturbs the training RNG (dropout) in the main process.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            _seed_transform(getattr(self.dataset, "transform", None), seed)
            sample = self.dataset[index]
        random.setstate(py_state)
        np.random.set_state(np_state)
        return sample


def _worker_init(worker_id: int) -> None:
    """A DataLoader worker runs on one core: OpenCV's own thread pool would compete with the
    model's threads (torch already runs one thread in a worker)."""
    import cv2

    cv2.setNumThreads(1)


def build_train_loader(
    dataset: Dataset, sampler: EpochSampler, num_workers: int, seed: int, pin_memory: bool
) -> DataLoader:
    """The training loader: ``(images (b, 3, H, W), labels (b, H, W))`` batches of this rank.

    ``num_workers=0`` loads in the main process; workers persist across epochs.
    """
    return DataLoader(
        SeededDataset(dataset),
        batch_size=sampler.local_batch,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
        persistent_workers=num_workers > 0,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),  # keep the global RNG untouched
    )


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch (and CUDA) RNG states, as tensors and plain values
    (so that a ``weights_only`` checkpoint can hold them)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA only with the same number of devices)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def gather_rng(world: int) -> list[dict[str, Any]]:
    """Every rank's RNG state (index = rank), gathered on all ranks."""
    state = rng_state()
    if world == 1:
        return [state]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, state)
    return out


def seed_everything(seed: int, deterministic: bool, device: torch.device) -> None:
    """Seed Python, NumPy and torch; with ``deterministic``, deterministic algorithms only."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
