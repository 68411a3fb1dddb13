"""effseg: efficient semantic segmentation in PyTorch.

>>> import effseg
>>> model = effseg.build_model("pspnet", backbone="resnet18", num_classes=19)
>>> effseg.list_models()[:2]
['fcn', 'pspnet']
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names, imported lazily so `import effseg` stays fast and light.
_LAZY = {
    "build_model": "effseg.models",
    "list_models": "effseg.models",
    "list_backbones": "effseg.models",
    "list_heads": "effseg.models",
    "list_segmentor_pairs": "effseg.models",
    "describe_model": "effseg.models",
    "load_pretrained": "effseg.models",
    "Segmentor": "effseg.models",
    "load": "effseg.api",
    "sample_images": "effseg.samples",
    "EffsegError": "effseg.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'effseg' has no attribute {name!r}")
