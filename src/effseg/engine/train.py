"""The trainer: ``train(cfg, run_dir)`` runs one experiment, alone or under torchrun.

Iteration-based training with an epoch-seeded sampler: the sample order of epoch
``e`` is a permutation seeded by ``(train.seed, e)``, and every sample's
augmentation is seeded by ``(train.seed, e, position in the epoch)``, so a run
killed and resumed from ``last.pt`` continues exactly where it stopped (the
checkpoint holds the model, optimizer, LR scheduler, AMP scaler, iteration and
RNG states; the sampler position is derived from the iteration).

``train.batch_size`` is the *global* batch: under ``torchrun`` with N processes
each rank loads ``batch_size / N`` images (contiguous slices of the global batch)
and the loss is normalised by the global number of valid pixels, so N processes
compute the same update as one process with the whole batch (up to BatchNorm
statistics: see ``train.sync_bn`` / ``train.freeze_bn`` in docs/training.md).

Only rank 0 writes files: ``config.yaml``, ``last.pt``, ``best.pt``,
``log.jsonl`` (one JSON object per logged step / validation) and ``tb/``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from effseg.config import Config, config_from_dict, save_config
from effseg.engine import distributed as du
from effseg.engine.budget import TrainClock, budget_lr_factor, poly_lr_factor
from effseg.engine.checkpoint import load_checkpoint, load_model, load_state_dict_checked, save_checkpoint
from effseg.engine.losses import build_criterion, build_distill_loss
from effseg.errors import CheckpointError, ConfigError, EffsegError

__all__ = ["train", "TrainingDiverged", "poly_lr_factor", "EpochSampler", "build_datasets"]


class TrainingDiverged(EffsegError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- schedule


# ----------------------------------------------------------------------------- data order


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


# ----------------------------------------------------------------------------- set-up helpers


def build_datasets(cfg: Config) -> tuple[Dataset, Dataset]:
    """``(train set with the training transform, val set normalised only)`` of a config."""
    from effseg.data import build_dataset, build_eval_transform, build_train_transform

    d = cfg.data
    train_tf = build_train_transform(
        crop_size=tuple(d.crop_size),
        scale_range=tuple(d.scale_range),
        hflip=d.hflip,
        jitter=d.jitter,
        mean=tuple(d.mean),
        std=tuple(d.std),
    )
    train_set = build_dataset(d.dataset, d.root, d.train_split, transform=train_tf, **d.options)
    val_set = build_dataset(
        d.dataset,
        d.root,
        d.val_split,
        **val_dataset_options(cfg),
        transform=build_eval_transform(mean=tuple(d.mean), std=tuple(d.std)),
    )
    for name, ds in (("train", train_set), ("val", val_set)):
        if ds.num_classes != cfg.model.num_classes:
            raise ConfigError(
                f"model.num_classes={cfg.model.num_classes} but the {name} set of {d.dataset!r} "
                f"has {ds.num_classes} classes"
            )
    return train_set, val_set


def val_dataset_options(cfg: Config) -> dict[str, Any]:
    """Dataset options for evaluation: with ``eval.resize`` set, labels stay at full resolution
    (the dataset's own ``resize`` option is dropped; the evaluator resizes the image instead)."""
    opts = dict(cfg.data.options)
    if cfg.eval.resize is not None:
        opts.pop("resize", None)
    return opts


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _gather_rng(world: int) -> list[dict[str, Any]]:
    """Every rank's RNG state (index = rank), gathered on all ranks."""
    state = _rng_state()
    if world == 1:
        return [state]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, state)
    return out


