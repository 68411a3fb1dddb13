"""Distillation losses (pixel KD, channel-wise CWD): hand-computed values, masks, gradients,
a short ``effseg train`` run with a teacher checkpoint, and bad teachers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from effseg.cli import main
from effseg.engine.checkpoint import save_checkpoint
from effseg.engine.distill import ChannelWiseDistillLoss, PixelKDLoss, build_distill_loss
from effseg.errors import CheckpointError, ConfigError, ModelError
from effseg.models import build_model

LN3 = math.log(3.0)
# KL([3/4, 1/4] || [1/2, 1/2]) by hand
KL_34_12 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)


def _px(values: list[list[float]]) -> torch.Tensor:
    """(1, C, 1, N) logits from a per-class list of N pixel values."""
    return torch.tensor(values, dtype=torch.float32)[None, :, None, :]


# ----------------------------------------------------------------------------- pixel KD


def test_kd_identical_logits_is_zero() -> None:
    s = torch.randn(2, 5, 6, 7)
    target = torch.randint(0, 5, (2, 6, 7))
    for t in (1.0, 4.0):
        assert PixelKDLoss(t)(s, s.clone(), target).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_one_pixel_two_classes_by_hand() -> None:
    student = _px([[0.0], [0.0]])  # p_s = [1/2, 1/2]
    teacher = _px([[LN3], [0.0]])  # p_t = [3/4, 1/4]
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    assert PixelKDLoss(1.0)(student, teacher, target).item() == pytest.approx(KL_34_12, rel=1e-5)
    # T = 2: p_t = softmax([ln3/2, 0]) = [sqrt3, 1] / (sqrt3 + 1), times T^2 = 4
    a = math.sqrt(3) / (math.sqrt(3) + 1)
    expected = 4 * (a * math.log(a / 0.5) + (1 - a) * math.log((1 - a) / 0.5))
    assert PixelKDLoss(2.0)(student, teacher, target).item() == pytest.approx(expected, rel=1e-5)


def test_kd_averages_over_valid_pixels_only() -> None:
    # pixel 0: the hand-computed case; pixel 1: a big disagreement, but ignored (255)
    student = _px([[0.0, 10.0], [0.0, -10.0]])
    teacher = _px([[LN3, -10.0], [0.0, 10.0]])
    target = torch.tensor([[[0, 255]]])
    assert PixelKDLoss()(student, teacher, target).item() == pytest.approx(KL_34_12, rel=1e-5)
    # pixel 1 valid too: the mean of both pixels
    both = PixelKDLoss()(student, teacher, torch.tensor([[[0, 1]]])).item()
    kl1 = PixelKDLoss()(student[..., 1:], teacher[..., 1:], torch.tensor([[[1]]])).item()
    assert kl1 > 10
    assert both == pytest.approx((KL_34_12 + kl1) / 2, rel=1e-5)
    # every pixel ignored: 0, and backward still works
    s = student.clone().requires_grad_(True)
    loss = PixelKDLoss()(s, teacher, torch.full((1, 1, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and s.grad is not None and s.grad.abs().sum() == 0


def test_kd_resizes_teacher_bilinearly() -> None:
    # a spatially constant teacher at half size == the same teacher at full size
    teacher_small = torch.randn(1, 3, 1, 1).expand(1, 3, 4, 4).contiguous()
    teacher_full = teacher_small[:, :, :1, :1].expand(1, 3, 8, 8)
    student = torch.randn(1, 3, 8, 8)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    a = PixelKDLoss(2.0)(student, teacher_small, target)
    b = PixelKDLoss(2.0)(student, teacher_full, target)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


# ----------------------------------------------------------------------------- channel-wise


def test_cwd_identical_logits_is_zero() -> None:
    s = torch.randn(2, 4, 5, 6)
    assert ChannelWiseDistillLoss(3.0)(s, s.clone(), None).item() == pytest.approx(0.0, abs=1e-6)


def test_cwd_softmax_is_over_locations_by_hand() -> None:
    # Both channels of the teacher are [ln3, 0] over two locations: per location the class
    # distribution is uniform (pixel KD against an all-zero student = 0), but per channel
    # the spatial distribution is [3/4, 1/4] vs the student's [1/2, 1/2].
    teacher = _px([[LN3, 0.0], [LN3, 0.0]])
    student = torch.zeros_like(teacher)
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    assert PixelKDLoss()(student, teacher, target).item() == pytest.approx(0.0, abs=1e-7)
    assert ChannelWiseDistillLoss(1.0)(student, teacher, target).item() == pytest.approx(KL_34_12, rel=1e-5)
    # one channel matching, one not: averaged over the 2 channels
    teacher2 = _px([[LN3, 0.0], [0.0, 0.0]])
    assert ChannelWiseDistillLoss(1.0)(student, teacher2).item() == pytest.approx(KL_34_12 / 2, rel=1e-5)
    # two images, the second identical: averaged over batch x channels = 4
    s = torch.cat([student, student])
    t = torch.cat([teacher2, student])
    assert ChannelWiseDistillLoss(1.0)(s, t).item() == pytest.approx(KL_34_12 / 4, rel=1e-5)
    # T = 2, x T^2
    a = math.sqrt(3) / (math.sqrt(3) + 1)
    expected = 4 * (a * math.log(a / 0.5) + (1 - a) * math.log((1 - a) / 0.5))
    assert ChannelWiseDistillLoss(2.0)(student, teacher).item() == pytest.approx(expected, rel=1e-5)


def test_cwd_ignores_labels() -> None:
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    a = ChannelWiseDistillLoss(4.0)(s, t, torch.zeros(2, 4, 4, dtype=torch.long))
    b = ChannelWiseDistillLoss(4.0)(s, t, torch.full((2, 4, 4), 255))
    assert a.item() == pytest.approx(b.item()) and a.item() > 0


# ----------------------------------------------------------------------------- gradients, errors


@pytest.mark.parametrize("loss_fn", [PixelKDLoss(2.0), ChannelWiseDistillLoss(2.0)])
def test_gradient_flows_to_student_only(loss_fn) -> None:
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 3, 2, 2, requires_grad=True)  # also exercises the resize
    loss = loss_fn(student, teacher, torch.randint(0, 3, (2, 4, 4)))
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0
    # gradient descent on the student lowers the loss
    with torch.no_grad():
        stepped = student - 1.0 * student.grad
    assert loss_fn(stepped, teacher, torch.randint(0, 3, (2, 4, 4))).item() < loss.item()


def test_class_mismatch_names_both_counts() -> None:
    for loss_fn in (PixelKDLoss(), ChannelWiseDistillLoss()):
        with pytest.raises(ModelError, match="teacher predicts 11 classes but the student 19"):
            loss_fn(
                torch.randn(1, 19, 4, 4), torch.randn(1, 11, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)
            )


def test_build_distill_loss() -> None:
    kd = build_distill_loss(SimpleNamespace(type="kd", temperature=3.0, teacher="x", weight=1.0))
    cwd = build_distill_loss(SimpleNamespace(type="cwd", temperature=4.0, teacher="x", weight=1.0))
    assert isinstance(kd, PixelKDLoss) and kd.temperature == 3.0
    assert isinstance(cwd, ChannelWiseDistillLoss) and cwd.temperature == 4.0
    with pytest.raises(ConfigError, match="distill.type"):
        build_distill_loss(SimpleNamespace(type="fitnet", temperature=1.0, teacher="x", weight=1.0))
    with pytest.raises(ConfigError, match="distill.temperature"):
        PixelKDLoss(0.0)


# ----------------------------------------------------------------------------- end to end


def _teacher_ckpt(path: Path, num_classes: int = 19, **extra) -> Path:
    model = build_model(
        "fcn", backbone="mobilenetv3_small", num_classes=num_classes, output_stride=32, aux=False
    )
    save_checkpoint(path, {"model": model.state_dict(), "model_config": dict(model.config), **extra})
    return path


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny synthetic city shared by the runs of this module."""
    return tmp_path_factory.mktemp("city") / "city"


