"""Typed configs: YAML + --set overrides, errors naming the key with a suggestion, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from effseg.config import Config, apply_overrides, config_from_dict, load_config, save_config
from effseg.errors import ConfigError, SizeError
from effseg.size import Size

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))
REFERENCE_ROWS = [
    "pspnet_r18",
    "pspnet_r50",
    "pspnet_r101",
    "aspp_r18",
    "ocr_r18",
    "pspnet_mbv2",
    "lraspp_mbv3",
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  head: aspp\ntrain:\n  lr: 0.02\n")
    cfg = load_config(
        path,
        ["train.lr=0.05", "model.head_options.rates=[1, 2, 3, 6]", "train.grad_clip=null", "train.amp=bf16"],
    )
    assert cfg.model.head == "aspp"
    assert cfg.train.lr == 0.05 and isinstance(cfg.train.lr, float)
    assert cfg.model.head_options == {"rates": [1, 2, 3, 6]}
    assert cfg.train.grad_clip is None
    assert cfg.train.amp == "bf16"
    assert cfg.train.momentum == 0.9  # default kept


def test_int_accepted_for_float_not_the_reverse(tmp_path: Path) -> None:
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0
    with pytest.raises(ConfigError, match=r"train\.batch_size.*expected int.*2\.5"):
        config_from_dict({"train": {"batch_size": 2.5}})
    with pytest.raises(ConfigError, match=r"train\.deterministic.*expected bool"):
        config_from_dict({"train": {"deterministic": 1}})


def test_unknown_key_names_it_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  lrr: 0.01\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "'train.lrr'" in msg and "did you mean 'train.lr'" in msg
    assert "\n" not in msg


def test_unknown_section_and_override_key_suggest(tmp_path: Path) -> None:
    path = write(tmp_path, "trian:\n  lr: 0.01\n")
    with pytest.raises(ConfigError, match=r"unknown section 'trian' \(did you mean 'train'\?\)"):
        load_config(path)
    ok = write(tmp_path, "{}\n")
    with pytest.raises(ConfigError, match=r"'data.crop_szie' \(did you mean 'data.crop_size'\?\)"):
        load_config(ok, ["data.crop_szie=[256, 256]"])


def test_wrong_type_and_choice(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"key 'train\.lr': expected float, got 'fast' \(str\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"train\.optimizer.*'sgd', 'adamw'.*did you mean 'adamw'"):
        config_from_dict({"train": {"optimizer": "adamv"}})
    with pytest.raises(ConfigError, match=r"'data\.crop_size': expected WIDTHxHEIGHT.*got \[256, 'x'\]"):
        config_from_dict({"data": {"crop_size": [256, "x"]}})


def test_value_checks() -> None:
    with pytest.raises(ConfigError, match=r"data\.crop_size.*WIDTHxHEIGHT"):
        config_from_dict({"data": {"crop_size": [256]}})
    with pytest.raises(ConfigError, match=r"train\.class_weights.*19 weights"):
        config_from_dict({"train": {"class_weights": [1.0, 2.0]}})
    with pytest.raises(ConfigError, match=r"train\.device"):
        config_from_dict({"train": {"device": "gpu"}})
    with pytest.raises(ConfigError, match=r"distill\.type.*'kd', 'cwd'"):
        config_from_dict({"distill": {"type": "fitnet"}})


def test_bad_yaml_and_bad_override(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  lr: [0.01\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_config(path)
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        apply_overrides({}, ["lr=0.1"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_cannot_construct_python_objects(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  lr: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


def test_round_trip(tmp_path: Path) -> None:
    cfg = config_from_dict({"model": {"head": "ocr"}, "train": {"iterations": 7}})
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert again.to_dict() == yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert isinstance(Config().to_dict()["distill"], dict)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_shipped_config_loads_and_builds(path: Path) -> None:
    from effseg.models import build_model

    cfg = load_config(path)
    model = build_model(**cfg.model.build_kwargs())
    assert model.num_classes == cfg.model.num_classes


def test_every_reference_row_has_the_project_recipe() -> None:
    names = {p.stem for p in SHIPPED if p.parent.name == "cityscapes"}
    assert set(REFERENCE_ROWS) | {"aspp_r18_deeplab"} <= names
    for name in REFERENCE_ROWS + ["aspp_r18_deeplab"]:
        cfg = load_config(ROOT / "configs" / "cityscapes" / f"{name}.yaml")
        t = cfg.train
        assert (t.optimizer, t.momentum, t.lr, t.head_lr_mult, t.weight_decay) == (
            "sgd",
            0.9,
            0.01,
            10.0,
            1e-4,
        )
        assert (t.poly_power, t.epochs, t.aux_weight, t.iterations) == (0.9, 50, 0.4, None)
        assert cfg.data.options["resize"] == "1024x512" and cfg.model.num_classes == 19
        assert cfg.model.output_stride == 8 and not t.sync_bn
    project = load_config(ROOT / "configs" / "cityscapes" / "aspp_r18.yaml").model.head_options
    deeplab = load_config(ROOT / "configs" / "cityscapes" / "aspp_r18_deeplab.yaml").model.head_options
    assert project == {"rates": [1, 2, 3, 6], "image_pooling": False}
    assert deeplab == {"rates": [12, 24, 36], "image_pooling": True}


def test_synthetic_configs_share_one_city() -> None:
    opts = {str(load_config(p).data.options) for p in SHIPPED if p.parent.name == "synthetic"}
    roots = {load_config(p).data.root for p in SHIPPED if p.parent.name == "synthetic"}
    assert len(opts) == 1 and len(roots) == 1


def test_sizes_are_width_by_height_text(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  crop_size: 480x352\neval:\n  resize: 1024x512\n  stride: 683x341\n")
    cfg = load_config(path, ["eval.crop_size=960x720"])
    assert cfg.data.crop_size == Size(h=352, w=480) and isinstance(cfg.data.crop_size, Size)
    assert cfg.eval.resize == Size(h=512, w=1024) and cfg.eval.crop_size == Size(h=720, w=960)
    assert cfg.eval.stride == Size(h=341, w=683)
    h, w = cfg.data.crop_size  # consumers unpack (H, W) as before
    assert (h, w) == (352, 480)
    data = cfg.to_dict()
    assert data["data"]["crop_size"] == "480x352" and data["eval"]["resize"] == "1024x512"
    save_config(cfg, tmp_path / "saved.yaml")
    assert "crop_size: 480x352" in (tmp_path / "saved.yaml").read_text()
    assert load_config(tmp_path / "saved.yaml") == cfg


def test_old_list_sizes_load_with_one_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "data:\n  crop_size: [352, 480]   # (H, W)\neval:\n  resize: [360, 482]\n")
    cfg = load_config(path)
    assert cfg.data.crop_size == Size(h=352, w=480) and cfg.eval.resize == Size(h=360, w=482)
    err = capsys.readouterr().err.splitlines()
    assert (
        f"effseg: note: {path}: data.crop_size: [352, 480] is the old (height, width) spelling; "
        "write 480x352 (WIDTHxHEIGHT)" in err
    )
    assert any("eval.resize" in line and "write 482x360" in line for line in err)


@pytest.mark.parametrize("bad", ["480", "480x0", "big", "480x352x3", 480, [1, 2, 3], [0, 4]])
def test_bad_size_names_key_and_form(bad: object) -> None:
    with pytest.raises(SizeError) as err:
        config_from_dict({"data": {"crop_size": bad}}, source="exp.yaml")
    msg = str(err.value)
    assert msg == f"exp.yaml: key 'data.crop_size': expected WIDTHxHEIGHT such as 480x360, got {bad!r}"
    with pytest.raises(ConfigError, match=r"key 'eval\.resize': expected WIDTHxHEIGHT"):
        config_from_dict({"eval": {"resize": bad}})


def test_shipped_configs_spell_sizes_as_text() -> None:
    import re

    old = re.compile(r"^\s*(crop_size|resize|stride|size):\s*\[", re.MULTILINE)
    assert [str(p) for p in SHIPPED if old.search(p.read_text())] == []
    cfg = load_config(ROOT / "configs" / "cityscapes" / "pspnet_r18.yaml")
    assert cfg.data.crop_size == Size(h=512, w=1024) and cfg.eval.stride == Size(h=341, w=683)


@pytest.mark.parametrize(
    ("text", "value"), [("1e-3", 1e-3), ("1e6", 1e6), ("-2.5E-4", -2.5e-4), (".5", 0.5), ("1.5e3", 1500.0)]
)
def test_numbers_as_people_type_them(tmp_path: Path, text: str, value: float) -> None:
    clip = load_config(write(tmp_path, f"train:\n  grad_clip: {text.lstrip('-')}\n")).train.grad_clip
    assert clip == abs(value)
    parsed = load_config(write(tmp_path, f"model:\n  head_options: {{eps: {text}}}\n")).model.head_options
    assert parsed == {"eps": value}
    path = write(tmp_path, "model:\n  head: fcn\n")
    cfg = load_config(path, [f"distill.weight={text.lstrip('-')}", "train.lr=1e-3", "train.iterations=1e4"])
    assert cfg.distill.weight == abs(value) and cfg.train.lr == 1e-3
    assert cfg.train.iterations == 10000 and isinstance(cfg.train.iterations, int)
    assert yaml.safe_load("1e-3") == "1e-3"  # the global SafeLoader is left as it was


def test_yaml_numbers_never_evaluate_code() -> None:
    from effseg.config import load_yaml

    parsed = load_yaml("a: 1e-3\nb: __import__('os')\nc: 2*3\n")
    assert parsed == {"a": 1e-3, "b": "__import__('os')", "c": "2*3"}


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_config_file_is_an_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.lr=0.1"])
    assert str(err.value).startswith(f"{path}: the config file is empty") and "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [".nan", ".inf", "-.inf", ".NaN"])
@pytest.mark.parametrize(
    "key",
    [
        "train.lr",
        "train.head_lr_mult",
        "train.grad_clip",
        "train.weight_decay",
        "distill.temperature",
        "data.scale_range",
        "data.std",
        "eval.scales",
    ],
)
def test_nan_and_inf_are_refused_naming_the_key(tmp_path: Path, key: str, bad: str) -> None:
    section, name = key.split(".")
    value = (
        f"[{bad}, 1.0]"
        if name in ("scale_range",)
        else f"[1.0, 1.0, {bad}]"
        if name == "std"
        else (f"[{bad}]" if name == "scales" else bad)
    )
    path = write(tmp_path, f"{section}:\n  {name}: {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert f"key '{key}" in msg and "expected a finite number" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match=rf"key '{key}.*expected a finite number"):
        load_config(write(tmp_path, "model:\n  head: fcn\n"), [f"{key}={value}"])


def test_blur_is_a_probability() -> None:
    assert config_from_dict({}).data.blur == 0.0
    assert config_from_dict({"data": {"blur": 0.5}}).data.blur == 0.5
    with pytest.raises(ConfigError, match=r"key 'data\.blur': expected a probability in \[0, 1\], got 1\.5$"):
        config_from_dict({"data": {"blur": 1.5}})


def test_one_device_rule() -> None:
    import torch

    from effseg.config import check_device, resolve_device

    for ok in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert check_device(ok) and config_from_dict({"train": {"device": ok}}).train.device == ok
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "mps:0", ""):
        assert not check_device(bad)
        with pytest.raises(ConfigError, match=r"train\.device.*'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
            config_from_dict({"train": {"device": bad}})
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(torch.device("cpu")).type == "cpu"
    with pytest.raises(ConfigError, match=r"^device 'gpu': expected 'auto', 'cpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"--device 'cuda:0': CUDA is not available"):
            resolve_device("cuda:0", what="--device")
        mps = getattr(torch.backends, "mps", None)
        expected = "mps" if mps is not None and mps.is_available() else "cpu"
        assert resolve_device("auto").type == expected


def test_one_output_stride_check() -> None:
    from effseg.config import OUTPUT_STRIDES, check_output_stride
    from effseg.errors import ModelError
    from effseg.models import build_model
    from effseg.models.backbones import MobileNetV2, MobileNetV3, ResNet, build_backbone

    assert OUTPUT_STRIDES == (8, 16, 32) and check_output_stride(16) == 16 and check_output_stride(8.0) == 8
    for bad in (4, 64, True, "8", None):
        with pytest.raises(
            ModelError, match=rf"^output_stride={bad!r} is not supported; expected 8, 16 or 32"
        ):
            check_output_stride(bad)
    with pytest.raises(ConfigError, match=r"^x\.yaml: model\.output_stride=4 is not supported; expected 8"):
        config_from_dict({"model": {"output_stride": 4}}, source="x.yaml")
    for build in (
        lambda: build_backbone("resnet18", output_stride=4),
        lambda: ResNet("resnet18", output_stride=4),
        lambda: MobileNetV2(output_stride=4),
        lambda: MobileNetV3("small", output_stride=4),
        lambda: build_model("fcn", "mobilenetv3_small", output_stride=4),
    ):
        with pytest.raises(ModelError, match=r"^output_stride=4 is not supported; expected 8, 16 or 32$"):
            build()


def test_aux_weight_defaults_to_the_models_declared_weight() -> None:
    assert config_from_dict({}).train.aux_weight is None
    assert config_from_dict({"train": {"aux_weight": 0.7}}).train.aux_weight == 0.7
    with pytest.raises(ConfigError, match=r"train\.aux_weight.*a number >= 0 or null"):
        config_from_dict({"train": {"aux_weight": -1}})


def test_the_trainer_resolves_devices_by_the_one_rule() -> None:
    import torch

    from effseg import device
    from effseg.engine import distributed as du

    assert "resolve_device" not in du.__all__ and du.resolve_device is device.resolve_device  # the one
    assert du.init_distributed("cpu").device == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^train\.device 'gpu': expected 'auto', 'cpu'"):
        du.init_distributed("gpu")
    with pytest.raises(ConfigError, match=r"^--device 'gpu': expected"):
        du.init_distributed("gpu", what="--device")
