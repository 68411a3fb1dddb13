"""The run folder under faults: its lock, best.pt vs last.pt after a kill, non-finite weights,
a full disk, half-written files, and a resume before the first checkpoint (issue 14)."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from effseg import fileio as fileio_mod
from effseg.cli import main as cli_main
from effseg.config import config_from_dict, save_config
from effseg.engine import train as train_mod
from effseg.engine.checkpoint import load_checkpoint
from effseg.engine.runlock import RunFolderLocked, RunLock
from effseg.engine.train import TrainingDiverged, train
from helpers_engine import subprocess_env, tiny_config, write_config


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Killed(Exception):
    """A process killed at this point (simulated in-process)."""


def _write_lock(run: Path, pid: int) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "x"}))


# ----------------------------------------------------------------------------- 1. the lock


def test_a_live_holder_refuses_a_second_writer_and_a_dead_one_is_taken_over(
    city: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    cfg = config_from_dict(tiny_config(city, train={"iterations": 1, "val_interval": 1}))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _write_lock(run, holder.pid)
        with pytest.raises(RunFolderLocked) as info:
            train(cfg, run)
        msg = str(info.value)
        assert msg.startswith(
            f"run folder {run} is in use by process {holder.pid} on host {socket.gethostname()}"
        )
        assert "\n" not in msg and not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    summary = train(cfg, run)  # the holder is gone: its lock is stale
    assert summary["iterations"] == 1
    assert f"took over the stale lock of {run} left by process {holder.pid}" in capsys.readouterr().out
    assert not (run / ".lock").exists()  # released at the end


def test_lock_is_exclusive_and_released_only_by_its_holder(tmp_path: Path) -> None:
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    assert first.acquire() is None
    with pytest.raises(RunFolderLocked, match=rf"in use by process {__import__('os').getpid()}"):
        second.acquire()
    second.release()  # never held: the lock stays
    assert (tmp_path / ".lock").exists()
    first.release()
    assert not (tmp_path / ".lock").exists()


@pytest.mark.slow
def test_two_concurrent_trainings_the_second_is_refused(city: Path, tmp_path: Path) -> None:
    cfg = tiny_config(city, train={"iterations": 30, "val_interval": 30, "log_interval": 1})
    path = write_config(tmp_path / "exp.yaml", cfg)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "effseg", "train", str(path), "--run-dir", str(run)]
    first = subprocess.Popen(
        cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (run / "log.jsonl").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before the second started"
    second = subprocess.run(
        cmd + ["--resume"], env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2 and "Traceback" not in second.stderr
    lines = [ln for ln in second.stderr.strip().splitlines() if ln.startswith("effseg: error:")]
    assert len(lines) == 1 and lines[0].startswith(
        f"effseg: error: run folder {run} is in use by process {first.pid}"
    )
    # one training's step records (the speed record at step 1 carries no loss)
    its = [json.loads(x)["iteration"] for x in (run / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert its.count(1) == 1 and not (run / ".lock").exists()


# ----------------------------------------------------------------------------- 2. best.pt vs last.pt


def test_kill_between_best_and_last_writes_keeps_best_consistent(
    city: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    opts = {"iterations": 2, "checkpoint_interval": 1, "val_interval": 2, "deterministic": True}
    cfg = config_from_dict(tiny_config(city, train=opts))
    real = train_mod.save_checkpoint
    writes: list[tuple[str, int]] = []

    def killed_after_first_write_of_iteration_2(path, obj):
        if obj["iteration"] == 2 and any(i == 2 for _, i in writes):
            raise Killed(f"killed before writing {path}")
        writes.append((Path(path).name, obj["iteration"]))
        real(path, obj)

    monkeypatch.setattr(train_mod, "save_checkpoint", killed_after_first_write_of_iteration_2)
    with pytest.raises(Killed):
        train(cfg, run)
    monkeypatch.setattr(train_mod, "save_checkpoint", real)
    summary = train(cfg, run, resume=True)
    assert summary["iterations"] == 2
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    val = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if "miou" in x]
    assert best["iteration"] == 2 and best["best_miou"] == last["best_miou"] == max(r["miou"] for r in val)


# ----------------------------------------------------------------------------- 3. non-finite weights


def test_inf_batchnorm_statistics_are_not_saved(
    city: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_mod.build_criterion

    class PoisonOnSecondCall(torch.nn.Module):
        """The criterion, which on its second call (iteration 2) sets a running variance to inf."""

        def __init__(self, criterion: torch.nn.Module):
            super().__init__()
            self.criterion, self.calls, self.model = criterion, 0, None

        def forward(self, outputs, target):
            self.calls += 1
            if self.calls == 2:
                bn = next(m for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
                bn.running_var = torch.full_like(bn.running_var, float("inf"))  # a new buffer tensor
            return self.criterion(outputs, target)

    poison = []

    def build(*args, **kwargs):
        poison.append(PoisonOnSecondCall(real(*args, **kwargs)))
        return poison[-1]

    real_init = train_mod._Trainer.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        poison[-1].model = self.model

    monkeypatch.setattr(train_mod, "build_criterion", build)
    monkeypatch.setattr(train_mod._Trainer, "__init__", init)
    run = tmp_path / "run"
    cfg = config_from_dict(
        tiny_config(city, train={"iterations": 4, "checkpoint_interval": 1, "val_interval": 2})
    )
    with pytest.raises(
        TrainingDiverged, match=r"weights are not finite \(.*running_var.*\) at iteration 2; "
    ):
        train(cfg, run)
    assert not (run / "best.pt").exists()
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["iteration"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


# ----------------------------------------------------------------------------- 6. full disk


def test_full_disk_while_checkpointing_is_one_line(
    city: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    real_fsync, calls = fileio_mod.os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 1:  # the first checkpoint fits, the second does not
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(fileio_mod.os, "fsync", fsync)
    run = tmp_path / "run"
    path = write_config(
        tmp_path / "exp.yaml",
        tiny_config(city, train={"iterations": 3, "checkpoint_interval": 1, "val_interval": 3}),
    )
    assert cli_main(["train", str(path), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"effseg: error: {run}/last.pt: cannot write the checkpoint: no space left on the device; free some "
        f"space there or write somewhere else (the previous last.pt is intact); training stopped, last good "
        f"checkpoint kept: {run}/last.pt (iteration 1)"
    )
    assert load_checkpoint(run / "last.pt")["iteration"] == 1
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp")) and not (run / ".lock").exists()


# ----------------------------------------------------------------------------- 7 and 10: resume


def test_resume_removes_half_written_checkpoints(city: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    cfg = config_from_dict(tiny_config(city, train={"iterations": 1, "val_interval": 1}))
    train(cfg, run)
    junk = [run / ".last.pt.k1l2m3.tmp", run / ".best.pt.abcdef.tmp"]
    for p in junk:
        p.write_bytes(b"\0" * 1024)
    train(cfg, run, resume=True)
    assert not any(p.exists() for p in junk)
    assert "removed 2 half-written checkpoint file(s)" in capsys.readouterr().out


def test_resume_before_the_first_checkpoint_starts_over(city: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    cfg = tiny_config(city, train={"iterations": 2, "val_interval": 2})
    # What a run killed before its first checkpoint leaves: its config, a log line, a temp file.
    run.mkdir()
    save_config(config_from_dict(cfg), run / "config.yaml")
    (run / "log.jsonl").write_text('{"iteration": 1, "loss": 3.0}\n')
    (run / ".last.pt.zz.tmp").write_bytes(b"\0")
    path = write_config(tmp_path / "exp.yaml", cfg)
    assert cli_main(["train", str(path), "--run-dir", str(run), "--resume"]) == 0
    out = capsys.readouterr().out
    assert (
        f"nothing to resume in {run}: the run stopped before its first checkpoint (no last.pt); "
        "starting it over" in out
    )
    assert load_checkpoint(run / "last.pt")["iteration"] == 2 and not (run / ".last.pt.zz.tmp").exists()
    its = [json.loads(x)["iteration"] for x in (run / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert its == [1, 2]
    # --resume on a folder with no run at all: a new run, said so
    fresh = tmp_path / "fresh"
    assert cli_main(["train", str(path), "--run-dir", str(fresh), "--resume"]) == 0
    assert "(no run there yet); starting a new run" in capsys.readouterr().out
