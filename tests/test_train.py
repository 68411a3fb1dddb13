"""The trainer: overfitting, exact resume after a kill, NaN stop, run-folder safety, CLI errors."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from effseg.cli import main as cli_main
from effseg.config import config_from_dict
from effseg.engine import train as train_mod
from effseg.engine.checkpoint import load_checkpoint
from effseg.engine.evaluate import evaluate
from effseg.engine.train import EpochSampler, TrainingDiverged, poly_lr_factor, train
from effseg.errors import CheckpointError, ConfigError
from helpers_engine import (
    CITY_OPTIONS,
    assert_same_state,
    run_effseg,
    subprocess_env,
    tiny_config,
    write_config,
)

# ----------------------------------------------------------------------------- pure pieces


def test_poly_schedule_with_warmup() -> None:
    assert poly_lr_factor(0, 100, 0.9) == 1.0
    assert poly_lr_factor(50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_lr_factor(100, 100, 0.9) == 0.0
    assert poly_lr_factor(0, 100, 1.0, warmup_iters=10, warmup_ratio=0.1) == pytest.approx(0.1)
    assert poly_lr_factor(5, 100, 1.0, warmup_iters=10, warmup_ratio=0.1) == pytest.approx(0.55 * 0.95)
    assert poly_lr_factor(10, 100, 1.0, warmup_iters=10) == pytest.approx(0.9)


def test_sampler_shards_global_batches_and_resumes() -> None:
    single = EpochSampler(10, global_batch=4, world_size=1, rank=0, seed=3)
    ranks = [EpochSampler(10, global_batch=4, world_size=2, rank=r, seed=3) for r in range(2)]
    single.set_epoch(1)
    for s in ranks:
        s.set_epoch(1)
    full = list(single)
    assert len(full) == 8 and single.iters_per_epoch == 2  # 10 // 4, the rest dropped
    assert len({i for i, _ in full}) == 8
    parts = [list(s) for s in ranks]
    # Global batch i = rank 0's i-th half + rank 1's i-th half, with the same per-sample seeds.
    for i in range(2):
        assert parts[0][2 * i : 2 * i + 2] + parts[1][2 * i : 2 * i + 2] == full[4 * i : 4 * i + 4]
    single.set_epoch(1, start_iter=1)
    assert list(single) == full[4:]
    single.set_epoch(2)
    assert [i for i, _ in single] != [i for i, _ in full]  # another epoch, another order


# ----------------------------------------------------------------------------- training


@pytest.mark.slow
def test_overfit_pspnet_mobilenetv2(city: Path, tmp_path: Path, one_thread: None) -> None:
    """PSPNet-MobileNetV2 fits 4 synthetic 64x128 images to >= 90 % pixel accuracy in 120 steps."""
    cfg = config_from_dict(
        tiny_config(
            city,
            model={"aux": False, "head_options": {"dropout": 0.0}},
            data={
                "val_split": "train",
                "crop_size": [64, 128],
                "scale_range": [1.0, 1.0],
                "hflip": False,
                "jitter": False,
            },
            train={
                "iterations": 120,
                "batch_size": 4,
                "optimizer": "adamw",
                "lr": 0.002,
                "head_lr_mult": 1.0,
                "log_interval": 20,
                "val_interval": 120,
            },
        )
    )
    summary = train(cfg, tmp_path / "run")
    assert summary["iterations"] == 120
    assert summary["val"]["pixel_acc"] >= 0.9, summary
    # The reported score is the evaluator's, on the model that best.pt holds.
    from effseg.data import build_dataset
    from effseg.engine.checkpoint import load_model

    model, meta = load_model(tmp_path / "run" / "best.pt")
    ds = build_dataset("synthetic", city, "train", **CITY_OPTIONS)
    again = evaluate(model, ds, progress=False)
    assert again["pixel_acc"] == pytest.approx(summary["val"]["pixel_acc"])
    assert meta["iteration"] == 120


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(city: Path, tmp_path: Path) -> None:
    """Kill a real `effseg train` process after its first checkpoint, resume: same final weights."""
    cfg = tiny_config(
        city,
        data={"num_workers": 1},  # augmentation seeded per sample, also inside a worker process
        train={
            "iterations": 10,
            "checkpoint_interval": 2,
            "val_interval": 5,
            "deterministic": True,
            "tensorboard": True,
            "log_interval": 1,
        },
    )
    path = write_config(tmp_path / "exp.yaml", cfg)
    ref = run_effseg(["train", str(path), "--run-dir", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "effseg", "train", str(path), "--run-dir", str(killed_dir)],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while not (killed_dir / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    stopped_at = load_checkpoint(killed_dir / "last.pt")["iteration"]
    assert 2 <= stopped_at < 10

    # `effseg train RUN_DIR --resume` reads RUN_DIR/config.yaml and continues in RUN_DIR.
    resumed = run_effseg(["train", str(killed_dir), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {killed_dir} at iteration {stopped_at}/10" in resumed.stdout

    a, b = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(killed_dir / "last.pt")
    assert a["iteration"] == b["iteration"] == 10
    assert_same_state(a["model"], b["model"])  # exact equality
    assert a["best_miou"] == b["best_miou"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])

    # Run folder contents; the resumed log has each iteration exactly once.
    ref_dir = tmp_path / "ref"
    assert {"config.yaml", "last.pt", "best.pt", "log.jsonl", "tb"} <= {p.name for p in ref_dir.iterdir()}
    assert any((ref_dir / "tb").iterdir())
    for run in (ref_dir, killed_dir):
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        train_its = [r["iteration"] for r in records if "loss" in r]
        assert train_its == list(range(1, 11))
    ref_losses = [
        r["loss"] for r in map(json.loads, (ref_dir / "log.jsonl").read_text().splitlines()) if "loss" in r
    ]
    res_losses = [
        r["loss"] for r in map(json.loads, (killed_dir / "log.jsonl").read_text().splitlines()) if "loss" in r
    ]
    assert ref_losses == res_losses


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    city: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    real = train_mod.build_criterion

    class NanOnThirdCall(torch.nn.Module):
        def __init__(self, criterion: torch.nn.Module):
            super().__init__()
            self.criterion, self.calls = criterion, 0

        def forward(self, outputs, target):
            self.calls += 1
            loss, parts = self.criterion(outputs, target)
            return (loss * float("nan") if self.calls == 3 else loss), parts

    def nan_on_third_call(train_cfg, ignore_index=255):
        return NanOnThirdCall(real(train_cfg, ignore_index))

    monkeypatch.setattr(train_mod, "build_criterion", nan_on_third_call)
    cfg = config_from_dict(
        tiny_config(city, train={"iterations": 6, "checkpoint_interval": 1, "val_interval": 6})
    )
    with pytest.raises(TrainingDiverged, match=r"loss is nan at iteration 3; .*last good checkpoint kept"):
        train(cfg, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_bf16_autocast_and_grad_clip_on_cpu(city: Path, tmp_path: Path, one_thread: None) -> None:
    cfg = config_from_dict(
        tiny_config(
            city,
            model={"head": "ocr"},
            train={
                "iterations": 2,
                "amp": "bf16",
                "grad_clip": 1.0,
                "loss": "ohem",
                "warmup_iters": 1,
                "optimizer": "adamw",
            },
        )
    )
    summary = train(cfg, tmp_path / "run")
    assert summary["iterations"] == 2 and summary["final_loss"] == summary["final_loss"]  # not NaN
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["model_config"]["head"] == "ocr" and ckpt["classes"][0] == "road"
    assert len(ckpt["palette"]) == 19 and ckpt["config"]["train"]["amp"] == "bf16"


def test_imagenet_init_from_a_torchvision_format_file(city: Path, tmp_path: Path) -> None:
    """model.pretrained_backbone=PATH loads the file into the backbone before training."""
    from effseg.models import build_model

    backbone = build_model("pspnet", backbone="mobilenetv2").backbone
    state = {
        k: torch.full_like(v, 0.01) if v.is_floating_point() else v for k, v in backbone.state_dict().items()
    }
    state["classifier.1.weight"] = torch.zeros(1000, 1280)  # an ImageNet classifier, dropped on load
    state["classifier.1.bias"] = torch.zeros(1000)
    weights = tmp_path / "mobilenet_v2_imagenet.pth"
    torch.save(state, weights)
    cfg = config_from_dict(
        tiny_config(city, model={"pretrained_backbone": str(weights)}, train={"iterations": 1, "lr": 1e-9})
    )
    train(cfg, tmp_path / "run")
    trained = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    for key, value in backbone.named_parameters():
        torch.testing.assert_close(
            trained[f"backbone.{key}"], torch.full_like(value, 0.01), atol=1e-6, rtol=0
        )


# ----------------------------------------------------------------------------- run folders and errors


def test_existing_run_folder_is_not_overwritten(city: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("precious: true\n")
    path = write_config(tmp_path / "exp.yaml", tiny_config(city))
    assert cli_main(["train", str(path), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"run folder {run} already exists; use --resume" in err and "--force" in err
    assert (run / "config.yaml").read_text() == "precious: true\n"
    assert cli_main(["train", str(path), "--run-dir", str(run), "--resume"]) == 2
    assert "nothing to resume (no last.pt)" in capsys.readouterr().err
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an effseg run folder; refusing to delete"):
        train(config_from_dict(tiny_config(city)), other, force=True)
    assert (other / "notes.txt").exists()


def test_force_restarts_a_run(city: Path, tmp_path: Path, one_thread: None) -> None:
    cfg = config_from_dict(tiny_config(city, train={"iterations": 1, "val_interval": 1}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("old: true\n")
    (run / "stale.txt").write_text("x")
    summary = train(cfg, run, force=True)
    assert summary["iterations"] == 1 and not (run / "stale.txt").exists()
    assert "old" not in (run / "config.yaml").read_text()


def test_bad_config_is_a_clear_cli_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  head: pspnet\ntrain:\n  batch_sise: 4\n")
    assert cli_main(["train", str(path), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"effseg: error: {path}: unknown key 'train.batch_sise' (did you mean 'train.batch_size'?)"
    )
    assert cli_main(["train", str(path), "--set", "train.lr=abc"]) == 2
    assert not (tmp_path / "r").exists()


def test_dataset_and_model_class_counts_must_agree(city: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_config(city, model={"num_classes": 11}))
    with pytest.raises(ConfigError, match=r"model.num_classes=11 but the train set of 'synthetic' has 19"):
        train(cfg, tmp_path / "run")


def test_fp16_on_cpu_is_a_config_error(city: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_config(city, train={"amp": "fp16"}))
    with pytest.raises(ConfigError, match="fp16 is for CUDA; use train.amp=bf16"):
        train(cfg, tmp_path / "run")


def test_distill_needs_a_teacher_that_exists(city: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_config(city, distill={"teacher": str(tmp_path / "missing.pt")}))
    with pytest.raises(CheckpointError, match=r"missing\.pt: checkpoint file or run folder not found"):
        train(cfg, tmp_path / "run")


# ----------------------------------------------------------------------------- time budget


class FakeClock:
    """A monotonic clock that advances ``step`` seconds per reading; raises ``Killed`` after
    ``kill_after`` readings (a process killed mid-training, simulated in-process)."""

    class Killed(Exception):
        pass

    def __init__(self, start: float = 0.0, step: float = 0.125, kill_after: int | None = None):
        self.now, self.step, self.kill_after, self.calls = start, step, kill_after, 0

    def __call__(self) -> float:
        self.calls += 1
        if self.kill_after is not None and self.calls > self.kill_after:
            raise FakeClock.Killed(f"killed at clock reading {self.calls}")
        self.now += self.step
        return self.now


def _budget_cfg(city: Path, **train_opts):
    # 0.01 min = 0.6 s; the fake clock spends 0.125 s per step: steps end at 0.125 ... 0.625 s.
    opts = {
        "iterations": None,
        "time_budget": 0.01,
        "val_interval": 100,
        "checkpoint_interval": 2,
        "deterministic": True,
        **train_opts,
    }
    return config_from_dict(tiny_config(city, train=opts))


def test_budget_schedule_factor() -> None:
    from effseg.engine.budget import budget_lr_factor

    assert budget_lr_factor(0.0, 0.9) == 1.0
    assert budget_lr_factor(0.5, 0.9) == pytest.approx(0.5**0.9)
    assert budget_lr_factor(1.0, 0.9) == 0.0 and budget_lr_factor(1.7, 0.9) == 0.0
    assert budget_lr_factor(0.0, 1.0, warmup_fraction=0.1, warmup_ratio=0.1) == pytest.approx(0.1)
    assert budget_lr_factor(0.05, 1.0, warmup_fraction=0.1, warmup_ratio=0.1) == pytest.approx(0.55 * 0.95)


def test_time_budget_stops_by_the_clock_and_the_lr_reaches_zero(
    city: Path, tmp_path: Path, one_thread: None
) -> None:
    run = tmp_path / "run"
    summary = train(_budget_cfg(city), run, clock=FakeClock())
    assert summary["iterations"] == 5 and summary["stopped_by"] == "time_budget"
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["iteration"] for r in steps] == [1, 2, 3, 4, 5]
    # poly on the spent share of the budget, computed after each step: 0.125 s per step of 0.6 s.
    for r in steps:
        assert r["train_time_s"] == pytest.approx(0.125 * r["iteration"])
        want = 0.01 * max(1 - 0.125 * r["iteration"] / 0.6, 0.0) ** 0.9
        assert r["lr"] == pytest.approx(want, rel=1e-12, abs=0.0)
    assert steps[-1]["lr"] == 0.0 and steps[-1]["lr_head"] == 0.0
    # The final validation always runs; its time is logged and not counted as training.
    val = [r for r in records if "miou" in r]
    assert [r["iteration"] for r in val] == [5] and val[0]["val_time_s"] == pytest.approx(0.125)
    end = records[-1]
    assert end["event"] == "end" and end["iterations"] == 5 and end["stopped_by"] == "time_budget"
    assert end["time_budget_min"] == 0.01 and end["val_time_s"] == pytest.approx(0.125)
    assert 0 < end["process_wall_time_s"] <= end["wall_time_s"]  # the real clock, not the fake one
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["iteration"] == 5 and ckpt["training"]["stopped_by"] == "time_budget"
    assert ckpt["training"]["train_time_s"] == pytest.approx(end["train_time_s"])
    assert load_checkpoint(run / "best.pt")["training"]["iterations"] == 5
    # `effseg eval RUN` carries the training record into eval.json.
    assert cli_main(["eval", str(run), "--out", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["training"]["iterations"] == 5 and report["training"]["stopped_by"] == "time_budget"


def test_time_budget_on_the_real_clock(city: Path, tmp_path: Path, one_thread: None) -> None:
    """0.06 s of budget: the first step already spends it."""
    cfg = _budget_cfg(city, time_budget=0.001, deterministic=False)
    summary = train(cfg, tmp_path / "run")
    assert summary["iterations"] == 1 and summary["stopped_by"] == "time_budget"
    assert summary["train_time_s"] >= 0.06 and summary["val"] is not None


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_killed_budget_run_resumes_and_stops_at_the_same_budget(
    city: Path, tmp_path: Path, one_thread: None, ema_decay: float | None
) -> None:
    """Also with a weight average (train.ema_decay): the average and the optimiser's own weights
    both resume exactly."""
    cfg = _budget_cfg(city, ema_decay=ema_decay)
    ref = train(cfg, tmp_path / "ref", clock=FakeClock())
    # Readings: 1 = start, 1 + i = after step i; the 5th (after step 4) kills: last.pt is at step 2.
    with pytest.raises(FakeClock.Killed):
        train(cfg, tmp_path / "killed", clock=FakeClock(kill_after=4))
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["training"]["train_time_s"] == 0.25
    resumed = train(cfg, tmp_path / "killed", resume=True, clock=FakeClock(start=1000.0))
    assert resumed["iterations"] == ref["iterations"] == 5
    assert resumed["train_time_s"] == pytest.approx(ref["train_time_s"])
    a, b = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(tmp_path / "killed" / "last.pt")
    assert_same_state(a["model"], b["model"])
    if ema_decay is None:
        assert "train_model" not in a
        return
    assert a["ema_updates"] == b["ema_updates"] == 5
    assert_same_state(a["train_model"], b["train_model"])
    # "model" (what eval, export and predict load) is the average, not the last step's weights.
    w = "classifier.weight" if "classifier.weight" in a["model"] else next(iter(a["model"]))
    assert not torch.equal(a["model"][w], a["train_model"][w])


def test_precise_bn_reestimates_the_final_statistics_on_train_images(
    city: Path, tmp_path: Path, one_thread: None
) -> None:
    """train.precise_bn = the plain run's final weights with BatchNorm statistics recomputed on
    the train images (by hand below), validated and saved as such."""
    from effseg.engine.batchnorm import recompute_batchnorm_stats, train_image_loader
    from effseg.engine.checkpoint import load_model

    cfg = _budget_cfg(city)
    train(cfg, tmp_path / "plain", clock=FakeClock())
    summary = train(_budget_cfg(city, precise_bn=True), tmp_path / "precise", clock=FakeClock())
    model, _ = load_model(tmp_path / "plain" / "last.pt")
    batches = (b for b, _ in train_image_loader(cfg, cfg.train.batch_size))
    assert recompute_batchnorm_stats(model, batches) > 0
    want, got = model.state_dict(), load_checkpoint(tmp_path / "precise" / "last.pt")["model"]
    assert_same_state(want, got, atol=1e-5)
    stats = [k for k in want if k.endswith("running_mean")]
    plain = load_checkpoint(tmp_path / "plain" / "last.pt")["model"]
    assert any(not torch.allclose(plain[k], got[k], atol=1e-3) for k in stats)  # they did move
    records = [json.loads(line) for line in (tmp_path / "precise" / "log.jsonl").read_text().splitlines()]
    bn = [r for r in records if "precise_bn_batches" in r]
    assert len(bn) == 1 and bn[0]["iteration"] == 5 and bn[0]["precise_bn_batches"] >= 1
    assert summary["iterations"] == 5 and summary["val"] is not None


def test_resuming_without_the_average_it_needs_is_a_clear_error(
    city: Path, tmp_path: Path, one_thread: None
) -> None:
    with pytest.raises(FakeClock.Killed):
        train(_budget_cfg(city), tmp_path / "run", clock=FakeClock(kill_after=4))
    with pytest.raises(CheckpointError, match=r"cannot resume with train.ema_decay set.*no 'train_model'"):
        train(_budget_cfg(city, ema_decay=0.9), tmp_path / "run", resume=True, clock=FakeClock())


@pytest.mark.parametrize("value", [0, -5, float("nan"), float("inf")])
def test_time_budget_must_be_positive_minutes(city: Path, value: float) -> None:
    with pytest.raises(ConfigError, match=r"^key 'train.time_budget': expected a (positive|finite) number"):
        config_from_dict(tiny_config(city, train={"iterations": None, "time_budget": value}))


def test_time_budget_excludes_iterations_and_warmup_iters(city: Path) -> None:
    with pytest.raises(ConfigError, match=r"time_budget=40.0 and train.iterations=4 exclude each other"):
        config_from_dict(tiny_config(city, train={"time_budget": 40}))
    with pytest.raises(ConfigError, match=r"use train.warmup_fraction"):
        config_from_dict(tiny_config(city, train={"iterations": None, "time_budget": 1, "warmup_iters": 5}))
    with pytest.raises(ConfigError, match=r"train.warmup_fraction"):
        config_from_dict(tiny_config(city, train={"warmup_fraction": 0.1}))


def test_channels_last_on_cpu_trains(city: Path, tmp_path: Path, one_thread: None) -> None:
    opts = {"iterations": 2, "channels_last": True, "val_interval": 2}
    cfg = config_from_dict(tiny_config(city, train=opts))
    summary = train(cfg, tmp_path / "run")
    assert summary["iterations"] == 2 and math.isfinite(summary["final_loss"])
    assert summary["stopped_by"] == "iterations"


def test_validation_on_frames_training_reads_is_labelled(
    city: Path, tmp_path: Path, one_thread: None, capsys: pytest.CaptureFixture
) -> None:
    """val_split == train_split (or trainval vs val): every val record and line says so."""
    records = {}
    for val_split in ("val", "train"):
        cfg = config_from_dict(
            tiny_config(city, data={"val_split": val_split}, train={"iterations": 2, "val_interval": 2})
        )
        train(cfg, tmp_path / val_split)
        lines = (tmp_path / val_split / "log.jsonl").read_text().splitlines()
        records[val_split] = [json.loads(line) for line in lines if '"miou"' in line]
    assert records["val"] and all("val_seen_in_training" not in r for r in records["val"])
    assert records["train"] and all(r["val_seen_in_training"] is True for r in records["train"])
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "-- the model was trained on 'train''s frames (data.train_split='train')" in out