def _prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Refuse to overwrite an existing run unless --resume or --force (rank 0 only)."""
    marker = [run_dir / n for n in ("config.yaml", "last.pt", "best.pt", "log.jsonl")]
    exists = run_dir.exists() and any(run_dir.iterdir())
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise CheckpointError(f"{run_dir}: nothing to resume (no last.pt)")
        return
    if exists and not force:
        raise ConfigError(
            f"run folder {run_dir} already exists; use --resume to continue it or --force to overwrite it"
        )
    if exists and force:
        if not any(p.exists() for p in marker):
            raise ConfigError(f"{run_dir} is not empty and not an effseg run folder; refusing to delete it")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _amp_dtype(amp: str) -> torch.dtype | None:
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _freeze_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict) and prefix == "":
            keys += _config_diff(a, b, f"{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


class _Logger:
    """Rank-0 JSONL + TensorBoard writer (no-op elsewhere)."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, resume_iter: int | None):
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self.tb = None
        if not enabled:
            return
        if resume_iter is not None and self.path.exists():
            # Drop entries logged after the checkpoint by the interrupted run: they are redone.
            keep = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("iteration", 0) <= resume_iter
            ]
            self.path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_iter)

    def log(self, record: dict[str, Any], prefix: str) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record["iteration"]
            for key, value in record.items():
                if key not in ("iteration", "epoch", "time") and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ----------------------------------------------------------------------------- trainer


