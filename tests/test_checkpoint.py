"""Checkpoints: atomic writes, weights_only loading, rebuilding a model, clear errors."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest
import torch

from effseg.engine import checkpoint as ck
from effseg.engine.checkpoint import load_checkpoint, load_model, resolve_checkpoint, save_checkpoint
from effseg.errors import CheckpointError
from effseg.models import build_model

MODEL_KW = {"head": "fcn", "backbone": "mobilenetv2", "num_classes": 5, "aux": False}


class Payload:  # a pickled instance of this class is "code" for weights_only loading
    def __init__(self) -> None:
        self.x = 1


def effseg_ckpt(model: torch.nn.Module, prefix: str = "") -> dict:
    return {
        "model": {prefix + k: v for k, v in model.state_dict().items()},
        "model_config": dict(model.config),
        "classes": [f"c{i}" for i in range(model.num_classes)],
        "palette": [[i, i, i] for i in range(model.num_classes)],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "config": {"model": {"head": "fcn"}},
        "iteration": 3,
    }


def test_atomic_save_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"iteration": 1, "w": torch.ones(3)})

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"iteration": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 1
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # no temp file left behind


def test_load_refuses_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused: the file carries code") as info:
        load_checkpoint(path)
    assert "weights_only=False" not in str(info.value)


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    not_dict = tmp_path / "list.pt"
    torch.save([torch.ones(1)], not_dict)
    with pytest.raises(CheckpointError, match="expected a checkpoint dict"):
        load_checkpoint(not_dict)
    with pytest.raises(CheckpointError, match="neither last.pt nor best.pt"):
        resolve_checkpoint(tmp_path)


def test_load_model_strips_module_prefix_and_returns_meta(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(**MODEL_KW)
    save_checkpoint(tmp_path / "last.pt", effseg_ckpt(model, prefix="module."))
    loaded, meta = load_model(tmp_path)  # a run folder: falls back to last.pt
    assert not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    assert meta["classes"] == ["c0", "c1", "c2", "c3", "c4"] and meta["num_classes"] == 5
    assert meta["mean"] == [0.5, 0.5, 0.5] and meta["iteration"] == 3
    assert meta["path"].endswith("last.pt")
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    assert torch.equal(loaded(x), model(x))


def test_last_preferred_over_best(tmp_path: Path) -> None:  # the run-folder rule of every loader
    model = build_model(**MODEL_KW)
    save_checkpoint(tmp_path / "last.pt", effseg_ckpt(model))
    save_checkpoint(tmp_path / "best.pt", effseg_ckpt(model))
    assert resolve_checkpoint(tmp_path).name == "last.pt"


def test_other_number_of_classes_is_a_clear_error(tmp_path: Path) -> None:
    model = build_model(**MODEL_KW)
    save_checkpoint(tmp_path / "m.pt", effseg_ckpt(model))
    with pytest.raises(CheckpointError, match=r"m\.pt: checkpoint is for 5 classes, expected 19"):
        load_model(tmp_path / "m.pt", num_classes=19)
    # Weights of a 5-class model under a config that says 7 classes.
    ckpt = effseg_ckpt(model)
    ckpt["model_config"]["num_classes"] = 7
    save_checkpoint(tmp_path / "mixed.pt", ckpt)
    with pytest.raises(CheckpointError, match=r"checkpoint is for 5 classes, the model has 7"):
        load_model(tmp_path / "mixed.pt")


def test_not_an_effseg_checkpoint(tmp_path: Path) -> None:
    torch.save(collections.OrderedDict(w=torch.ones(1)), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not an effseg checkpoint"):
        load_model(tmp_path / "plain.pt")
    model = build_model(**MODEL_KW)
    ckpt = effseg_ckpt(model)
    del ckpt["model"][
        "classifier.weight" if "classifier.weight" in ckpt["model"] else next(iter(ckpt["model"]))
    ]
    save_checkpoint(tmp_path / "short.pt", ckpt)
    with pytest.raises(CheckpointError, match=r"short\.pt: weights do not fit the model: missing 1 key in "):
        load_model(tmp_path / "short.pt")
    ckpt = effseg_ckpt(model)
    ckpt["model"]["extra.weight"] = torch.ones(2)
    first = next(iter(ckpt["model"]))
    ckpt["model"][first] = torch.ones(3, 3)
    save_checkpoint(tmp_path / "odd.pt", ckpt)
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "odd.pt")
    assert str(err.value) == (
        f"{tmp_path / 'odd.pt'}: weights do not fit the model: unexpected 1 key in extra; "
        f"shape mismatches (checkpoint vs model): {first} (3, 3) vs {tuple(model.state_dict()[first].shape)}"
    )
