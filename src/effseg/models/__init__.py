"""effseg models: one registry (``build_model``, ``list_models``) over the Segmentor family
(dilated backbones + segmentation heads) and the whole real-time networks; every model follows
the contract of :mod:`effseg.models.contract`."""

from effseg.models.backbones import build_backbone
from effseg.models.contract import LossTerm
from effseg.models.pretrained import load_pretrained
from effseg.models.registry import (
    build_model,
    describe_model,
    list_models,
    list_segmentor_pairs,
    model_options,
)
from effseg.models.segmentor import Segmentor, build_segmentor, list_backbones, list_heads

__all__ = [
    "LossTerm",
    "Segmentor",
    "build_backbone",
    "build_model",
    "build_segmentor",
    "describe_model",
    "list_backbones",
    "list_heads",
    "list_models",
    "list_segmentor_pairs",
    "load_pretrained",
    "model_options",
]
