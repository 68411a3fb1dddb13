"""Object-contextual representations (Yuan et al., 2020), the HRNet-OCR / openseg design.

On a dilated backbone (openseg's ``SpatialOCRNet``): an auxiliary classifier on
``"aux"`` (C4) predicts soft object regions; ``"out"`` (C5) goes through a 3x3
conv to 512 channels; ``SpatialGather`` pools one feature vector per class
weighted by the region probabilities; ``SpatialOCR`` attends from every pixel
to those class vectors (256 key channels) and fuses the context with the pixel
feature (512 channels); a 1x1 conv classifies.  The object-region logits are
the head's second named output, ``"aux"`` (supervised as the model's auxiliary output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from effseg.models.layers import ConvBNAct


class SpatialGather(nn.Module):
    """Class centres: ``feats`` (B, C, h, w), ``probs`` (B, K, h, w) logits -> (B, C, K, 1)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, feats: Tensor, probs: Tensor) -> Tensor:
        b, k = probs.shape[:2]
        probs = F.softmax(self.scale * probs.reshape(b, k, -1), dim=2)  # (B, K, hw), over pixels
        feats = feats.reshape(b, feats.shape[1], -1).permute(0, 2, 1)  # (B, hw, C)
        return torch.matmul(probs, feats).permute(0, 2, 1).unsqueeze(3)  # (B, C, K, 1)


class SpatialOCR(nn.Module):
    """Pixel -> object attention and fusion (openseg's ``SpatialOCR_Module``, scale 1).

    ``forward(feats (B, C, h, w), context (B, C, K, 1))`` -> (B, out_channels, h, w).
    """

    def __init__(self, in_channels: int, key_channels: int, out_channels: int, dropout: float = 0.05) -> None:
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = nn.Sequential(
            ConvBNAct(in_channels, key_channels, 1), ConvBNAct(key_channels, key_channels, 1)
        )
        self.f_object = nn.Sequential(
            ConvBNAct(in_channels, key_channels, 1), ConvBNAct(key_channels, key_channels, 1)
        )
        self.f_down = ConvBNAct(in_channels, key_channels, 1)
        self.f_up = ConvBNAct(key_channels, in_channels, 1)
        self.fuse = nn.Sequential(ConvBNAct(2 * in_channels, out_channels, 1), nn.Dropout2d(dropout))

    def forward(self, feats: Tensor, context: Tensor) -> Tensor:
        b, _, h, w = feats.shape
        query = self.f_pixel(feats).reshape(b, self.key_channels, -1).permute(0, 2, 1)  # (B, hw, key)
        key = self.f_object(context).reshape(b, self.key_channels, -1)  # (B, key, K)
        value = self.f_down(context).reshape(b, self.key_channels, -1).permute(0, 2, 1)  # (B, K, key)
        sim = F.softmax(torch.matmul(query, key) * self.key_channels**-0.5, dim=-1)  # (B, hw, K)
        ctx = torch.matmul(sim, value).permute(0, 2, 1).reshape(b, self.key_channels, h, w)
        return self.fuse(torch.cat([self.f_up(ctx), feats], dim=1))


class OCRHead(nn.Module):
    """``forward(feats)`` -> ``{"out": (B, K, h, w), "aux": object-region logits (B, K, h', w')}``.

    ``(h', w')`` is the ``"aux"`` feature's size (C4: equal to ``(h, w)`` except at output
    stride 32).  ``return_aux=False`` returns ``{"out"}`` only (the regions are still
    computed: OCR needs them).
    """

    def __init__(
        self,
        in_channels: int,
        aux_channels: int,
        num_classes: int,
        key_channels: int = 256,
        mid_channels: int = 512,
        dropout: float = 0.05,
        return_aux: bool = True,
    ) -> None:
        super().__init__()
        self.return_aux = return_aux
        self.region_head = nn.Sequential(  # openseg's dsn_head: soft object regions from C4
            ConvBNAct(aux_channels, mid_channels, 3),
            nn.Dropout2d(dropout),
            nn.Conv2d(mid_channels, num_classes, 1),
        )
        self.conv3x3 = ConvBNAct(in_channels, mid_channels, 3)
        self.gather = SpatialGather()
        self.ocr = SpatialOCR(mid_channels, key_channels, mid_channels, dropout)
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1)

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        regions = self.region_head(feats["aux"])
        x = self.conv3x3(feats["out"])
        if regions.shape[-2:] != x.shape[-2:]:  # output stride 32: C4 is 1/16, C5 1/32
            regions_x = F.interpolate(regions, size=x.shape[-2:], mode="bilinear", align_corners=False)
        else:
            regions_x = regions
        x = self.ocr(x, self.gather(x, regions_x))
        out = self.classifier(x)
        return {"out": out, "aux": regions} if self.return_aux else {"out": out}
