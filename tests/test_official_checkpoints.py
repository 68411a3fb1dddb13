"""Official checkpoints of the four real-time networks through ``model.init``, and the function
effseg then computes; the shipped model keeps its own (legacy) operation order and predictions.

The official names and shapes are test data (``tests/data/official_<model>.json``, written by
``tests/data/make_official_specs.py`` from reading each official repository's model code). A state
dict of random tensors with exactly those names and shapes, saved the way each repository saves
its files, must load with every tensor used and none left random; the model must then compute the
official function, which :mod:`effseg.models.official.reference` computes from the file alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from effseg.config import config_from_dict
from effseg.engine.init_weights import InitError, finish_model, init_model, prepare_model
from effseg.models import build_model
from effseg.models.official import unwrap_official
from effseg.models.official.__main__ import main as check_main
from effseg.models.official.reference import reference_forward

DATA = Path(__file__).resolve().parent / "data"
NAMES = ["ddrnet23_slim", "pidnet_s", "bisenetv2", "regseg"]
#: options that are not the official function (effseg's earlier order), per model: the check must see them
LEGACY = {
    "ddrnet23_slim": {"pool_order": "bn_pool"},
    "pidnet_s": {"align_corners": False},
    "bisenetv2": {"upsample": "bilinear"},
}


def official_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the official names and shapes (He-scaled convs, BatchNorm statistics in
    a sane range, so the logits of the reference are O(1..1000) and argmax is meaningful)."""
    spec = json.loads((DATA / f"official_{name}.json").read_text())["tensors"]
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in spec.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            out[key] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1:
            out[key] = torch.rand(shape, generator=g) * 0.5 + (0.5 if key.endswith("weight") else -0.25)
        else:
            fan_in = int(np.prod(shape[1:]))
            out[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return out


def saved_like_the_repository(name: str, state: dict[str, torch.Tensor], path: Path) -> Path:
    """How each repository writes its files: PIDNet's FullModel (``model.`` prefix and the loss's
    class weights), DDRNet from DataParallel (``module.``), RegSeg under ``"model"`` with the
    optimiser, BiSeNetV2 a bare state dict."""
    if name == "pidnet_s":
        obj = {f"model.{k}": v for k, v in state.items()}
        obj["sem_loss.criterion.weight"] = torch.ones(19)
    elif name == "ddrnet23_slim":
        obj = {f"module.{k}": v for k, v in state.items()}
    elif name == "regseg":
        obj = {"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 1000}
    else:
        obj = state
    torch.save(obj, path)
    return path


def _init_through_config(spec: str, name: str, num_classes: int = 19, **options):
    cfg = config_from_dict(
        {"model": {"name": name, "num_classes": num_classes, "init": spec, "options": options}}
    )
    source, _ = prepare_model(cfg, resume=False)
    model = build_model(**cfg.model.build_kwargs())
    finish_model(model, source, cfg, resume=False, main=False)
    return model.eval(), source


@pytest.mark.parametrize("name", NAMES)
def test_official_checkpoint_loads_every_tensor_and_computes_the_official_function(
    name: str, tmp_path: Path
) -> None:
    state = official_state(name)
    path = saved_like_the_repository(name, state, tmp_path / f"{name}_official.pth")
    model, source = _init_through_config(str(path), name)
    report = model.init_report
    own = model.state_dict()
    assert report.kind == "official" and not report.reinitialised  # none left random
    assert sorted(report.loaded) == sorted(own)
    used = {source.origin[k].split("[")[0] for k in report.loaded}
    assert used | set(report.unused) == set(unwrap_official(torch.load(path, weights_only=True)))  # all used
    if name == "pidnet_s":
        assert report.unused == {
            "sem_loss.criterion.weight": "PIDNet's training wrapper (the loss's buffers)"
        }
    else:
        assert report.unused == {}
    for key in report.loaded:  # values, not only names: RegSeg's bn2 is split over two BatchNorms
        assert torch.isfinite(own[key].float()).all()
    x = torch.randn(2, 3, 128, 192, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)
    ref = reference_forward(name, state, x)
    scale = ref.abs().max().item()
    assert (ours - ref).abs().max().item() <= 1e-5 * max(scale, 1.0), (name, scale)
    assert torch.equal(ours.argmax(1), ref.argmax(1))
    if name in LEGACY:  # the check can fail: effseg's earlier order computes another function
        cfg = {**model.config, **LEGACY[name]}
        other = build_model(**cfg).eval()
        other.load_state_dict(model.state_dict())
        with torch.no_grad():
            moved = (other(x).argmax(1) != ref.argmax(1)).float().mean().item()
        assert moved > 1e-3, (name, moved)


def test_the_official_options_join_the_config_and_contrary_ones_are_refused(tmp_path: Path) -> None:
    path = saved_like_the_repository("bisenetv2", official_state("bisenetv2"), tmp_path / "city.pth")
    cfg = config_from_dict({"model": {"name": "bisenetv2", "init": str(path)}})
    source, _ = prepare_model(cfg, resume=False)
    assert source.adopted == {"pool_order": "pool_bn", "upsample": "nearest", "boosters": "official"}
    cfg = config_from_dict(
        {"model": {"name": "bisenetv2", "init": str(path), "options": {"upsample": "bilinear"}}}
    )
    with pytest.raises(
        InitError, match="model.options.upsample='bilinear' but the weights of .* need upsample='nearest'"
    ):
        prepare_model(cfg, resume=False)


def test_another_class_count_reinitialises_the_official_classifiers(tmp_path: Path) -> None:
    path = saved_like_the_repository("pidnet_s", official_state("pidnet_s"), tmp_path / "pidnet.pt")
    model, _ = _init_through_config(str(path), "pidnet_s", num_classes=11)
    assert set(model.init_report.reinitialised) == {
        f"{h}.cls.{p}" for h in ("final_layer", "p_head") for p in ("weight", "bias")
    }  # the boundary head has one output: loaded
    assert "boundary_head.cls.weight" in model.init_report.loaded


def test_ddrnet_imagenet_file_as_pretrained_backbone(tmp_path: Path) -> None:
    state = official_state("ddrnet23_slim_imagenet")
    path = tmp_path / "DDRNet23s_imagenet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    cfg = config_from_dict(
        {"model": {"name": "ddrnet23_slim", "num_classes": 11, "pretrained_backbone": str(path)}}
    )
    source, backbone = prepare_model(cfg, resume=False)
    assert backbone is None and source.kind == "official-backbone"
    model = build_model(**cfg.model.build_kwargs())
    finish_model(model, source, cfg, resume=False, main=False)
    report = model.init_report
    lines = report.record()
    assert lines["reinitialised"] == {
        "spp": "not in the ImageNet/backbone file",
        "final_layer": "not in the ImageNet/backbone file",
        "aux_head": "training-only head the source does not have",
    }
    assert set(lines["unused"]) == {"down5", "last_layer", "linear"}
    trunk = [k for k in model.state_dict() if not k.startswith(("spp.", "final_layer.", "aux_head."))]
    assert sorted(report.loaded) == sorted(trunk)
    torch.testing.assert_close(model.state_dict()["layer5.0.conv2.0.weight"], state["layer5.0.conv2.weight"])
    # a trained checkpoint is model.init's job, not pretrained_backbone's
    trained = saved_like_the_repository(
        "ddrnet23_slim", official_state("ddrnet23_slim"), tmp_path / "city.pth"
    )
    cfg = config_from_dict({"model": {"name": "ddrnet23_slim", "pretrained_backbone": str(trained)}})
    with pytest.raises(InitError, match="expected an official ImageNet/backbone file.*use model.init"):
        prepare_model(cfg, resume=False)


def test_bisenetv2_backbone_file_per_module(tmp_path: Path) -> None:
    """CoinCheung's ``backbone_v2.pth``: one state dict per branch, ``{"detail": ..., "segment": ...}``."""
    state = official_state("bisenetv2")
    nested = {
        part: {k[len(part) + 1 :]: v for k, v in state.items() if k.startswith(part + ".")}
        for part in ("detail", "segment")
    }
    torch.save(nested, tmp_path / "backbone_v2.pth")
    model = build_model("bisenetv2", num_classes=11, aux=False)
    report = init_model(model, str(tmp_path / "backbone_v2.pth"))
    assert report.kind == "official-backbone"
    assert {k.split(".")[0] for k in report.loaded} == {"detail", "semantic"}
    assert {k.split(".")[0] for k in report.reinitialised} == {"bga", "head"}
    torch.testing.assert_close(
        model.state_dict()["semantic.context.bn.running_var"], state["segment.S5_5.bn.running_var"]
    )


def test_official_check_command(tmp_path: Path, capsys) -> None:
    path = saved_like_the_repository("regseg", official_state("regseg"), tmp_path / "regseg.pth")
    assert check_main([str(path), "--model", "regseg", "--size", "192x128"]) == 0
    out = capsys.readouterr().out
    assert "argmax agreement 100.000%" in out and "RolandGao/RegSeg" in out
    assert check_main([str(path), "--model", "pidnet_s"]) == 2  # a file of another network: one line
    assert capsys.readouterr().err.strip() == (
        "effseg: error: not an official pidnet_s checkpoint (XuJiacong/PIDNet models/pidnet.py): "
        "its names do not match"
    )


def test_a_checkpoint_saved_before_pool_order_rebuilds_the_order_it_was_trained_with(tmp_path: Path) -> None:
    """DDRNet checkpoints from before the official DAPPM order (BatchNorm, then pool) store no
    ``pool_order``; every loader rebuilds them with ``bn_pool``, the function their weights were
    trained for (LEGACY_OPTIONS), not with today's default ``pool_bn``."""
    import effseg
    from effseg.engine.checkpoint import save_checkpoint

    torch.manual_seed(0)
    legacy = build_model("ddrnet23_slim", num_classes=11, pool_order="bn_pool").eval()
    for m in legacy.modules():  # BatchNorm statistics that make the order matter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    config = {k: v for k, v in legacy.config.items() if k != "pool_order"}  # saved before the option
    path = tmp_path / "legacy.pt"
    classes = [f"c{i}" for i in range(11)]
    save_checkpoint(path, {"model": legacy.state_dict(), "model_config": config, "classes": classes})
    loaded = effseg.load(path).model
    assert loaded.config["pool_order"] == "bn_pool"
    today = build_model("ddrnet23_slim", num_classes=11).eval()
    today.load_state_dict(legacy.state_dict())
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), legacy(x))
        assert not torch.allclose(today(x), legacy(x), atol=1e-3)  # the default order is another function