def _config(tmp_path: Path, city: Path) -> Path:
    cfg = {
        "model": {"head": "lraspp", "backbone": "mobilenetv3_small", "output_stride": 16, "aux": True},
        "data": {
            "dataset": "synthetic",
            "root": str(city),
            "options": {"n_train": 2, "n_val": 1, "size": "64x32", "seed": 0},
            "crop_size": "64x32",
            "num_workers": 0,
        },
        "train": {
            "iterations": 3,
            "batch_size": 2,
            "device": "cpu",
            "log_interval": 1,
            "val_interval": 3,
            "tensorboard": False,
        },
        "eval": {"num_workers": 0},
    }
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["kd", "cwd"])
def test_effseg_train_with_teacher(tmp_path: Path, city: Path, kind: str) -> None:
    teacher = _teacher_ckpt(tmp_path / "teacher.pt")
    run = tmp_path / f"run_{kind}"
    code = main(
        [
            "train",
            str(_config(tmp_path, city)),
            "--run-dir",
            str(run),
            "--set",
            f"distill.teacher={teacher}",
            f"distill.type={kind}",
            "distill.temperature=2.0",
            "distill.weight=0.5",
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss_distill" in r]
    assert [r["iteration"] for r in steps] == [1, 2, 3]
    for r in steps:
        assert r["loss_distill"] > 0 and math.isfinite(r["loss"])
        # total = main + 0.4 aux + 0.5 distill (one iteration per logged window)
        assert r["loss"] == pytest.approx(
            r["loss_main"] + 0.4 * r["loss_aux"] + 0.5 * r["loss_distill"], rel=1e-4
        )
    # the student's checkpoint holds the student only (no teacher weights)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["model_config"]["head"] == "lraspp"
    assert not any(k.startswith("teacher") for k in ckpt["model"])


def test_effseg_train_bad_teachers(tmp_path: Path, city: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(_config(tmp_path, city))
    wrong = _teacher_ckpt(tmp_path / "teacher11.pt", num_classes=11)
    bad_file = tmp_path / "garbage.pt"
    bad_file.write_bytes(b"not a checkpoint")
    cases = {
        str(wrong): "checkpoint is for 11 classes, expected 19",
        str(tmp_path / "missing.pt"): "not found",
        str(bad_file): "garbage.pt: ",
        str(
            _teacher_ckpt(tmp_path / "t_mean.pt", mean=[0.5, 0.5, 0.5])
        ): "was trained with data.mean=[0.5, 0.5, 0.5]",
    }
    for i, (teacher, message) in enumerate(cases.items()):
        code = main(
            ["train", cfg, "--run-dir", str(tmp_path / f"bad{i}"), "--set", f"distill.teacher={teacher}"]
        )
        err = capsys.readouterr().err
        assert code == 2, err
        assert message in err and len(err.strip().splitlines()) == 1
    with pytest.raises(CheckpointError, match="11 classes"):
        from effseg.engine.checkpoint import load_model

        load_model(wrong, num_classes=19)


# ------------------------------------------------------------ trainer options (MobileNetV3 recipe)


def test_bn_momentum_and_no_decay_options(tmp_path: Path, city: Path) -> None:
    from torch import nn

    from effseg.config import load_config
    from effseg.engine import distributed as du
    from effseg.engine.train import _Trainer

    overrides = ["train.bn_momentum=0.1", "train.no_decay_norm_bias=true", "train.weight_decay=0.01"]
    cfg = load_config(_config(tmp_path, city), overrides)
    trainer = _Trainer(cfg, tmp_path / "run", du.init_distributed("cpu"), False, False)
    bns = [m for m in trainer.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.1 for m in bns)  # MobileNetV3's own is 0.01
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert set(groups) == {"backbone", "head", "backbone_no_decay", "head_no_decay"}
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 0.01
    assert groups["head_no_decay"]["lr"] == pytest.approx(10 * groups["backbone_no_decay"]["lr"])
    assert all(p.ndim > 1 for g in ("backbone", "head") for p in groups[g]["params"])
    no_decay = {id(p) for g in ("backbone_no_decay", "head_no_decay") for p in groups[g]["params"]}
    assert no_decay == {id(p) for p in trainer.model.parameters() if p.ndim == 1}
    assert {id(b.weight) for b in bns} <= no_decay
    # the default keeps the model's momentum and the two groups
    default = _Trainer(
        load_config(_config(tmp_path, city)), tmp_path / "run2", du.init_distributed("cpu"), False, False
    )
    assert [g["name"] for g in default.optimizer.param_groups] == ["backbone", "head"]
    assert {m.momentum for m in default.model.backbone.modules() if isinstance(m, nn.BatchNorm2d)} == {0.01}
    with pytest.raises(ConfigError, match="train.bn_momentum"):
        load_config(_config(tmp_path, city), ["train.bn_momentum=0"])
    # no decay on the squeeze-excitation layers only: exactly their weights and biases
    from effseg.models.backbones.mobilenetv3 import SqueezeExcitation

    se_cfg = load_config(_config(tmp_path, city), ["train.no_decay_se=true", "train.weight_decay=0.01"])
    se_trainer = _Trainer(se_cfg, tmp_path / "run3", du.init_distributed("cpu"), False, False)
    se_groups = {g["name"]: g for g in se_trainer.optimizer.param_groups}
    se_params = {
        id(p) for m in se_trainer.model.modules() if isinstance(m, SqueezeExcitation) for p in m.parameters()
    }
    assert len(se_params) == 4 * 9  # MobileNetV3-Small: 9 SE blocks, fc1/fc2 weight + bias each
    exempt = {id(p) for g in ("backbone_no_decay", "head_no_decay") for p in se_groups[g]["params"]}
    assert exempt == se_params and se_groups["backbone_no_decay"]["weight_decay"] == 0.0
    assert any(p.ndim == 1 for p in se_groups["backbone"]["params"])  # BatchNorm still decayed
