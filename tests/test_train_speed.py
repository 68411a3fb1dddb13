"""The fast training path (issue 23): train.amp auto, uint8 batches, fused optimiser, train.compile.

Correctness guards: the uint8 batches give the float pipeline's loss curve, the compiled step
gives the eager one's (within float noise), and a compiled run still resumes exactly and keeps
its run-folder lock; the precision and optimiser choices follow the device, not an assumed
instruction set (CUDA's branch checked with its capability faked on this CPU-only machine).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effseg.config import IMAGENET_MEAN, IMAGENET_STD, TrainConfig, config_from_dict
from effseg.data import build_train_transform
from effseg.engine import setup as setup_mod
from effseg.engine import speed
from effseg.engine import train as train_mod
from effseg.engine.checkpoint import load_checkpoint
from effseg.engine.optim import build_optimizer
from effseg.engine.runlock import RunFolderLocked
from effseg.engine.train import train
from effseg.models.contract import LossTerm
from helpers_engine import assert_same_state, tiny_config


@pytest.fixture(autouse=True)
def _restore_compile_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # noqa: ANN201
    """speed.compile_step switches process-wide inductor settings (FX-graph and autograd caches,
    TORCHINDUCTOR_CACHE_DIR): undo them after each test, so that a later test in the same worker
    starts from torch's defaults,
    and keep the compile cache of these tests in their own folder."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    saved = inductor_config.save_config()
    saved_aot = functorch_config.save_config()
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("EFFSEG_CACHE", str(tmp_path / "effseg_cache"))
    yield
    inductor_config.load_config(saved)
    functorch_config.load_config(saved_aot)
    if env is None:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = env


def losses(run: Path) -> list[float]:
    from effseg.engine.runlog import read_log

    return [r["loss"] for r in read_log(run / "log.jsonl") if "loss" in r]


# ----------------------------------------------------------------------------- the pieces


def test_amp_auto_follows_the_device_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    caps = {"avx2": True, "amx_bf16": False, "avx512_bf16": False}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: dict(caps))
    assert speed.resolve_amp("auto", cpu)[0] == "none"
    assert "no AMX-BF16" in speed.resolve_amp("auto", cpu)[1]
    caps["amx_bf16"] = True
    assert speed.resolve_amp("auto", cpu) == ("bf16", "cpu with bf16 arithmetic")
    caps.update(amx_bf16=False, avx512_bf16=True)
    assert speed.resolve_amp("auto", cpu)[0] == "bf16"
    assert speed.resolve_amp("none", cpu) == ("none", "set in the config")  # an explicit choice stays
    assert speed.resolve_amp("bf16", cpu)[0] == "bf16"
    # CUDA (faked: this machine has none): bf16 where supported, else fp16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert speed.resolve_amp("auto", cuda)[0] == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert speed.resolve_amp("auto", cuda)[0] == "fp16"
    assert speed.resolve_amp("auto", torch.device("meta"))[0] == "none"


def test_uint8_transform_is_the_same_augmentation_normalised_later() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    label = rng.integers(0, 12, (60, 80), dtype=np.uint8)
    floats = build_train_transform(crop_size=(48, 64), scale_range=(0.75, 1.5))
    raw = floats.as_uint8()
    assert raw.as_uint8() is raw
    for seed in range(4):
        floats.set_random_seed(seed)
        raw.set_random_seed(seed)
        x, y = floats(image, label)
        xu, yu = raw(image, label)
        assert xu.dtype == yu.dtype == torch.uint8 and xu.shape == (48, 64, 3) and yu.shape == (48, 64)
        assert y.dtype == torch.int64 and torch.equal(yu.long(), y)  # same crop, flip and labels
        batch = speed.model_input(xu[None], IMAGENET_MEAN, IMAGENET_STD, channels_last=True)
        assert batch.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(batch[0], x, atol=1e-5, rtol=0)  # same colours, normalised here
        plain = speed.model_input(xu[None], IMAGENET_MEAN, IMAGENET_STD, channels_last=False)
        assert plain.is_contiguous() and torch.equal(plain, batch)
    # a float batch (any other transform) passes through, only its layout changes
    f = torch.randn(2, 3, 8, 8)
    assert torch.equal(speed.model_input(f, IMAGENET_MEAN, IMAGENET_STD, True), f)


def test_optimiser_is_fused_on_cpu_and_device_agnostic_elsewhere() -> None:
    model = _Tiny()
    for name in ("adamw", "sgd"):
        opt = build_optimizer(model, TrainConfig(optimizer=name))
        assert opt.defaults["fused"] is True
    with torch.device("meta"):
        meta = _Tiny()
    opt = build_optimizer(meta, TrainConfig(optimizer="adamw"))  # no fused kernel on meta: foreach
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]
    x = speed.model_input(
        torch.empty(2, 8, 8, 3, dtype=torch.uint8, device="meta"), IMAGENET_MEAN, IMAGENET_STD, True
    )
    assert x.device.type == "meta" and x.dtype == torch.float32 and x.shape == (2, 3, 8, 8)