def train(
    cfg: Config,
    run_dir: str | os.PathLike,
    resume: bool = False,
    force: bool = False,
    clock: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; returns a summary dict (``best_miou``, ``iterations``,
    ``train_time_s``, ``val_time_s``, ``stopped_by``, ...).

    Under ``torchrun`` every rank calls this; the process group is created from the
    environment and destroyed at the end if this call created it. ``clock`` (seconds,
    monotonic; default ``time.perf_counter``) measures ``train.time_budget``; tests pass
    a fake one.
    """
    if resume and force:
        raise ConfigError("--resume and --force exclude each other")
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = du.init_distributed(cfg.train.device)
    try:
        return _Trainer(cfg, Path(run_dir), info, resume, force, clock or time.perf_counter).run()
    finally:
        if owns_group:
            du.cleanup()


class _Trainer:
    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        info: du.DistInfo,
        resume: bool,
        force: bool,
        clock: Callable[[], float],
    ):
        self.cfg, self.run_dir, self.info, self.resume = cfg, run_dir, info, resume
        t = cfg.train
        self.device = info.device
        self.main = info.is_main
        world = info.world_size
        if t.batch_size % world:
            raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by the {world} processes")
        if t.sync_bn and info.distributed and self.device.type != "cuda":
            raise ConfigError("train.sync_bn needs CUDA: torch's SyncBatchNorm does not run on CPU")
        if t.amp == "fp16" and self.device.type == "cpu":
            raise ConfigError("train.amp=fp16 is for CUDA; use train.amp=bf16 on CPU")

        # Run folder (rank 0), then everyone proceeds.
        err: Exception | None = None
        if self.main:
            try:
                _prepare_run_dir(run_dir, resume, force)
            except EffsegError as e:
                err = e
        if du.broadcast_flag(err is not None, self.device):
            raise err if err is not None else ConfigError(f"rank 0 could not prepare {run_dir}")

        # Determinism.
        if t.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        random.seed(t.seed)
        np.random.seed(t.seed)
        torch.manual_seed(t.seed)

        # Data: rank 0 first (the synthetic set is generated on first use), then the others.
        err = None
        if self.main:
            try:
                self.train_set, self.val_set = build_datasets(cfg)
            except EffsegError as e:
                err = e
        if du.broadcast_flag(err is not None, self.device):  # also the barrier for the other ranks
            raise err if err is not None else ConfigError("rank 0 could not build the datasets")
        if not self.main:
            self.train_set, self.val_set = build_datasets(cfg)
        n = len(self.train_set)
        if n < t.batch_size:
            raise ConfigError(f"train.batch_size={t.batch_size} is larger than the train set ({n} images)")
        self.sampler = EpochSampler(n, t.batch_size, world, info.rank, t.seed)
        self.iters_per_epoch = self.sampler.iters_per_epoch
        # By the clock (train.time_budget, minutes) or by steps (train.iterations / epochs).
        self.budget_s = t.time_budget * 60.0 if t.time_budget is not None else None
        self.max_iters: int | None = (
            None if self.budget_s is not None else t.iterations or t.epochs * self.iters_per_epoch
        )
        self.clock = TrainClock(self.budget_s, clock)
        self.val_interval = t.val_interval or self.iters_per_epoch
        self.ckpt_interval = t.checkpoint_interval or self.val_interval
        workers = cfg.data.num_workers
        self.loader = DataLoader(
            SeededDataset(self.train_set),
            batch_size=self.sampler.local_batch,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(t.seed),  # keep the global RNG untouched
        )

        # Model.
        from effseg.models import build_model

        m = cfg.model
        model = build_model(**m.build_kwargs(), pretrained_backbone=None if resume else m.pretrained_backbone)
        self.model_config = dict(model.config)
        groups = model.parameter_groups()
        if t.bn_momentum is not None:
            for mod in model.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.momentum = t.bn_momentum
        if t.sync_bn and info.distributed:
            model = du.convert_sync_bn(model)
        model.to(self.device)
        self.channels_last = t.channels_last
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.ddp = (
            DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if info.distributed
            else None
        )

        # Optimiser, schedule, AMP.
        param_groups = [
            {"params": groups["backbone"], "lr": t.lr, "name": "backbone"},
            {"params": groups["head"], "lr": t.lr * t.head_lr_mult, "name": "head"},
        ]
        if t.no_decay_norm_bias or t.no_decay_se:
            # 1-D params (norms, biases) and/or squeeze-excitation layers move to extra groups
            # without decay (same learning rate as their group)
            from effseg.models.backbones.mobilenetv3 import SqueezeExcitation

            se = {id(p) for m in model.modules() if isinstance(m, SqueezeExcitation) for p in m.parameters()}

            def exempt(p: nn.Parameter) -> bool:
                return (t.no_decay_norm_bias and p.ndim <= 1) or (t.no_decay_se and id(p) in se)

            for g in list(param_groups):
                g["params"], no_decay = (
                    [p for p in g["params"] if not exempt(p)],
                    [p for p in g["params"] if exempt(p)],
                )
                param_groups.append(
                    {"params": no_decay, "lr": g["lr"], "weight_decay": 0.0, "name": f"{g['name']}_no_decay"}
                )
        if t.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                param_groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.nesterov
            )
        else:
            self.optimizer = torch.optim.AdamW(
                param_groups, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay
            )
        max_iters, train_clock = self.max_iters, self.clock

        def lr_lambda(it: int) -> float:
            if max_iters is None:  # by the clock: the share of the budget spent so far
                return budget_lr_factor(train_clock.fraction, t.poly_power, t.warmup_fraction, t.warmup_ratio)
            return poly_lr_factor(it, max_iters, t.poly_power, t.warmup_iters, t.warmup_ratio)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        self.amp_dtype = _amp_dtype(t.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.amp == "fp16")
        self.criterion = build_criterion(t, self.model.loss_terms).to(self.device)
        self.distill = build_distill_loss(cfg.distill)
        self.teacher = None
        if self.distill is not None:
            self.distill = self.distill.to(self.device)
            self.teacher, tmeta = load_model(cfg.distill.teacher, self.device, num_classes=m.num_classes)
            for key in ("mean", "std"):  # the teacher must see images normalised as in its training
                want, got = getattr(cfg.data, key), tmeta.get(key)
                if got is not None and not np.allclose(got, want, atol=1e-6):
                    raise ConfigError(
                        f"distill.teacher {cfg.distill.teacher} was trained with data.{key}={list(got)}, "
                        f"this run uses {want}; train the student with the teacher's normalisation"
                    )
            for p in self.teacher.parameters():
                p.requires_grad_(False)

        self.iteration = 0
        self.stopped_by: str | None = None  # "iterations" | "time_budget" once finished
        self.best_miou = -1.0
        self.last_val: dict[str, Any] | None = None
        if resume:
            self._load_resume()
        self.logger = _Logger(run_dir, self.main, t.tensorboard, self.iteration if resume else None)
        if self.main:
            self._write_config()

    # ------------------------------------------------------------------ checkpoints

    def _write_config(self) -> None:
        path = self.run_dir / "config.yaml"
        if self.resume and path.exists():
            import yaml

            try:
                old = config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8"))).to_dict()
                changed = _config_diff(old, self.cfg.to_dict())
            except EffsegError:
                changed = ["(unreadable config.yaml)"]
            if changed:
                print(f"effseg: warning: resuming with a changed config: {', '.join(changed)}")
        save_config(self.cfg, path)

    def _checkpoint(self, full: bool, rng: list[dict[str, Any]] | None) -> dict[str, Any]:
        ds = self.train_set
        obj: dict[str, Any] = {
            "model": self.model.state_dict(),
            "model_config": self.model_config,
            "classes": list(ds.classes),
            "palette": np.asarray(ds.palette).tolist(),
            "mean": list(self.cfg.data.mean),
            "std": list(self.cfg.data.std),
            "config": self.cfg.to_dict(),
            "iteration": self.iteration,
            "best_miou": self.best_miou,
            "val": self.last_val,
            "training": self._training_record(),
        }
        if full:
            obj.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                rng=rng,
                world_size=self.info.world_size,
            )
        return obj

    def _save(self, best: bool) -> None:
        rng = _gather_rng(self.info.world_size)  # collective: every rank takes part
        if self.main:
            save_checkpoint(self.run_dir / "last.pt", self._checkpoint(True, rng))
            if best:
                save_checkpoint(self.run_dir / "best.pt", self._checkpoint(False, None))

    def _load_resume(self) -> None:
        path = self.run_dir / "last.pt"
        ckpt = load_checkpoint(path, map_location=self.device)
        for key in ("model", "optimizer", "scheduler", "iteration", "rng"):
            if key not in ckpt:
                raise CheckpointError(f"{path}: cannot resume from it (no '{key}' entry)")
        load_state_dict_checked(self.model, ckpt["model"], str(path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        self.best_miou = float(ckpt.get("best_miou", -1.0))
        self.last_val = ckpt.get("val")
        done = ckpt.get("training") or {}
        self.clock.spent_s = float(done.get("train_time_s", 0.0))  # the budget clock continues
        self.clock.val_s = float(done.get("val_time_s", 0.0))
        rng = ckpt["rng"]
        if len(rng) == self.info.world_size:
            _set_rng_state(rng[self.info.rank])
        else:  # another number of processes: reproducible, but not identical to an uninterrupted run
            torch.manual_seed(self.cfg.train.seed + self.iteration * 1000 + self.info.rank)
        if self.main:
            if self.budget_s is None:
                print(f"effseg: resuming {self.run_dir} at iteration {self.iteration}/{self.max_iters}")
            else:
                print(
                    f"effseg: resuming {self.run_dir} at iteration {self.iteration}, "
                    f"{self.clock.spent_s / 60:.2f} of {self.budget_s / 60:g} min of training spent"
                )

    # ------------------------------------------------------------------ loop

    def _validate(self) -> dict[str, Any]:
        from effseg.engine.evaluate import evaluate

        e = self.cfg.eval
        result = evaluate(
            self.model,
            self.val_set,
            mode=e.mode,
            resize=e.resize,
            crop_size=e.crop_size,
            stride=e.stride,
            device=self.device,
            num_workers=e.num_workers,
            amp=self.cfg.train.amp,
            progress=False,
        )
        return result

    def _train_mode(self) -> None:
        self.model.train()
        if self.cfg.train.freeze_bn:
            _freeze_bn(self.model)

    def _step(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t = self.cfg.train
        net = self.ddp if self.ddp is not None else self.model
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        distill_loss = None
        with autocast:
            outputs = net(images)
            loss, parts = self.criterion(outputs, labels)
            if self.distill is not None:
                with torch.no_grad():
                    teacher_logits = self.teacher(images)
                student = outputs["out"] if isinstance(outputs, dict) else outputs
                kd = self.distill(student.float(), teacher_logits.float(), labels)
                parts["distill"] = kd.detach()
                distill_loss = self.cfg.distill.weight * kd
        # DDP averages gradients over ranks; rescale each rank's terms so that N ranks == one
        # process with the whole batch: per-pixel means (cross-entropy, pixel KD) by the rank's
        # share of the valid pixels, per-image means (CWD) by its share of the images.
        if self.info.distributed:
            n_images = torch.full((), labels.shape[0], dtype=torch.float32, device=labels.device)
            counts = torch.stack([(labels != 255).sum().to(torch.float32), n_images])
            totals = du.all_reduce_sum(counts.clone()).clamp(min=1)
            pixel_scale, image_scale = (counts * self.info.world_size / totals).unbind()
            loss = loss * pixel_scale
            if distill_loss is not None:
                per_image = self.cfg.distill.type == "cwd"
                distill_loss = distill_loss * (image_scale if per_image else pixel_scale)
        if distill_loss is not None:
            loss = loss + distill_loss
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self.info.distributed:
            bad = du.broadcast_flag(bad, self.device)  # every rank stops together
        if bad:
            return loss, {"nonfinite": torch.tensor(1.0)}
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if t.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), parts

    def _done(self) -> bool:
        """The stop rule: the budget is spent (by the clock) or the last iteration is done."""
        if self.max_iters is None:
            return self.clock.exhausted
        return self.iteration >= self.max_iters

    def _advance_clock(self) -> None:
        """Read the budget clock once per step; under torchrun every rank adopts rank 0's count."""
        spent = self.clock.tick()
        if self.max_iters is None and self.info.distributed:
            self.clock.set_spent(du.broadcast_float(spent, self.device))

    def _training_record(self) -> dict[str, Any]:
        """How much training a checkpoint / the log records: steps, seconds, budget, stop reason."""
        return {
            "iterations": self.iteration,
            "train_time_s": self.clock.spent_s,
            "val_time_s": self.clock.val_s,
            "time_budget_min": self.cfg.train.time_budget,
            "stopped_by": self.stopped_by,
        }

    def _make_progress(self) -> tuple[Any, Any]:
        """The rich progress bar (rank 0): steps with ETA, or the budget's minutes with its ETA."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        stats = TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[ips]} img/s")
        if self.max_iters is not None:
            columns: list[Any] = [
                MofNCompleteColumn(),
                stats,
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            ]
            total, done = float(self.max_iters), float(self.iteration)
        else:
            columns = [
                TextColumn("{task.fields[pos]}"),
                stats,
                TimeElapsedColumn(),
                TextColumn("budget ETA {task.fields[eta]}"),
            ]
            total, done = float(self.budget_s or 0.0), self.clock.spent_s
        progress = Progress(TextColumn("[bold]train[/]"), BarColumn(), *columns, disable=not self.main)
        task = progress.add_task(
            "train", total=total, completed=done, loss="-", lr="-", ips="-", pos="", eta="-"
        )
        return progress, task

    def _update_progress(self, progress: Any, task: Any) -> None:
        if self.max_iters is not None:
            progress.update(task, completed=self.iteration)
            return
        spent, budget = self.clock.spent_s, float(self.budget_s or 0.0)
        left = max(budget - spent, 0.0)
        progress.update(
            task,
            completed=min(spent, budget),
            pos=f"it {self.iteration}  {spent / 60:.1f}/{budget / 60:g} min",
            eta=f"{int(left // 60)}:{int(left % 60):02d}",
        )

    def _validate_and_log(self, epoch: int, progress: Any) -> bool:
        """Validate (outside the budget clock) and log it; returns whether it is the best so far."""
        with self.clock.paused():
            res = self._validate()
        self._train_mode()
        self.last_val = {k: res[k] for k in ("miou", "mean_acc", "pixel_acc")}
        is_best = res["miou"] > self.best_miou
        if is_best:
            self.best_miou = res["miou"]
        val_s = self.clock.last_pause_s
        self.logger.log(
            {"iteration": self.iteration, "epoch": epoch, **self.last_val, "val_time_s": val_s}, "val"
        )
        if self.main:
            progress.console.print(
                f"val @ {self.iteration}: mIoU {res['miou'] * 100:.2f}  pixel acc "
                f"{res['pixel_acc'] * 100:.2f}  (best {self.best_miou * 100:.2f})  "
                f"{val_s:.1f} s, not counted in the training time"
            )
        return is_best

    def run(self) -> dict[str, Any]:
        t = self.cfg.train
        world_imgs = t.batch_size
        progress, task = self._make_progress()
        interactive = progress.console.is_terminal
        start = time.perf_counter()
        window_start, window_iters = time.perf_counter(), 0
        loss_sum = torch.zeros((), device=self.device)
        parts_sum: dict[str, torch.Tensor] = {}
        last_loss = math.nan
        self._train_mode()
        try:
            with progress:
                self.clock.start()
                while not self._done():
                    epoch, offset = divmod(self.iteration, self.iters_per_epoch)
                    self.sampler.set_epoch(epoch, offset)
                    for images, labels in self.loader:
                        images = images.to(self.device, non_blocking=True)
                        labels = labels.to(self.device, non_blocking=True)
                        if self.channels_last:
                            images = images.contiguous(memory_format=torch.channels_last)
                        loss, parts = self._step(images, labels)
                        if "nonfinite" in parts:
                            self._diverged(loss)
                        self.iteration += 1
                        self._advance_clock()
                        self.scheduler.step()
                        finished = self._done()
                        window_iters += 1
                        loss_sum += loss
                        for k, v in parts.items():
                            parts_sum[k] = parts_sum.get(k, 0) + v
                        it = self.iteration
                        if it % t.log_interval == 0 or finished:
                            stats = torch.stack([loss_sum, *[parts_sum[k] for k in sorted(parts_sum)]])
                            stats = du.all_reduce_sum(stats) / (window_iters * self.info.world_size)
                            elapsed = time.perf_counter() - window_start
                            ips = window_iters * world_imgs / max(elapsed, 1e-9)
                            lrs = self.scheduler.get_last_lr()
                            record = {
                                "iteration": it,
                                "epoch": epoch,
                                "loss": float(stats[0]),
                                **{
                                    f"loss_{k}": float(v)
                                    for k, v in zip(sorted(parts_sum), stats[1:], strict=True)
                                },
                                "lr": lrs[0],
                                "lr_head": lrs[1],
                                "img_per_s": ips,
                                "time": time.perf_counter() - start,
                                "train_time_s": self.clock.spent_s,
                            }
                            last_loss = record["loss"]
                            self.logger.log(record, "train")
                            progress.update(
                                task, loss=f"{last_loss:.4f}", lr=f"{lrs[0]:.2e}", ips=f"{ips:.1f}"
                            )
                            if self.main and not interactive:
                                where = (
                                    f"iter {it}/{self.max_iters}"
                                    if self.max_iters is not None
                                    else f"iter {it}  {self.clock.spent_s / 60:.2f}/{t.time_budget:g} min"
                                )
                                progress.console.print(
                                    f"{where}  epoch {epoch}  loss {last_loss:.4f}  "
                                    f"lr {lrs[0]:.3e}  {ips:.1f} img/s"
                                )
                            window_start, window_iters = time.perf_counter(), 0
                            loss_sum = torch.zeros((), device=self.device)
                            parts_sum = {}
                        self._update_progress(progress, task)
                        is_best = False
                        if it % self.val_interval == 0 or finished:  # always validate at the end
                            is_best = self._validate_and_log(epoch, progress)
                        if finished:
                            self.stopped_by = "iterations" if self.max_iters is not None else "time_budget"
                        if is_best or it % self.ckpt_interval == 0 or finished:
                            self._save(best=is_best)
                        if finished:
                            break
            wall = time.perf_counter() - start
            self.logger.log(
                {"iteration": self.iteration, "event": "end", **self._training_record(), "wall_time_s": wall},
                "end",
            )
            if self.main:
                print(
                    f"effseg: stopped by {self.stopped_by} after {self.iteration} iterations: "
                    f"{self.clock.spent_s / 60:.2f} min of training, {self.clock.val_s / 60:.2f} min of "
                    f"validation (not counted), {wall / 60:.2f} min wall time in this process"
                )
        finally:
            self.logger.close()
        return {
            "run_dir": str(self.run_dir),
            "iterations": self.iteration,
            "best_miou": self.best_miou,
            "val": self.last_val,
            "final_loss": last_loss,
            "time_s": time.perf_counter() - start,
            **{k: v for k, v in self._training_record().items() if k != "iterations"},
        }

    def _diverged(self, loss: torch.Tensor) -> None:
        last = self.run_dir / "last.pt"
        kept = f"last good checkpoint kept: {last}" if last.exists() else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"loss is {float(loss.detach().float().sum())} at iteration {self.iteration + 1}; "
            f"training stopped, {kept}"
        )
