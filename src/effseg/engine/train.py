"""The trainer: ``train(cfg, run_dir)`` runs one experiment, alone or under torchrun.

It reads like torchvision's ``references/segmentation/train.py``: :meth:`_Trainer.run`
calls :meth:`_Trainer.train_one_epoch` until the run is done, which runs
:meth:`_Trainer.train_step` per batch and :meth:`_Trainer.evaluate` every
``val_interval`` iterations and at the end. The bookkeeping is in small named steps and
modules: data and model set-up (:mod:`effseg.engine.setup`), the run folder and its lock
(:mod:`effseg.engine.rundir`), the weight average (:mod:`effseg.engine.ema`), the data order
(:mod:`effseg.engine.sampler`), the optimiser and schedule (:mod:`effseg.engine.optim`),
the time budget (:mod:`effseg.engine.budget`), the log and progress bar
(:mod:`effseg.engine.runlog`), distillation (:class:`effseg.engine.distill.Distiller`),
checkpoints and resume (:meth:`_Trainer.save`, :meth:`_Trainer.load_resume`).

Iteration-based (``train.iterations`` / ``epochs``) or by the clock (``train.time_budget``).
An epoch-seeded sampler and per-sample augmentation seeds make a killed run resumed from
``last.pt`` continue exactly where it stopped (the checkpoint holds the model, optimizer,
LR scheduler, AMP scaler, iteration, training time and RNG states).

``train.batch_size`` is the *global* batch: under ``torchrun`` with N processes each rank
loads ``batch_size / N`` images (contiguous slices of the global batch) and the loss is
normalised by the global number of valid pixels, so N processes compute the same update
as one process with the whole batch (up to BatchNorm statistics: see ``train.sync_bn`` /
``train.freeze_bn`` in docs/training.md).

Only rank 0 writes files: ``config.yaml``, ``last.pt``, ``best.pt``, ``log.jsonl`` and
``tb/``, under the run folder's lock ``.lock``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from effseg.config import Config
from effseg.data.from_config import trained_on_note
from effseg.engine import distributed as du
from effseg.engine.budget import TrainClock, poly_lr_factor
from effseg.engine.checkpoint import (
    load_checkpoint,
    load_state_dict_checked,
    nonfinite_entries,
    save_checkpoint,
)
from effseg.engine.distill import Distiller
from effseg.engine.ema import WeightEMA
from effseg.engine.init_weights import check_resume_options, init_record
from effseg.engine.losses import build_criterion
from effseg.engine.optim import build_optimizer, build_scheduler
from effseg.engine.rundir import open_run_dir, write_config
from effseg.engine.runlock import RunLock
from effseg.engine.runlog import LossWindow, RunLog, TrainProgress
from effseg.engine.sampler import EpochSampler, gather_rng, seed_everything, set_rng_state
from effseg.engine.setup import build_data, build_model
from effseg.engine.speed import AMP_DTYPES, compile_cache_dir, resolve_amp
from effseg.engine.step import TrainStep
from effseg.errors import CheckpointError, ConfigError, EffsegError

__all__ = ["train", "TrainingDiverged", "poly_lr_factor", "EpochSampler"]


class TrainingDiverged(EffsegError, RuntimeError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""


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
    lock: RunLock | None = None
    try:
        du.check_setup(cfg.train, info)
        resume, lock = open_run_dir(Path(run_dir), info, resume, force)
        summary = _Trainer(cfg, Path(run_dir), info, resume, clock).run()
        # Every rank is done before any tears the process group down: a gloo rank whose peer
        # destroyed the group while it was still finishing aborted at exit (SIGABRT,
        # "terminate called without an active exception"; 1 run in ~10 of the DDP tests).
        du.barrier()
        return summary
    finally:
        if lock is not None:
            lock.release()
        if owns_group:
            du.cleanup()


class _Trainer:
    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        info: du.DistInfo,
        resume: bool,
        clock: Callable[[], float] | None = None,
    ):
        self.cfg, self.run_dir, self.info, self.resume = cfg, run_dir, info, resume
        t = cfg.train
        self.device, self.main = info.device, info.is_main
        seed_everything(t.seed, t.deterministic, self.device)
        self.train_set, self.val_set, self.sampler, self.loader = build_data(cfg, info)
        self.iters_per_epoch = self.sampler.iters_per_epoch
        # By the clock (train.time_budget, minutes) or by steps (train.iterations / epochs).
        self.budget_s = t.time_budget * 60.0 if t.time_budget is not None else None
        self.max_iters: int | None = (
            None if self.budget_s is not None else t.iterations or t.epochs * self.iters_per_epoch
        )
        self.clock = TrainClock(self.budget_s, clock or time.perf_counter)
        self.stop_reason = "iterations" if self.max_iters is not None else "time_budget"
        self.val_interval = t.val_interval or self.iters_per_epoch
        # validation on frames training reads (data.train_split trainval, val_split val): say so
        self.val_seen = trained_on_note(cfg.to_dict(), cfg.data.val_split)
        self.ckpt_interval = t.checkpoint_interval or self.val_interval
        self.model, self.ddp = build_model(cfg, info, resume)
        self.model_config = dict(self.model.config)
        self.channels_last = t.channels_last
        self.ema = WeightEMA(self.model, t.ema_decay) if t.ema_decay is not None else None
        self.optimizer = build_optimizer(self.model, t)
        self.scheduler = build_scheduler(self.optimizer, t, self.max_iters, self.clock)
        self.amp, self.amp_reason = resolve_amp(t.amp, self.device)  # train.amp: auto -> what is fast here
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.step = TrainStep(
            self.model,
            self.ddp if self.ddp is not None else self.model,
            build_criterion(t, self.model.loss_terms).to(self.device),
            self.optimizer,
            self.scaler,
            device=self.device,
            amp_dtype=AMP_DTYPES[self.amp],
            channels_last=t.channels_last,
            mean=cfg.data.mean,
            std=cfg.data.std,
            grad_clip=t.grad_clip,
            distiller=Distiller.from_config(cfg, self.device),
            distributed=info.distributed,
            compiled=t.compile,
        )

        self.iteration = 0
        self.saved_iteration: int | None = None  # of the last intact last.pt
        self.stopped_by: str | None = None  # "iterations" | "time_budget" once finished
        self.best_miou = -1.0
        self.last_val: dict[str, Any] | None = None
        self.last_loss, self.wall_before = math.nan, 0.0
        if resume:
            self.load_resume()

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict[str, Any]:
        t = self.cfg.train
        self.log = RunLog(self.run_dir, self.main, t.tensorboard, self.iteration if self.resume else None)
        if self.main:
            write_config(self.cfg, self.run_dir, self.resume)
        if (record := init_record(self.model)) is not None:  # model.init: loaded, re-initialised, why
            self.log.log(record, "init")
        start = self.started = time.perf_counter()
        self.window = LossWindow(self.device)
        self._train_mode()
        try:
            with TrainProgress(
                self.main, self.max_iters, self.iteration, self.budget_s, self.clock.spent_s
            ) as self.progress:
                self.clock.start()
                while not self.done():
                    self.train_one_epoch()
            self.stopped_by = self.stop_reason  # also when resuming a run that had finished
            self._log_end(time.perf_counter() - start)
        finally:
            self.log.close()
        return {
            "run_dir": str(self.run_dir),
            "iterations": self.iteration,
            "best_miou": self.best_miou,
            "val": self.last_val,
            "final_loss": self.last_loss,
            "time_s": time.perf_counter() - start,
            **{k: v for k, v in self.training_record().items() if k != "iterations"},
        }

    def done(self) -> bool:
        """The stop rule: the budget is spent (by the clock) or the last iteration is done."""
        if self.max_iters is None:
            return self.clock.exhausted
        return self.iteration >= self.max_iters

    def train_one_epoch(self) -> None:
        """Steps from the current iteration to the end of its epoch, or to the end of the run;
        logs every ``log_interval``, validates every ``val_interval`` and at the end, saves."""
        t = self.cfg.train
        epoch, offset = divmod(self.iteration, self.iters_per_epoch)
        self.sampler.set_epoch(epoch, offset)
        for images, labels in self.loader:
            loss, parts = self.train_step(images, labels)
            finished = self.done()
            self.window.add(loss, parts)
            it = self.iteration
            if it % t.log_interval == 0 or finished:
                self._log_window(epoch)
            self.progress.position(it, self.clock.spent_s)
            if finished and t.precise_bn:
                self.precise_bn()
            is_best = self.evaluate(epoch) if it % self.val_interval == 0 or finished else False
            if finished:
                self.stopped_by = self.stop_reason
            if is_best or it % self.ckpt_interval == 0 or finished:
                self.save(best=is_best)
            if finished:
                return

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """One optimiser step on a batch (images (b, H, W, 3) uint8 or normalised (b, 3, H, W)
        float, labels (b, H, W)), the clock and the LR schedule (:class:`TrainStep`); a
        non-finite loss stops the run before the weights are touched."""
        first = self.step.first_step_s is None
        loss, parts = self.step(
            images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        )
        if first:
            self._log_first_step()
        if "nonfinite" in parts:
            self._diverged(f"loss is {float(loss.detach().float().sum())}")
        if self.ema is not None:
            self.ema.update(self.model)
        self.iteration += 1
        spent = self.clock.tick()
        if self.max_iters is None and self.info.distributed:  # every rank stops on rank 0's clock
            self.clock.set_spent(du.broadcast_float(spent, self.device))
        self.scheduler.step()
        return loss, parts

    def evaluate(self, epoch: int) -> bool:
        """Validate (outside the budget clock) and log it; returns whether it is the best so far."""
        from effseg.engine.evaluate import eval_options, evaluate

        options = eval_options(self.cfg.eval, tta=False)  # the eval section's settings, no TTA
        options.update(device=self.device, amp=self.amp, progress=False)
        with self.clock.paused():
            res = evaluate(self.inference_model, self.val_set, **options)
        self._train_mode()
        self.last_val = {k: res[k] for k in ("miou", "mean_acc", "pixel_acc")}
        is_best = res["miou"] > self.best_miou
        if is_best:
            self.best_miou = res["miou"]
        val_s = self.clock.last_pause_s
        self.log.log(
            {"iteration": self.iteration, "epoch": epoch, **self.last_val, "val_time_s": val_s}
            | ({"val_seen_in_training": True} if self.val_seen else {}),
            "val",
        )
        self.progress.print(
            f"val @ {self.iteration}: mIoU {res['miou'] * 100:.2f}  pixel acc {res['pixel_acc'] * 100:.2f}  "
            f"(best {self.best_miou * 100:.2f})  {val_s:.1f} s, not counted in the training time"
            + (f" -- {self.val_seen}" if self.val_seen else "")
        )
        return is_best

    def precise_bn(self) -> None:
        """``train.precise_bn``: re-estimate every BatchNorm's statistics of the final weights as
        the plain average over the train images (:mod:`effseg.engine.batchnorm`; every rank
        computes the same), outside the budget clock like validation."""
        from effseg.engine.batchnorm import recompute_batchnorm_stats, train_image_loader

        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        loader = train_image_loader(self.cfg, self.cfg.train.batch_size)
        with self.clock.paused():
            n = recompute_batchnorm_stats(
                self.inference_model, (b.to(self.device).contiguous(memory_format=fmt) for b, _ in loader)
            )
        self._train_mode()
        secs = self.clock.last_pause_s
        self.log.log({"iteration": self.iteration, "precise_bn_batches": n, "precise_bn_time_s": secs}, "bn")
        self.progress.print(
            f"precise BN: BatchNorm statistics re-estimated on {n} batches of train images, "
            f"{secs:.1f} s, not counted in the training time"
        )

    @property
    def inference_model(self) -> nn.Module:
        """The network validated and saved as ``model``: the weight average with
        ``train.ema_decay``, else the trained weights."""
        return self.ema.module if self.ema is not None else self.model

    def _train_mode(self) -> None:
        self.model.train()
        if self.cfg.train.freeze_bn:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    # ------------------------------------------------------------------ logging

    def _log_window(self, epoch: int) -> None:
        w, t = self.window, self.cfg.train
        stats = torch.stack([w.loss, *[w.parts[k] for k in sorted(w.parts)]])
        stats = du.all_reduce_sum(stats) / (w.iters * self.info.world_size)
        ips = w.iters * t.batch_size / max(time.perf_counter() - w.start, 1e-9)
        lrs = self.scheduler.get_last_lr()
        record = {
            "iteration": self.iteration,
            "epoch": epoch,
            "loss": float(stats[0]),
            **{f"loss_{k}": float(v) for k, v in zip(sorted(w.parts), stats[1:], strict=True)},
            "lr": lrs[0],
            "lr_head": lrs[1],
            "img_per_s": ips,
            "time": time.perf_counter() - self.started,
            "train_time_s": self.clock.spent_s,
        }
        self.last_loss = record["loss"]
        self.log.log(record, "train")
        self.progress.stats(self.last_loss, lrs[0], ips)
        if not self.progress.interactive:
            where = (
                f"iter {self.iteration}/{self.max_iters}"
                if self.max_iters is not None
                else f"iter {self.iteration}  {self.clock.spent_s / 60:.2f}/{t.time_budget:g} min"
            )
            self.progress.print(
                f"{where}  epoch {epoch}  loss {self.last_loss:.4f}  lr {lrs[0]:.3e}  {ips:.1f} img/s"
            )
        w.reset()

    def _log_first_step(self) -> None:
        """Log the precision ``train.amp`` resolved to (and why), eager or compiled, and the
        first step's seconds (compilation included: the cost a warm compile cache saves)."""
        secs, compiled = self.step.first_step_s or 0.0, self.cfg.train.compile
        record = {"amp": self.amp, "amp_reason": self.amp_reason, "compile": compiled, "first_step_s": secs}
        self.log.log({"iteration": self.iteration + 1, **record}, "setup")
        how = f"compiled, graphs cached in {compile_cache_dir()}" if compiled else "eager"
        self.progress.print(f"first step {secs:.1f} s ({how}); amp {self.amp}: {self.amp_reason}")

    def _log_end(self, wall_s: float) -> None:
        record = {"iteration": self.iteration, "event": "end", **self.training_record()}
        self.log.log({**record, "process_wall_time_s": wall_s}, "end")
        if self.main:
            print(
                f"effseg: stopped by {self.stopped_by} after {self.iteration} iterations: "
                f"{self.clock.spent_s / 60:.2f} min of training, {self.clock.val_s / 60:.2f} min of "
                f"validation (not counted), {record['wall_time_s'] / 60:.2f} min wall time"
            )

    def training_record(self) -> dict[str, Any]:
        """How much training a checkpoint / the log records: steps, seconds (training, validation,
        wall clock since the run started, over resumes), budget, stop reason."""
        wall = self.wall_before + time.perf_counter() - getattr(self, "started", time.perf_counter())
        return {
            "iterations": self.iteration,
            "train_time_s": self.clock.spent_s,
            "val_time_s": self.clock.val_s,
            "wall_time_s": wall,
            "time_budget_min": self.cfg.train.time_budget,
            "stopped_by": self.stopped_by,
        }

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self, full: bool, rng: list[dict[str, Any]] | None) -> dict[str, Any]:
        ds = self.train_set
        obj: dict[str, Any] = {
            "model": self.inference_model.state_dict(),
            "model_config": self.model_config,
            "classes": list(ds.classes),
            "palette": np.asarray(ds.palette).tolist(),
            "mean": list(self.cfg.data.mean),
            "std": list(self.cfg.data.std),
            "config": self.cfg.to_dict(),
            "iteration": self.iteration,
            "best_miou": self.best_miou,
            "val": self.last_val,
            "training": self.training_record(),
        }
        if full:
            obj.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                rng=rng,
                world_size=self.info.world_size,
            )
            if self.ema is not None:  # the optimiser's own weights, for exact resume
                obj.update(train_model=self.model.state_dict(), ema_updates=self.ema.updates)
        return obj

    def save(self, best: bool) -> None:
        """Write ``best.pt`` (if ``best``) then ``last.pt``, only with finite weights.

        ``best.pt`` first: a kill between the two writes leaves a ``last.pt`` from before,
        whose resumed run redoes the steps; the best record is read back from ``best.pt``
        itself (:meth:`load_resume`), so the two never disagree.
        """
        bad = nonfinite_entries(self.inference_model.state_dict())
        if du.broadcast_flag(bool(bad), self.device):
            what = (
                f"{bad[0]}" + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
                if bad
                else "on another rank"
            )
            self._diverged(f"weights are not finite ({what})", at=self.iteration)
        rng = gather_rng(self.info.world_size)  # collective: every rank takes part
        err: Exception | None = None
        if self.main:
            try:
                if best:
                    save_checkpoint(self.run_dir / "best.pt", self._checkpoint(False, None))
                save_checkpoint(self.run_dir / "last.pt", self._checkpoint(True, rng))
                self.saved_iteration = self.iteration
            except CheckpointError as e:
                err = CheckpointError(f"{e}; training stopped, {self._kept()}")
        if du.broadcast_flag(err is not None, self.device):
            raise err if err is not None else CheckpointError("rank 0 could not write its checkpoint")

    def load_resume(self) -> None:
        """Model, optimiser, schedule, scaler, iteration, clock and RNG states from ``last.pt``;
        the best mIoU from ``best.pt`` (the record of the best is the best checkpoint itself)."""
        path = self.run_dir / "last.pt"
        ckpt = load_checkpoint(path, map_location=self.device)
        for key in ("model", "optimizer", "scheduler", "iteration", "rng"):
            if key not in ckpt:
                raise CheckpointError(f"{path}: cannot resume from it (no '{key}' entry)")
        check_resume_options(ckpt.get("model_config"), self.model_config, path)  # e.g. pool_order
        if self.ema is None:
            load_state_dict_checked(self.model, ckpt["model"], str(path))
        elif "train_model" not in ckpt:
            raise CheckpointError(
                f"{path}: cannot resume with train.ema_decay set: it was written without it "
                "(no 'train_model' entry); resume with train.ema_decay=null"
            )
        else:
            load_state_dict_checked(self.model, ckpt["train_model"], str(path))
            self.ema.load_state_dict(ckpt["model"], int(ckpt["ema_updates"]), str(path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = self.saved_iteration = int(ckpt["iteration"])
        best = self.run_dir / "best.pt"
        self.best_miou = float(load_checkpoint(best).get("best_miou", -1.0)) if best.is_file() else -1.0
        self.last_val = ckpt.get("val")
        done = ckpt.get("training") or {}
        self.clock.spent_s = float(done.get("train_time_s", 0.0))  # the budget clock continues
        self.clock.val_s = float(done.get("val_time_s", 0.0))
        self.wall_before = float(done.get("wall_time_s", 0.0))
        rng = ckpt["rng"]
        if len(rng) == self.info.world_size:
            set_rng_state(rng[self.info.rank])
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

    def _kept(self) -> str:
        last = self.run_dir / "last.pt"
        if self.saved_iteration is not None and last.exists():
            return f"last good checkpoint kept: {last} (iteration {self.saved_iteration})"
        return "no checkpoint was written yet"

    def _diverged(self, what: str, at: int | None = None) -> None:
        it = self.iteration + 1 if at is None else at
        raise TrainingDiverged(f"{what} at iteration {it}; training stopped, {self._kept()}")
