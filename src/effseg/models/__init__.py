"""effseg models: dilated backbones, segmentation heads, ``Segmentor`` and ``build_model``."""

from effseg.models.backbones import build_backbone
from effseg.models.pretrained import load_pretrained
from effseg.models.segmentor import Segmentor, build_model, list_backbones, list_heads, list_models

__all__ = [
    "Segmentor",
    "build_backbone",
    "build_model",
    "list_backbones",
    "list_heads",
    "list_models",
    "load_pretrained",
]
