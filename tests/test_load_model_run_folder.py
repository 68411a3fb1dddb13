"""``load_model(run_folder)`` (and so a distillation teacher given as a run folder) reads the file
every other loader reads: ``last.pt``, else ``best.pt`` (``run_folder_weights``, one rule)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from effseg.config import config_from_dict
from effseg.deploy.artifact import load_artifact
from effseg.engine import rundir
from effseg.engine.checkpoint import load_model, resolve_checkpoint, run_folder_weights, save_checkpoint
from effseg.engine.distill import Distiller
from effseg.errors import CheckpointError
from effseg.models import build_model
from helpers_engine import tiny_config

MODEL_KW = {"head": "fcn", "backbone": "mobilenetv2", "num_classes": 5, "aux": False}


def _save(path: Path, seed: int) -> torch.nn.Module:
    """A checkpoint of a model whose weights depend on ``seed`` (so two files are told apart)."""
    torch.manual_seed(seed)
    model = build_model(**MODEL_KW).eval()
    ckpt = {
        "model": model.state_dict(),
        "model_config": dict(model.config),
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
    }
    save_checkpoint(path, ckpt)
    return model


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_run_folder_loads_last_pt_like_every_other_loader(tmp_path: Path) -> None:
    last = _save(tmp_path / "last.pt", seed=1)
    best = _save(tmp_path / "best.pt", seed=2)
    assert not _same_weights(last, best)
    assert resolve_checkpoint(tmp_path) == run_folder_weights(tmp_path) == tmp_path / "last.pt"
    model, meta = load_model(tmp_path)
    assert meta["path"] == str(tmp_path / "last.pt") and _same_weights(model, last)
    assert load_artifact(tmp_path).path == tmp_path / "last.pt"  # the user-facing loader agrees
    model, meta = load_model(tmp_path / "best.pt")  # the val-picked weights: named explicitly
    assert meta["path"] == str(tmp_path / "best.pt") and _same_weights(model, best)


def test_a_folder_with_only_best_pt_loads_it_and_an_empty_one_is_refused(tmp_path: Path) -> None:
    best = _save(tmp_path / "best.pt", seed=3)
    model, meta = load_model(tmp_path)
    assert meta["path"] == str(tmp_path / "best.pt") and _same_weights(model, best)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: run folder has neither last\.pt nor best\.pt$"):
        load_model(tmp_path / "empty")


def test_the_rule_is_one_function(tmp_path: Path) -> None:
    assert rundir.run_folder_weights is run_folder_weights  # re-exported, not a copy


def test_a_distillation_teacher_given_as_a_run_folder_is_its_last_pt(tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"
    last = _save(teacher / "last.pt", seed=4)
    _save(teacher / "best.pt", seed=5)
    cfg = config_from_dict(
        tiny_config(
            tmp_path / "city",
            model={"num_classes": 5},
            data={"mean": [0.5] * 3, "std": [0.25] * 3},
            distill={"teacher": str(teacher)},
        )
    )
    distiller = Distiller(cfg, torch.device("cpu"))
    assert _same_weights(distiller.teacher, last)
