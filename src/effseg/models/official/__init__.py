"""The official checkpoints of the real-time networks: key maps, implied options, a reference.

The official repositories of DDRNet (ydhongHIT/DDRNet), PIDNet (XuJiacong/PIDNet), BiSeNetV2
(CoinCheung/BiSeNet) and RegSeg (RolandGao/RegSeg) publish ImageNet-pretrained and
Cityscapes/CamVid-trained checkpoints that users download themselves. effseg's networks have the
same tensors under effseg's names; :func:`convert_official` renames a file's state dict
(:mod:`effseg.models.official.keymaps` documents every map) and :func:`official_options` gives
the model options under which effseg computes the official function.  ``model.init`` (and
``model.pretrained_backbone`` for the ImageNet files) load them through
:mod:`effseg.engine.init_weights`; :mod:`effseg.models.official.reference` computes the official
function from the file alone, to check the agreement:

    python -m effseg.models.official PIDNet_S_Cityscapes_val.pt --model pidnet_s
"""

from __future__ import annotations

from effseg.models.official.keymaps import (
    OFFICIAL_OPTIONS,
    OFFICIAL_SOURCES,
    Converted,
    convert_official,
    is_official_layout,
    official_options,
    unwrap_official,
)

__all__ = [
    "OFFICIAL_OPTIONS",
    "OFFICIAL_SOURCES",
    "Converted",
    "convert_official",
    "is_official_layout",
    "official_options",
    "unwrap_official",
]
