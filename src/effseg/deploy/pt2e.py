"""int8 inside PyTorch: PT2E static quantization for x86, compiled by inductor (``compile-int8``).

Why a second int8 path beside onnxruntime's QDQ graph (:mod:`effseg.deploy.quantize`): on
MobileNetV3-style networks onnxruntime's int8 graph is *slower* than its fp32 graph on this
project's CPUs, because every squeeze-excitation, hard-sigmoid/hard-swish and resize sits between
a DequantizeLinear and a QuantizeLinear (docs/benchmarks.md, "int8 on MobileNetV3, op by op").
torchao's ``X86InductorQuantizer`` annotates the graph for oneDNN, and inductor (with
``freezing``) lowers each quantized convolution with its post-op (ReLU, hard-tanh, add) into
one oneDNN int8 kernel. Measured on the project's 2-core Xeon it is nevertheless slower than
onnxruntime (docs/benchmarks.md, "PyTorch's own int8"); ``effseg bench`` measures it elsewhere.

    model = effseg.build_model("lraspp", backbone="mobilenetv3_large", num_classes=11)
    fast = compile_int8(model.eval(), [x1, x2, ...])   # x: (1, 3, H, W) normalised float tensors
    logits = fast(x1)                                   # (1, C, H, W) float32

The calibration tensors fix the activation ranges (uint8 per tensor; weights int8 per channel,
the quantizer's default). The first call compiles (tens of seconds on two cores; inductor's
on-disk cache shortens it in later processes). CPU only: x86 with VNNI/AMX is where oneDNN's int8
kernels pay; elsewhere it runs, slower. Needs ``torchao`` (``pip install 'effseg[int8-torch]'``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from effseg.errors import ExportError

__all__ = ["CompiledInt8", "compile_int8", "quantize_pt2e"]


def _torchao():
    """``(prepare_pt2e, convert_pt2e, x86_inductor_quantizer)`` or a one-line ExportError."""
    # torchao's import logs a warning per CUDA-only kernel library it cannot load on a CPU build,
    # and torch one about an Enum torchao registers: noise for a CPU user, silenced for the import.
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as err:
        raise ExportError(
            f"compile-int8 needs torchao ({type(err).__name__}: {err}); pip install 'effseg[int8-torch]'"
        ) from None
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    return prepare_pt2e, convert_pt2e, xiq


def _check_inputs(calib: Sequence[torch.Tensor]) -> None:
    if not calib:
        raise ExportError("compile-int8: no calibration images (need at least one (1, 3, H, W) tensor)")
    for i, x in enumerate(calib):
        if (
            x.dim() != 4
            or x.shape[0] != 1
            or x.shape[1] != 3
            or x.device.type != "cpu"
            or (x.shape[-2:] != calib[0].shape[-2:])
        ):
            raise ExportError(
                f"compile-int8: calibration tensor {i} is {tuple(x.shape)} on {x.device}; "
                f"expected (1, 3, H, W) on the CPU, all of one size like the first {tuple(calib[0].shape)}"
            )


def quantize_pt2e(model: nn.Module, calib: Sequence[torch.Tensor]) -> nn.Module:
    """The eval-mode ``model`` exported (``torch.export``), annotated by ``X86InductorQuantizer``,
    calibrated on ``calib`` ((1, 3, H, W) float tensors, normalised like training) and converted:
    a graph module with explicit quantize/dequantize ops (reference int8 numerics in eager; fast
    once compiled). BatchNorm is folded into the convolutions by ``prepare_pt2e``."""
    prepare_pt2e, convert_pt2e, xiq = _torchao()
    _check_inputs(calib)
    model = model.eval()
    example = calib[0].float()
    with torch.no_grad():
        try:
            graph = torch.export.export(model, (example,)).module()
        except Exception as err:  # noqa: BLE001 - torch.export raises many types; one line for the user
            raise ExportError(
                f"compile-int8: torch.export failed for {type(model).__name__} "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            ) from None
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(graph, quantizer)
        for x in calib:
            prepared(x.float())
        return convert_pt2e(prepared)


class CompiledInt8(nn.Module):
    """A :func:`quantize_pt2e` graph behind ``torch.compile`` (inductor, ``freezing=True``).

    ``forward(x)``: (B, 3, H, W) float CPU tensor -> logits (B, C, H, W) float32. The exported
    graph has the calibration images' shape ``input_size`` (H, W) and batch 1: another size is
    resized to it and its logits back (like a static ONNX export), a larger batch runs image by
    image. Freezing is switched on for this module's compilations only
    (``torch._inductor.config.patch``): it folds the weights into constants and lets oneDNN
    prepack them, which the int8 fusions need.
    """

    def __init__(self, quantized: nn.Module, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.quantized = quantized
        self.input_size = tuple(input_size)
        self._compiled = torch.compile(quantized, dynamic=False)
        self.training = False

    def train(self, mode: bool = True) -> CompiledInt8:
        """Inference only: ``eval()`` is a no-op (an exported graph refuses ``train``/``eval``)."""
        if mode:
            raise ExportError("compile-int8: a quantized inference graph cannot be put in training mode")
        self.training = False
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch._inductor.config as inductor_config

        size = tuple(x.shape[-2:])
        inp = x.float()
        if size != self.input_size:
            inp = F.interpolate(inp, size=self.input_size, mode="bilinear", align_corners=False)
        with torch.no_grad(), inductor_config.patch(freezing=True):
            logits = torch.cat([self._compiled(inp[i : i + 1]) for i in range(inp.shape[0])])
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


def compile_int8(model: nn.Module, calib: Sequence[torch.Tensor]) -> CompiledInt8:
    """``model`` quantized on ``calib`` (see :func:`quantize_pt2e`) and compiled; the compilation
    happens at the first call."""
    return CompiledInt8(quantize_pt2e(model, calib), tuple(calib[0].shape[-2:]))
