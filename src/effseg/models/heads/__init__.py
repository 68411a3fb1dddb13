"""Segmentation heads: each maps the backbone's feature dict to named logits at feature resolution.

A head's ``forward(feats)`` returns ``{"out": (B, C, h, w)}`` plus its own auxiliary outputs
(OCR: ``"aux"``, the object-region logits); the :class:`~effseg.models.segmentor.Segmentor`
upsamples every entry to the input size.
"""

from effseg.models.heads.aspp import ASPPHead
from effseg.models.heads.fcn import FCNHead
from effseg.models.heads.lraspp import LRASPPHead
from effseg.models.heads.ocr import OCRHead
from effseg.models.heads.ppm import PPMHead

__all__ = ["ASPPHead", "FCNHead", "LRASPPHead", "OCRHead", "PPMHead"]