def test_compile_cache_dir_is_persistent_and_overridable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("EFFSEG_CACHE", str(tmp_path / "c"))
    assert speed.compile_cache_dir() == tmp_path / "c" / "inductor"
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # importing inductor writes its /tmp default into the variable: that is not the user's choice
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    assert speed.compile_cache_dir() == tmp_path / "c" / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert speed.compile_cache_dir() == tmp_path / "mine"


# ----------------------------------------------------------------------------- whole runs


class _Tiny(nn.Module):
    """A two-layer network with the model contract (main + 0.4 aux), quick to compile."""

    def __init__(self, num_classes: int = 19) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.config = {"name": "pspnet", "backbone": "mobilenetv2", "num_classes": num_classes}
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.head, self.aux = nn.Conv2d(8, num_classes, 1), nn.Conv2d(8, num_classes, 1)
        self.loss_terms = {"out": LossTerm(1.0, "seg"), "aux": LossTerm(0.4, "seg")}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "backbone": list(self.stem.parameters()),
            "head": [*self.head.parameters(), *self.aux.parameters()],
        }

    def forward(self, x: torch.Tensor):
        f, size = self.stem(x), x.shape[-2:]
        out = F.interpolate(self.head(f), size, mode="bilinear", align_corners=False)
        if not self.training:
            return out
        return {"out": out, "aux": F.interpolate(self.aux(f), size, mode="bilinear", align_corners=False)}


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer builds :class:`_Tiny` whatever the config names (the rest is the real trainer)."""
    import effseg.models

    def build(*args, **kwargs):
        torch.manual_seed(0)
        return _Tiny(kwargs.get("num_classes", 19))

    monkeypatch.setattr(effseg.models, "build_model", build)


def test_uint8_batches_give_the_float_pipelines_loss_curve(
    city: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None, tiny_model: None
) -> None:
    cfg = config_from_dict(tiny_config(city, train={"iterations": 4, "val_interval": 4, "seed": 3}))
    train(cfg, tmp_path / "uint8")
    monkeypatch.setattr(setup_mod, "uint8_batches", lambda dataset: None)  # workers normalise, as before
    train(cfg, tmp_path / "float")
    a, b = losses(tmp_path / "uint8"), losses(tmp_path / "float")
    assert len(a) == 4 and a[0] != a[-1]
    np.testing.assert_allclose(a, b, rtol=1e-4)
    setup = [json.loads(r) for r in (tmp_path / "uint8" / "log.jsonl").read_text().splitlines()]
    first = next(r for r in setup if "first_step_s" in r)
    assert first["amp"] == "none" and first["compile"] is False and first["iteration"] == 1


@pytest.mark.slow
def test_compiled_step_matches_eager_and_resumes_exactly(
    city: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None, tiny_model: None
) -> None:
    base = tiny_config(city, train={"iterations": 6, "val_interval": 3, "checkpoint_interval": 2, "seed": 1})
    eager = config_from_dict(base)
    compiled = config_from_dict({**base, "train": {**base["train"], "compile": True, "channels_last": True}})
    train(eager, tmp_path / "eager")
    train(compiled, tmp_path / "ref")
    # the same loss curve per image within float noise (fused kernels round differently)
    np.testing.assert_allclose(losses(tmp_path / "ref"), losses(tmp_path / "eager"), rtol=2e-3)

    # a compiled run stopped after its checkpoint at iteration 2 resumes to the same weights;
    # while it runs, the run folder is locked against a second trainer
    real_step, seen = train_mod._Trainer.train_step, []

    class Stop(Exception):
        pass

    def step(self, images, labels):
        if self.iteration == 2:
            with pytest.raises(RunFolderLocked):
                train(compiled, tmp_path / "cut", resume=True)
            seen.append("locked")
            raise Stop
        return real_step(self, images, labels)

    monkeypatch.setattr(train_mod._Trainer, "train_step", step)
    with pytest.raises(Stop):
        train(compiled, tmp_path / "cut")
    monkeypatch.setattr(train_mod._Trainer, "train_step", real_step)
    assert seen == ["locked"] and load_checkpoint(tmp_path / "cut" / "last.pt")["iteration"] == 2
    train(compiled, tmp_path / "cut", resume=True)
    a, b = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["iteration"] == b["iteration"] == 6
    assert_same_state(a["model"], b["model"])  # exact equality
    assert losses(tmp_path / "ref") == losses(tmp_path / "cut")
