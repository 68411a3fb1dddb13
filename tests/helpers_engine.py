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


def tiny_cityscapes_checkpoint(tmp_path: Path, model: torch.nn.Module, size: tuple[int, int]) -> Path:
    """A checkpoint of ``model`` (19 classes) whose stored config points at a 2-image
    Cityscapes-layout val split of ``size`` = (H, W) under ``tmp_path/cs`` (road below, sky above):
    what ``effseg eval CHECKPOINT`` needs and nothing more."""
    import numpy as np
    from PIL import Image

    from effseg.config import config_from_dict
    from effseg.engine.checkpoint import save_checkpoint

    h, w = size
    root = tmp_path / "cs"
    rng = np.random.default_rng(0)
    for i in range(2):
        lab = np.full((h, w), 7, np.uint8)
        lab[: h // 3] = 23
        img = rng.integers(0, 255, (h, w, 3), np.uint8)
        for sub, name, arr in (
            ("leftImg8bit", f"lindau_{i:06d}_000019_leftImg8bit.png", img),
            ("gtFine", f"lindau_{i:06d}_000019_gtFine_labelIds.png", lab),
        ):
            (root / sub / "val" / "lindau").mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / sub / "val" / "lindau" / name)
    cfg = config_from_dict({"data": {"dataset": "cityscapes", "root": str(root)}, "eval": {"num_workers": 0}})
    ckpt = tmp_path / "run" / "last.pt"
    state = {"model": model.state_dict(), "model_config": model.config, "config": cfg.to_dict()}
    save_checkpoint(ckpt, state)
    return ckpt


def predict_class_ids(model: Path, frames: Path, out: Path, runtime: str, capsys: Any) -> Any:
    """``effseg predict MODEL FRAMES --class-ids --runtime RUNTIME`` in process; asserts exit 0 and
    the summary line naming the runtime and frame count; returns the ids as (N, H, W) uint8."""
    import numpy as np
    from PIL import Image

    from effseg.cli import main as cli_main

    names = sorted(p.name for p in frames.iterdir())
    code = cli_main(["predict", str(model), str(frames), "--out", str(out), "--class-ids",
                     "--runtime", runtime, "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"runtime {runtime}" in err and f"{len(names)} frames" in err
    return np.stack([np.asarray(Image.open(out / "ids" / n)) for n in names])
