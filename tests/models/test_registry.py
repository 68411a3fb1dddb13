"""The model registry: names, options from the builders' signatures, errors, config keys."""

from __future__ import annotations

import inspect

import pytest
import torch

import effseg
from effseg.config import ConfigError, config_from_dict
from effseg.errors import ModelError
from effseg.models import (
    build_model,
    build_segmentor,
    describe_model,
    list_heads,
    list_models,
    list_segmentor_pairs,
    model_options,
)
from effseg.models.registry import MODELS, REALTIME_MODELS
from effseg.models.segmentor import HEAD_BUILDERS

NETWORKS = list(REALTIME_MODELS)


def test_every_name_is_listed_once_heads_first() -> None:
    names = list_models()
    assert names == list_heads() + NETWORKS and len(set(names)) == len(names)
    assert effseg.list_models() == names and effseg.build_model is build_model
    assert len(list_segmentor_pairs()) == len(list_heads()) * 7


def test_options_and_defaults_come_from_the_signatures() -> None:
    opts = model_options("aspp")
    assert opts["backbone"] == "resnet18" and opts["aux_weight"] == 0.4 and opts["rates"] is None
    assert opts["image_pooling"] is True and opts["dropout"] == 0.5
    ocr = inspect.signature(HEAD_BUILDERS["ocr"]).parameters
    assert model_options("ocr")["key_channels"] == ocr["key_channels"].default == 256
    assert "dropout" not in model_options("lraspp")
    for name in NETWORKS:
        sig = inspect.signature(REALTIME_MODELS[name]).parameters
        assert model_options(name) == {k: p.default for k, p in sig.items()}
        assert model_options(name)["num_classes"] == 19 and "backbone" not in model_options(name)
    assert describe_model("fcn").startswith("fcn(backbone='resnet18', num_classes=19, output_stride=8,")


def test_build_model_keeps_the_old_calls() -> None:
    with torch.device("meta"):
        a = build_model("pspnet", backbone="resnet18", num_classes=19)
        b = build_model("pspnet", "resnet18", num_classes=19)
        c = build_model(head="pspnet", backbone="resnet18")
        d = build_model(**a.config)
        e = build_segmentor("pspnet")
    assert a.config == b.config == c.config == d.config == e.config
    assert a.config["head"] == "pspnet" and "name" not in a.config


@pytest.mark.parametrize("name", NETWORKS)
def test_whole_networks_rebuild_from_their_config(name: str) -> None:
    with torch.device("meta"):
        model = build_model(name, num_classes=4)
        again = build_model(**model.config)
    assert model.config["name"] == name and again.config == model.config
    assert set(again.state_dict()) == set(model.state_dict())
    assert set(model.loss_terms) >= {"out"} and MODELS[name].family == "network"


def test_errors_list_the_valid_names() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'unet'; expected one of: fcn, pspnet, .*") as err:
        build_model("unet")
    assert all(n in str(err.value) for n in list_models())
    with pytest.raises(ModelError, match="no model name; expected one of: fcn"):
        build_model()
    with pytest.raises(ModelError, match="name='aspp' and head='ocr' disagree"):
        build_model("aspp", head="ocr")
    with pytest.raises(ModelError, match="unknown option.* wings for model 'ocr'; valid options: backbone"):
        build_model("ocr", wings=2)
    with pytest.raises(ModelError, match="multiple values for argument 'backbone'"):
        build_model("fcn", "resnet18", backbone="resnet34")


@pytest.mark.parametrize("key", ["backbone", "output_stride", "width_mult"])
def test_whole_networks_take_no_backbone(key: str) -> None:
    name = NETWORKS[0]
    value = {"backbone": "resnet18", "output_stride": 8, "width_mult": 0.5}[key]
    with pytest.raises(ConfigError, match=rf"{name} is a whole network: it takes no {key} \(model.{key}\)"):
        build_model(name, **{key: value})
    # None means unset: the trainer passes pretrained_backbone=None to every model
    with torch.device("meta"):
        assert build_model(name, pretrained_backbone=None, backbone=None).config["name"] == name


def test_model_config_name_head_and_options() -> None:
    old = config_from_dict({"model": {"head": "aspp", "head_options": {"rates": [1, 2, 3, 6]}}}).model
    assert old.model_name == "aspp"
    assert old.build_kwargs() == {"name": "aspp", "num_classes": 19, "aux": True, "rates": [1, 2, 3, 6]}
    with torch.device("meta"):
        assert build_model(**old.build_kwargs()).config["rates"] == [1, 2, 3, 6]
    assert config_from_dict({}).model.model_name == "pspnet"
    name = NETWORKS[-1]
    new = config_from_dict({"model": {"name": name, "num_classes": 11, "aux": False}}).model
    assert new.build_kwargs() == {"name": name, "num_classes": 11, "aux": False}
    with torch.device("meta"):
        assert build_model(**new.build_kwargs()).config["num_classes"] == 11
    with pytest.raises(ConfigError, match="model.name='ocr' and model.head='aspp' disagree"):
        config_from_dict({"model": {"name": "ocr", "head": "aspp"}})
    with pytest.raises(ConfigError, match="both set channels: keep one"):
        config_from_dict({"model": {"options": {"channels": 8}, "head_options": {"channels": 4}}})
    bad = config_from_dict({"model": {"name": name, "backbone": "resnet50"}}).model
    with pytest.raises(ConfigError, match=r"is a whole network: it takes no backbone \(model.backbone\)"):
        build_model(**bad.build_kwargs())
