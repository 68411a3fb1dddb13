"""model.init (``effseg train --init``): start from trained weights; train.freeze, train.loaded_lr_mult;
the dataset frame subsets (data.train_frames / val_frames) that the fine-tuning curve uses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effseg.config import config_from_dict
from effseg.data import build_dataset
from effseg.engine.checkpoint import save_checkpoint
from effseg.engine.init_weights import (
    InitError,
    apply_freeze,
    check_resume_options,
    init_model,
    prepare_model,
)
from effseg.engine.optim import param_groups
from effseg.errors import CheckpointError, ConfigError, DataError
from effseg.models import build_model

SHIPPED = "camvid-ddrnet23_slim"
CAMVID = Path(__file__).resolve().parents[2] / "shared" / "camvid"
if not (CAMVID / "val").is_dir():
    CAMVID = Path("/work/shared/camvid")
CLASSIFIERS = {"final_layer.cls.weight", "final_layer.cls.bias", "aux_head.cls.weight", "aux_head.cls.bias"}


def _shipped_pool_order() -> str:
    """The DAPPM order the shipped weights were trained with (a file without one: the legacy order)."""
    from effseg.models.realtime import with_legacy_defaults
    from effseg.zoo import find_pretrained

    stored = torch.load(find_pretrained(SHIPPED).path, weights_only=True)["model_config"]
    return with_legacy_defaults(stored)["pool_order"]


def _ddrnet(num_classes: int = 3, **options) -> torch.nn.Module:
    return build_model("ddrnet23_slim", num_classes=num_classes, pool_order=_shipped_pool_order(), **options)


def test_shipped_model_into_three_classes_reinitialises_only_the_classifiers() -> None:
    model = _ddrnet(3)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_model(model, SHIPPED)
    assert set(report.reinitialised) == CLASSIFIERS
    assert all("11 classes in the source, 3 here" in why for why in report.reinitialised.values())
    assert not report.unused and report.kind == "effseg" and report.file.endswith("camvid-ddrnet23_slim.pt")
    source = torch.load(report.file, weights_only=True)["model"]
    state = model.state_dict()
    assert len(report.loaded) == len(state) - len(CLASSIFIERS)
    for name in report.loaded:  # float16 shipped weights, cast into the float32 model
        assert torch.equal(state[name], source[name].to(state[name].dtype)), name
    for name in CLASSIFIERS:  # the new model's own initialisation
        assert torch.equal(state[name], fresh[name]), name
    assert report.record()["reinitialised"] == {
        "final_layer.cls": "classifier for 11 classes in the source, 3 here",
        "aux_head.cls": "classifier for 11 classes in the source, 3 here",
    }


def test_same_classes_load_everything_and_compute_the_shipped_function() -> None:
    import effseg

    model = _ddrnet(11).eval()
    report = init_model(model, SHIPPED)
    assert not report.reinitialised and len(report.loaded) == len(model.state_dict())
    shipped = effseg.load(SHIPPED)
    x = torch.randn(1, 3, 128, 192)
    with torch.no_grad():
        torch.testing.assert_close(model(x), shipped.model(x))


def test_the_source_fixes_its_operation_order_and_a_conflict_is_one_line() -> None:
    cfg = config_from_dict({"model": {"name": "ddrnet23_slim", "num_classes": 3, "init": SHIPPED}})
    source, backbone = prepare_model(cfg, resume=False)
    assert source is not None and backbone is None
    order = _shipped_pool_order()
    other = "pool_bn" if order == "bn_pool" else "bn_pool"
    assert source.adopted == {"pool_order": order}  # the shipped model was trained with it
    assert cfg.model.options["pool_order"] == order  # so config.yaml records it
    clash = config_from_dict(
        {
            "model": {
                "name": "ddrnet23_slim",
                "num_classes": 3,
                "init": SHIPPED,
                "options": {"pool_order": other},
            }
        }
    )
    with pytest.raises(
        InitError, match=f"model.options.pool_order='{other}' but the weights of camvid-ddrnet23_slim"
    ) as err:
        prepare_model(clash, resume=False)
    assert "\n" not in str(err.value)


def test_architecture_mismatch_names_both_sides() -> None:
    with pytest.raises(
        InitError, match=r"architecture mismatch: the checkpoint is a ddrnet23_slim, the model is a pidnet_s"
    ):
        init_model(build_model("pidnet_s", num_classes=3), SHIPPED)
    with pytest.raises(InitError) as err:
        init_model(_ddrnet(3, planes=16), SHIPPED)
    message = str(err.value)
    assert "\n" not in message
    assert "planes=32" in message and "planes=16" in message and "shape mismatches" in message


def _save_effseg_checkpoint(path: Path, model: torch.nn.Module, **extra) -> Path:
    save_checkpoint(
        path, {"model": model.state_dict(), "model_config": model.config, "classes": ["a", "b"], **extra}
    )
    return path


def test_run_folder_takes_its_final_weights_and_missing_aux_heads_start_fresh(tmp_path: Path) -> None:
    src = build_model("regseg", num_classes=2, aux=False)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    run = tmp_path / "run"
    _save_effseg_checkpoint(run / "last.pt", src)
    _save_effseg_checkpoint(run / "best.pt", build_model("regseg", num_classes=2))
    model = build_model("regseg", num_classes=2)
    report = init_model(model, str(run))
    assert report.file == str(run / "last.pt")
    assert torch.equal(
        model.state_dict()["decoder.classifier.bias"], src.state_dict()["decoder.classifier.bias"]
    )
    # a model with aux heads from a source without: the heads start fresh, with the reason
    bise_src = build_model("bisenetv2", num_classes=2, aux=False, head_channels=32, booster_channels=8)
    _save_effseg_checkpoint(tmp_path / "b.pt", bise_src)
    bise = build_model("bisenetv2", num_classes=2, aux=True, head_channels=32, booster_channels=8)
    report = init_model(bise, str(tmp_path / "b.pt"))
    assert report.reinitialised and all(
        k.startswith(("aux2.", "aux3.", "aux4.", "aux5.")) for k in report.reinitialised
    )
    assert set(report.reinitialised.values()) == {"training-only head the source does not have"}
    # and the other way round: the source's aux heads are listed as not used
    report = init_model(
        build_model("bisenetv2", num_classes=2, aux=False, head_channels=32, booster_channels=8),
        str(tmp_path / "b.pt"),
    )
    assert not report.unused
    _save_effseg_checkpoint(tmp_path / "aux.pt", bise)
    report = init_model(
        build_model("bisenetv2", num_classes=2, aux=False, head_channels=32, booster_channels=8),
        str(tmp_path / "aux.pt"),
    )
    assert report.unused and set(report.unused.values()) == {
        "training-only head this model does not build (aux=false)"
    }


def test_bad_sources_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(
        InitError, match=r"model.init=nowhere: no such file or run folder and no shipped model"
    ):
        init_model(_ddrnet(3), "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InitError, match="run folder has neither last.pt nor best.pt"):
        init_model(_ddrnet(3), str(tmp_path / "empty"))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(
        InitError, match=r"not an effseg checkpoint .* and not an official ddrnet23_slim checkpoint"
    ):
        init_model(_ddrnet(3), str(tmp_path / "other.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        init_model(_ddrnet(3), str(tmp_path / "junk.pt"))


def test_freeze_stops_gradients_and_batchnorm_statistics() -> None:
    model = _ddrnet(3, planes=8, spp_planes=16, head_planes=16)
    frozen = apply_freeze(model, ["backbone"])
    head = {n for n, _ in model.named_parameters() if n.startswith(("final_layer.", "aux_head."))}
    assert set(frozen) == {n for n, _ in model.named_parameters()} - head
    assert all(p.requires_grad == (n in head) for n, p in model.named_parameters())
    bn = model.layer1[0].conv1[1]
    before = bn.running_mean.clone()
    model.train()(torch.randn(2, 3, 128, 128) * 3 + 1)
    assert torch.equal(bn.running_mean, before)  # frozen BatchNorm: running statistics, not updated
    assert not torch.equal(model.final_layer.bn.running_mean, torch.zeros(16))  # the head's still learn
    cfg = config_from_dict({"train": {"freeze": ["backbone"]}})
    groups = {g["name"]: g["params"] for g in param_groups(model, cfg.train)}
    assert groups["backbone"] == [] and len(groups["head"]) == len(head)
    other = _ddrnet(3, planes=8, spp_planes=16, head_planes=16)
    assert len(apply_freeze(other, ["layer1", "spp.scale0"])) == len(
        [n for n, _ in other.named_parameters() if n.startswith(("layer1.", "spp.scale0."))]
    )
    with pytest.raises(
        ConfigError,
        match=r"train.freeze: unknown part 'stem'; expected backbone, head or a module name.*conv1, layer1",
    ):
        apply_freeze(other, ["stem"])
    with pytest.raises(ConfigError, match="freezes every parameter"):
        apply_freeze(_ddrnet(3, planes=8, spp_planes=16, head_planes=16), ["backbone", "head"])


def test_loaded_lr_mult_gives_the_loaded_parameters_their_own_rate() -> None:
    model = _ddrnet(3)
    init_model(model, SHIPPED)
    cfg = config_from_dict({"train": {"lr": 0.01, "head_lr_mult": 10.0, "loaded_lr_mult": 0.1}})
    groups = {g["name"]: g for g in param_groups(model, cfg.train)}
    assert [g["lr"] for g in groups.values()] == pytest.approx([0.01, 0.1, 0.001, 0.01])
    assert list(groups) == ["backbone", "head", "backbone_loaded", "head_loaded"]
    assert groups["backbone"]["params"] == []  # every backbone tensor was loaded
    new = {id(p) for p in groups["head"]["params"]}
    assert new == {
        id(model.final_layer.cls.weight),
        id(model.final_layer.cls.bias),
        id(model.aux_head.cls.weight),
        id(model.aux_head.cls.bias),
    }
    plain = {g["name"] for g in param_groups(model, config_from_dict({}).train)}
    assert plain == {"backbone", "head"}  # loaded_lr_mult 1: the groups of every other run


def test_resuming_a_run_from_before_the_official_order_names_the_fix(tmp_path: Path) -> None:
    stored = {"name": "ddrnet23_slim", "num_classes": 3, "aux": True, "planes": 32}  # no pool_order
    built = build_model("ddrnet23_slim", num_classes=3, pool_order="pool_bn").config
    with pytest.raises(
        CheckpointError, match=r"trained with pool_order='bn_pool' .* --set model.options.pool_order=bn_pool"
    ):
        check_resume_options(stored, built, tmp_path / "last.pt")
    legacy = build_model("ddrnet23_slim", num_classes=3, pool_order="bn_pool").config
    check_resume_options(stored, legacy, tmp_path / "last.pt")  # bn_pool: fine


# ----------------------------------------------------------------------------- frame subsets


def _drive_folder(root: Path, drives: dict[str, int]) -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for drive, n in drives.items():
        for i in range(n):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / f"{drive}_{i:05d}.png")
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / f"{drive}_{i:05d}.png")
    (root / "classes.yaml").write_text("names: [a, b]\n")
    return root


def test_frames_select_the_first_n_of_each_drive_or_the_rest(tmp_path: Path) -> None:
    root = _drive_folder(tmp_path / "d", {"0001TP": 7, "Seq05VD": 4})

    def stems(frames=None) -> list[str]:
        options = {} if frames is None else {"frames": frames}
        return [Path(s[0]).stem for s in build_dataset("folder", root, "all", **options).samples]

    assert stems(2) == stems("first:2") == ["0001TP_00000", "0001TP_00001", "Seq05VD_00000", "Seq05VD_00001"]
    assert stems("after:3") == [
        "0001TP_00003",
        "0001TP_00004",
        "0001TP_00005",
        "0001TP_00006",
        "Seq05VD_00003",
    ]
    first, rest = stems("first:3"), stems("after:3")
    assert sorted(first + rest) == sorted(stems()) and not set(first) & set(rest)
    one = build_dataset("folder", root, "all", drives=["Seq05VD"], frames="after:1")
    assert [Path(s[0]).stem for s in one.samples] == ["Seq05VD_00001", "Seq05VD_00002", "Seq05VD_00003"]
    with pytest.raises(
        DataError, match=r"'frames'='after:4' leaves no frame of drive 'Seq05VD'.*0001TP \(7\), Seq05VD \(4\)"
    ):
        build_dataset("folder", root, "all", frames="after:4")
    for bad in ("last:2", "first:0", "first:x", True, -1):
        with pytest.raises(DataError, match="expected N or 'first:N'"):
            build_dataset("folder", root, "all", frames=bad)


def test_data_train_frames_and_val_frames_split_one_drive(tmp_path: Path) -> None:
    from effseg.data.from_config import build_datasets

    root = _drive_folder(tmp_path / "d", {"0001TP": 6, "0006R0": 3})
    cfg = config_from_dict(
        {
            "model": {"num_classes": 2},
            "data": {
                "dataset": "folder", "root": str(root), "train_split": "all", "val_split": "all",
                "train_drives": ["0001TP"], "val_drives": ["0001TP"],
                "train_frames": 2, "val_frames": "after:2", "crop_size": "8x8",
            },
        }
    )  # fmt: skip
    train_set, val_set = build_datasets(cfg)
    assert [Path(s[0]).stem for s in train_set.samples] == ["0001TP_00000", "0001TP_00001"]
    assert [Path(s[0]).stem for s in val_set.samples] == [f"0001TP_{i:05d}" for i in range(2, 6)]


# ----------------------------------------------------------------------------- end to end


def _three_class_folder(root: Path) -> Path:
    """CamVid val frames at 128x96 with three classes: sky, ground (road, pavement), things."""
    import cv2

    lut = np.full(256, 255, np.uint8)
    lut[0], lut[[3, 4]], lut[[1, 2, 5, 6, 7, 8, 9, 10]] = 0, 1, 2
    stems = sorted(p.stem for p in (CAMVID / "val").glob("*.jpg"))
    for split, chosen in (("train", stems[0:40:10]), ("val", stems[60:100:20])):
        for sub in ("images", "masks"):
            (root / sub / split).mkdir(parents=True, exist_ok=True)
        for stem in chosen:
            img = np.array(Image.open(CAMVID / "val" / f"{stem}.jpg").convert("RGB"))
            lab = lut[np.array(Image.open(CAMVID / "valannot" / f"{stem}.png"))]
            Image.fromarray(cv2.resize(img, (128, 96), interpolation=cv2.INTER_AREA)).save(
                root / "images" / split / f"{stem}.png"
            )
            Image.fromarray(cv2.resize(lab, (128, 96), interpolation=cv2.INTER_NEAREST)).save(
                root / "masks" / split / f"{stem}.png"
            )
    (root / "classes.yaml").write_text("names: [sky, ground, things]\n")
    return root


@pytest.mark.slow
def test_effseg_train_init_on_a_three_class_folder_beats_scratch(tmp_path: Path, capsys) -> None:
    """``effseg train mydata.yaml --init camvid-ddrnet23_slim``: only the classifiers start afresh
    (console and log.jsonl), and the first validation beats the same training from scratch."""
    if not (CAMVID / "val").is_dir():
        pytest.skip(f"CamVid val not found at {CAMVID}")
    import yaml

    from effseg.cli import main

    root = _three_class_folder(tmp_path / "mydata")
    config = {
        "model": {"name": "ddrnet23_slim", "num_classes": 3},
        "data": {
            "dataset": "folder", "root": str(root), "crop_size": "128x96", "scale_range": [0.9, 1.1],
            "num_workers": 0,
        },
        "train": {
            "iterations": 3, "batch_size": 2, "optimizer": "adamw", "lr": 0.005, "head_lr_mult": 10.0,
            "log_interval": 1, "val_interval": 3, "tensorboard": False, "device": "cpu",
        },
        "eval": {"num_workers": 0},
    }  # fmt: skip
    (tmp_path / "mydata.yaml").write_text(yaml.safe_dump(config))
    miou = {}
    for name, extra in (("init", ["--init", SHIPPED]), ("scratch", [])):
        run = tmp_path / name
        assert main(["train", str(tmp_path / "mydata.yaml"), "--run-dir", str(run), *extra]) == 0
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        miou[name] = next(r["miou"] for r in records if "miou" in r)
        if name == "init":
            init = records[0]
            assert init["init"] == SHIPPED and set(init["reinitialised"]) == {
                "final_layer.cls",
                "aux_head.cls",
            }
            order = _shipped_pool_order()
            assert init["adopted_options"] == {"pool_order": order}
            stored = yaml.safe_load((run / "config.yaml").read_text())
            assert stored["model"]["options"] == {"pool_order": order}
            out = capsys.readouterr().out
            assert (
                "init: re-initialised final_layer.cls: classifier for 11 classes in the source, 3 here" in out
            )
            assert out.count("init: re-initialised") == 2
    assert miou["init"] > miou["scratch"] + 0.1, miou  # measured: 0.709 vs 0.325
