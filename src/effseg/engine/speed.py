"""What makes a training step fast on the chip it runs on.

- ``train.amp: auto`` (:func:`resolve_amp`): bf16 autocast only where the device has bf16
  arithmetic. On a CPU that means AMX-BF16 or AVX512-BF16 as PyTorch itself detects them
  (``torch.cpu.get_capabilities()``); without them oneDNN converts every bf16 operand to fp32
  and back, and a DDRNet-23-slim training step ran 7x *slower* in bf16 than in fp32 on an
  AVX2-only AMD EPYC (docs/bench/training.md). On CUDA: bf16 where supported, else fp16.
- ``train.compile`` (:func:`compile_step`): the step (input normalisation, forward, loss, and
  so their backward) compiled once by inductor, with its graphs cached on disk
  (:func:`compile_cache_dir`) so that a later run of the same model and shapes loads them.
- uint8 batches (:func:`model_input`): the DataLoader workers hand over ``(B, H, W, 3)`` uint8
  crops, a quarter of the bytes of normalised float32; the training side turns them into the
  normalised ``(B, 3, H, W)`` float input, which comes out channels_last without a copy
  (the permuted NHWC buffer *is* the channels_last layout).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "AMP_DTYPES",
    "compile_cache_dir",
    "compile_step",
    "model_input",
    "native_bf16",
    "resolve_amp",
]

#: ``train.amp`` (resolved) -> the autocast dtype (``None``: fp32, no autocast).
AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: CUDA with bf16 support; a CPU whose
    capabilities (as PyTorch detects them at run time) include AMX-BF16 or AVX512-BF16."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        capabilities = getattr(torch.cpu, "get_capabilities", None)
        if capabilities is None:  # an older torch: do not guess
            return False
        caps = capabilities()
        return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))
    return False


def resolve_amp(amp: str, device: torch.device) -> tuple[str, str]:
    """``train.amp`` -> ``(resolved, why)``: ``"auto"`` becomes ``"bf16"`` where the device has
    bf16 arithmetic (:func:`native_bf16`), else ``"none"`` on a CPU and ``"fp16"`` on CUDA;
    an explicit value stays. ``why`` is a short text for the log."""
    if amp != "auto":
        return amp, "set in the config"
    if native_bf16(device):
        return "bf16", f"{device.type} with bf16 arithmetic"
    if device.type == "cuda":
        return "fp16", "CUDA without bf16"
    return "none", f"{device.type} without bf16 arithmetic (no AMX-BF16 / AVX512-BF16): fp32 is faster"


def compile_cache_dir_default() -> Path:
    """``$EFFSEG_CACHE/inductor`` (``~/.cache/effseg/inductor``)."""
    base = os.environ.get("EFFSEG_CACHE") or Path.home() / ".cache" / "effseg"
    return Path(base) / "inductor"


def compile_cache_dir() -> Path:
    """Where inductor keeps compiled training graphs (after :func:`compile_step`):
    ``$TORCHINDUCTOR_CACHE_DIR`` if the user set it, else :func:`compile_cache_dir_default`,
    which survives reboots where inductor's own default under ``/tmp`` may not. (Importing
    inductor writes that default into the variable, so a user's value equal to it is replaced
    too.)"""
    own = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if own:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        if own != os.path.abspath(default_cache_dir()):
            return Path(own)
    return compile_cache_dir_default()


def compile_step(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled by ``torch.compile`` (inductor, static shapes: a training batch never
    changes shape) with the FX-graph and AOT-autograd caches on, in :func:`compile_cache_dir`.

    Compilation happens at the first call; on a warm cache it loads the compiled kernels
    instead of generating and building them again.
    """
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # importing inductor writes its /tmp default into the variable: replace that, keep a user's own
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, os.path.abspath(default_cache_dir())):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache_dir_default())

    inductor_config.fx_graph_cache = True
    if hasattr(functorch_config, "enable_autograd_cache"):
        functorch_config.enable_autograd_cache = True
    return torch.compile(fn, dynamic=False)


def model_input(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float], channels_last: bool
) -> torch.Tensor:
    """The model's float input ``(B, 3, H, W)`` of a batch.

    ``images`` is either ``(B, H, W, 3)`` uint8 RGB (the uint8 training transform), normalised
    here by ``(x / 255 - mean) / std``, or an already normalised float ``(B, 3, H, W)`` batch
    (any other transform), passed through. The result is channels_last when asked (for a uint8
    batch that is the layout the permute gives, no copy) and contiguous otherwise.
    """
    if images.dtype == torch.uint8:
        scale = torch.tensor([255.0 * s for s in std], device=images.device)
        shift = torch.tensor([255.0 * m for m in mean], device=images.device)
        x = (images.permute(0, 3, 1, 2).float() - shift.view(1, 3, 1, 1)) / scale.view(1, 3, 1, 1)
    else:
        x = images
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)
