"""The one device rule of effseg, shared by the config (``train.device``) and the API
(``effseg.load(..., device=)``, ``--device``): ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

>>> check_device("cuda:1"), check_device("gpu")
(True, False)
>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import re
from typing import Any

from effseg.errors import ConfigError

__all__ = ["DEVICE_FORMS", "check_device", "resolve_device"]

#: The device spellings accepted by the config (``train.device``) and the API (``load(device=)``).
DEVICE_FORMS = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def check_device(spec: str) -> bool:
    """Whether ``spec`` is a device spelling effseg accepts (syntax only; no hardware check)."""
    return spec in ("auto", "cpu", "cuda", "mps") or bool(re.fullmatch(r"cuda:[0-9]+", spec))


def resolve_device(spec: Any = "auto", local_rank: int = 0, what: str = "device") -> Any:
    """``auto | cpu | cuda | cuda:N | mps`` (or a ``torch.device``) -> an available ``torch.device``.

    ``auto`` picks ``cuda:<local_rank>`` when CUDA is available, else ``mps`` (Apple GPUs) when
    available, else ``cpu``; ``cuda`` alone means ``cuda:<local_rank>`` (one GPU per torchrun
    process).

    Raises:
        ConfigError: one line naming ``what`` and the value when it is not one of
            :data:`DEVICE_FORMS` or the device is not available on this machine.
    """
    import torch

    text = str(spec)
    if not check_device(text):
        raise ConfigError(f"{what} {text!r}: expected {DEVICE_FORMS}")
    mps = getattr(torch.backends, "mps", None)
    mps_ok = mps is not None and mps.is_available()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu"
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{what} {str(spec)!r}: CUDA is not available on this machine (use cpu)")
        dev = torch.device("cuda", local_rank) if text == "cuda" else torch.device(text)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ConfigError(f"{what} {str(spec)!r}: only {count} CUDA device(s) visible")
        return dev
    if text == "mps" and not mps_ok:
        raise ConfigError(f"{what} {str(spec)!r}: MPS (Apple GPU) is not available on this machine (use cpu)")
    return torch.device(text)
