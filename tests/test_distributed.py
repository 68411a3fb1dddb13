"""Multi-process training with torchrun (2 gloo processes on CPU) equals one process.

Why BatchNorm is frozen here: in training mode every rank normalises its half of the
batch with the statistics of that half, so 2 x 2 images are a different computation
from 1 x 4 images. On GPUs ``train.sync_bn`` makes the statistics global; torch's
SyncBatchNorm refuses CPU tensors, so this CPU test sets ``train.freeze_bn`` (BatchNorm
in eval mode, running statistics): each image's forward/backward no longer depends on
the other images of its batch. Dropout is off (each rank has its own RNG stream). Then
the only remaining differences are the gradient all-reduce (DDP averages the ranks'
gradients; the trainer normalises each rank's loss by the *global* number of valid
pixels, so the average equals the single-process gradient) and float summation order.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from effseg.engine.checkpoint import load_checkpoint
from effseg.engine.metrics import ConfusionMatrix
from helpers_engine import (
    CITY_OPTIONS,
    assert_same_state,
    run_effseg,
    subprocess_env,
    tiny_config,
    write_config,
)


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return subprocess.run(
        [*cmd, "-m", "effseg", *args], env=subprocess_env(), capture_output=True, text=True, timeout=400
    )


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from effseg.data import build_dataset

    root = tmp_path_factory.mktemp("city") / "synthetic"
    build_dataset("synthetic", root, "train", **CITY_OPTIONS)
    return root


def _train_alone_and_with_torchrun(cfg: dict, tmp_path: Path) -> tuple[dict, dict]:
    """Train ``cfg`` in one process (run ``single``) and in two gloo processes (run ``ddp``);
    returns both final checkpoints."""
    path = write_config(tmp_path / "exp.yaml", cfg)
    single = run_effseg(["train", str(path), "--run-dir", str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr
    multi = torchrun(["train", str(path), "--run-dir", str(tmp_path / "ddp")])
    assert multi.returncode == 0, multi.stderr + multi.stdout
    return load_checkpoint(tmp_path / "single" / "last.pt"), load_checkpoint(tmp_path / "ddp" / "last.pt")


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(city: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        city,
        model={"aux": False, "head_options": {"dropout": 0.0}},
        train={"iterations": 3, "batch_size": 4, "freeze_bn": True, "val_interval": 3, "log_interval": 1},
    )
    a, b = _train_alone_and_with_torchrun(cfg, tmp_path)
    assert a["iteration"] == b["iteration"] == 3 and b["world_size"] == 2 and len(b["rng"]) == 2
    assert_same_state(a["model"], b["model"], atol=2e-5)
    # The tolerance is meaningful: 3 steps moved the weights far more than it (the trainer seeds
    # torch with train.seed before building the model, so the initial weights are reproducible).
    from effseg.models import build_model

    torch.manual_seed(0)
    init = build_model("pspnet", backbone="mobilenetv2", num_classes=19, aux=False, dropout=0.0).state_dict()
    moved = max((a["model"][k] - init[k]).abs().max().item() for k in init if init[k].is_floating_point())
    assert moved > 100 * 2e-5
    # Validation is sharded over the ranks and its confusion matrix summed: same scores.
    assert b["val"]["pixel_acc"] == pytest.approx(a["val"]["pixel_acc"], abs=1e-3)
    # Only rank 0 wrote files: one line per logged iteration, not two.
    lines = (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()
    assert len([ln for ln in lines if '"loss"' in ln]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["kd", "cwd"])
def test_distillation_under_ddp_equals_one_process(city: Path, tmp_path: Path, kind: str) -> None:
    # Pixel KD is a per-valid-pixel mean like cross-entropy, CWD a per-image mean; the crops are
    # padded with void by varying amounts, so the two ranks' valid-pixel shares differ and
    # scaling the CWD term by them (instead of by the image share) would move the weights away
    # from the single-process run (1.3e-4 here, checked when the test was written).
    from effseg.engine.batchnorm import recompute_batchnorm_stats
    from effseg.engine.checkpoint import save_checkpoint
    from effseg.models import build_model

    torch.manual_seed(3)
    teacher = build_model("fcn", backbone="mobilenetv3_small", num_classes=19, output_stride=32, aux=False)
    # At initialisation the eval-mode network's logits are nearly constant over the image (its
    # running statistics are 0 / 1), which makes CWD ~0; estimating them on random images gives
    # a teacher whose class maps vary.
    recompute_batchnorm_stats(teacher, (torch.randn(4, 3, 64, 64) for _ in range(4)))
    teacher_path = tmp_path / "teacher.pt"
    save_checkpoint(teacher_path, {"model": teacher.state_dict(), "model_config": dict(teacher.config)})
    cfg = tiny_config(
        city,
        model={"aux": False, "head_options": {"dropout": 0.0}},
        data={"scale_range": [0.4, 1.0]},  # padded with void by varying amounts
        train={"iterations": 3, "batch_size": 4, "freeze_bn": True, "val_interval": 3, "log_interval": 1},
        distill={"teacher": str(teacher_path), "type": kind, "temperature": 4.0, "weight": 1.0},
    )
    a, b = _train_alone_and_with_torchrun(cfg, tmp_path)
    assert_same_state(a["model"], b["model"], atol=2e-5)
    logged = [json.loads(ln) for ln in (tmp_path / "single" / "log.jsonl").read_text().splitlines()]
    assert min(r["loss_distill"] for r in logged if "loss_distill" in r) > 0.05  # the term is not idle


@pytest.mark.slow
def test_sync_bn_on_cpu_is_a_clear_error(city: Path, tmp_path: Path) -> None:
    path = write_config(tmp_path / "exp.yaml", tiny_config(city, train={"sync_bn": True, "batch_size": 2}))
    out = torchrun(["train", str(path), "--run-dir", str(tmp_path / "run")])
    assert out.returncode != 0
    assert "train.sync_bn needs CUDA: torch's SyncBatchNorm does not run on CPU" in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reduce_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        cm = ConfusionMatrix(3)
        # rank 0 sees one pixel of class 0 right; rank 1 one pixel of class 2 predicted as 1.
        cm.update(torch.tensor([0]), torch.tensor([0])) if rank == 0 else cm.update(
            torch.tensor([1]), torch.tensor([2])
        )
        cm.all_reduce()
        if rank == 0:
            torch.save(cm.mat, out)
    finally:
        dist.destroy_process_group()


def test_confusion_matrix_all_reduce_over_gloo(tmp_path: Path) -> None:
    out = tmp_path / "mat.pt"
    mp.spawn(_reduce_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    expected = torch.zeros(3, 3, dtype=torch.int64)
    expected[0, 0] = 1
    expected[2, 1] = 1
    assert torch.equal(torch.load(out, weights_only=True), expected)


# ----------------------------------------------------------------------------- two "nodes" under torchrun


def _two_nodes(args: list[str], logs: Path) -> list[subprocess.Popen]:
    """Start torchrun twice on this machine as two nodes of one process each (c10d rendezvous,
    gloo); their output goes to ``logs/node{0,1}.txt``."""
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        f"--rdzv-id=effseg-test-{port}",
        "-m",
        "effseg",
        *args,
    ]
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for node in range(2):
        out = (logs / f"node{node}.txt").open("w")
        procs.append(subprocess.Popen(cmd, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT))
    return procs


def _wait_all(procs: list[subprocess.Popen], logs: Path, timeout: float = 300) -> str:
    """Wait for every agent; the first that fails ends the others at once (a node left alone
    would wait for its peer's rendezvous until the timeout)."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            _end(p)
    text = "".join((logs / f"node{i}.txt").read_text() for i in range(len(procs)))
    assert all(p.returncode == 0 for p in procs), text[-3000:]
    return text


def _run_two_nodes(args: list[str], logs: Path) -> str:
    """Two nodes to the end; retried once when gloo's first connection attempt loses its race
    ("connectFullMesh failed": a peer not yet listening on a loaded machine), a start-up flake
    of gloo's TCP transport, not of effseg."""
    try:
        return _wait_all(_two_nodes(args, logs), logs)
    except AssertionError as err:
        if "connectFullMesh failed" not in str(err):
            raise
        return _wait_all(_two_nodes(args, logs), logs)


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _end(agent: subprocess.Popen) -> None:
    """Kill a still running torchrun agent and its workers."""
    if agent.poll() is None:
        for pid in _children(agent.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        agent.kill()
        agent.wait()


def _ddp_config(city: Path, **train: object) -> dict:
    return tiny_config(
        city,
        model={"aux": False, "head_options": {"dropout": 0.0}},
        train={"batch_size": 4, "freeze_bn": True, "log_interval": 1, **train},
    )


@pytest.mark.slow
def test_two_nodes_equal_one_process(city: Path, tmp_path: Path) -> None:
    """torchrun --nnodes 2 --nproc-per-node 1 started twice (c10d rendezvous) == one process."""
    path = write_config(tmp_path / "exp.yaml", _ddp_config(city, iterations=3, val_interval=3))
    single = run_effseg(["train", str(path), "--run-dir", str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr
    _run_two_nodes(["train", str(path), "--run-dir", str(tmp_path / "nodes")], tmp_path / "logs")
    a, b = load_checkpoint(tmp_path / "single" / "last.pt"), load_checkpoint(tmp_path / "nodes" / "last.pt")
    assert b["world_size"] == 2 and a["iteration"] == b["iteration"] == 3
    assert_same_state(a["model"], b["model"], atol=2e-5)
    lines = (tmp_path / "nodes" / "log.jsonl").read_text().splitlines()
    assert len([ln for ln in lines if '"loss"' in ln]) == 3  # one writer for the job
    assert not (tmp_path / "nodes" / ".lock").exists()


def _one_agent(args: list[str], logs: Path, max_restarts: int) -> subprocess.Popen:
    """One torchrun agent (``--standalone``) with two gloo workers that it restarts together
    when one fails; its output goes to ``logs/node0.txt``."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        f"--max-restarts={max_restarts}",
        "--monitor-interval=0.5",
        "-m",
        "effseg",
        *args,
    ]
    logs.mkdir(parents=True, exist_ok=True)
    out = (logs / "node0.txt").open("w")
    return subprocess.Popen(cmd, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_worker_is_restarted_and_resumes_from_last_pt(city: Path, tmp_path: Path) -> None:
    """--max-restarts 3: SIGKILL one worker mid-training; torchrun restarts both workers, which
    resume from last.pt (the same command line: --resume starts a run that has none) and end
    with the weights of an uninterrupted run.

    One agent with two workers, not two one-worker agents ("nodes"): torch's elastic agents
    count restarts per node, so after a kill the node that lost its worker starts round 1 while
    its peer, restarted for the membership change, starts round 0 again; on this 2-core machine
    the peer's gloo connection then failed in every round (4 of 4, "connectFullMesh failed:
    Connection refused") and once hung until the test's timeout. That is torch's multi-node
    restart protocol, not effseg's resume, which this test checks. Three restarts, not one: a
    restarted round can still lose gloo's connection race on a loaded machine and needs another
    restart, which resumes from last.pt just the same."""
    cfg = _ddp_config(city, iterations=10, checkpoint_interval=2, val_interval=10, deterministic=True)
    path = write_config(tmp_path / "exp.yaml", cfg)
    ref = torchrun(["train", str(path), "--run-dir", str(tmp_path / "ref"), "--resume"])
    assert ref.returncode == 0, ref.stderr[-3000:]

    run = tmp_path / "killed"
    agent = _one_agent(["train", str(path), "--run-dir", str(run), "--resume"], tmp_path / "logs", 3)
    worker_killed = False
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and agent.poll() is None:
            if (run / "last.pt").exists() and load_checkpoint(run / "last.pt")["iteration"] >= 4:
                break
            time.sleep(0.05)
        workers = _children(agent.pid)
        assert len(workers) == 2 and agent.poll() is None, "the job ended before a worker could be killed"
        killed_at = load_checkpoint(run / "last.pt")["iteration"]
        assert killed_at < 10
        os.kill(workers[0], signal.SIGKILL)
        worker_killed = True
    finally:
        if not worker_killed:  # the test failed before the kill: end the job here
            _end(agent)
    out = _wait_all([agent], tmp_path / "logs", timeout=300)
    assert f"effseg: resuming {run} at iteration" in out
    a, b = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(run / "last.pt")
    assert a["iteration"] == b["iteration"] == 10
    assert_same_state(a["model"], b["model"])  # exact
    assert not (run / ".lock").exists()
