"""Shared helpers for the engine tests: tiny configs on a tiny synthetic city."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from effseg.engine.checkpoint import load_checkpoint

# 4 train / 2 val scenes of 128x64 (W x H), generated once per test session by the data module.
CITY_OPTIONS = {"n_train": 4, "n_val": 2, "size": "128x64", "seed": 0}


def tiny_config(root: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A CPU-sized config dict (PSPNet-MobileNetV2 on the tiny city); ``sections`` update it."""
    cfg: dict[str, Any] = {
        "model": {"head": "pspnet", "backbone": "mobilenetv2", "num_classes": 19},
        "data": {
            "dataset": "synthetic",
            "root": str(root),
            "options": dict(CITY_OPTIONS),
            "crop_size": "64x64",
            "scale_range": [0.75, 1.25],
            "num_workers": 0,
        },
        "train": {
            "iterations": 4,
            "batch_size": 2,
            "log_interval": 1,
            "val_interval": 2,
            "tensorboard": False,
            "device": "cpu",
        },
        "eval": {"num_workers": 0},
    }
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **copy.deepcopy(values)}
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def subprocess_env(threads: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_effseg(args: list[str], timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "effseg", *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def model_state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if atol == 0.0:
            assert torch.equal(a[key], b[key]), f"{key} differs"
        else:
            torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=lambda m, k=key: f"{k}: {m}")
