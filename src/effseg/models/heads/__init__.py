"""Segmentation heads: each maps the backbone's feature dict to logits at feature resolution."""

from effseg.models.heads.aspp import ASPPHead
from effseg.models.heads.fcn import FCNHead
from effseg.models.heads.lraspp import LRASPPHead
from effseg.models.heads.ocr import OCRHead
from effseg.models.heads.ppm import PPMHead

__all__ = ["ASPPHead", "FCNHead", "LRASPPHead", "OCRHead", "PPMHead"]
