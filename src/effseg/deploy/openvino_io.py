"""OpenVINO as a second engine for effseg's ONNX files (the ``openvino`` and ``openvino-int8`` runtimes).

:class:`OpenVinoSession` compiles an ONNX file (fp32, or the int8 QDQ file of
:func:`effseg.deploy.quantize.quantize_onnx`) for the CPU and offers the part of onnxruntime's
``InferenceSession`` that effseg uses (``get_inputs()``, ``run(None, feeds)``), so every place that
runs an ONNX file (``OnnxSegmentor``, ``effseg bench``, the predict pipeline) takes either engine.

Precision: by default OpenVINO picks the fastest precision the CPU supports for the layers left in
floating point: **bf16** on CPUs with AMX or AVX-512-BF16, fp32 elsewhere. The session records
the precision it ran at (``precision``); effseg's ``auto`` runtime and ``effseg eval`` treat a bf16
graph like an int8 one (argmax agreement with fp32 is measured before it is used). Measured here
(Intel Xeon with AMX, 2 threads, docs/benchmarks.md): DDRNet-23-slim at 480x360 27.7 ms in
onnxruntime fp32, 14.6 ms in onnxruntime int8, 9.4 ms in OpenVINO bf16, 8.4 ms in OpenVINO int8.

Needs the optional ``openvino`` extra (``pip install 'effseg[openvino]'``); a missing package is a
one-line error.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effseg.errors import ExportError

PRECISIONS = ("auto", "f32", "bf16")


def require_openvino() -> Any:
    """The ``openvino`` module, or a one-line ExportError naming the extra to install."""
    try:
        return importlib.import_module("openvino")
    except ImportError:
        raise ExportError(
            "the openvino runtimes need the openvino package: pip install 'effseg[openvino]'"
        ) from None


@dataclass(frozen=True)
class _Input:
    """What effseg reads of an onnxruntime ``NodeArg``: the input's name and shape (ints or names)."""

    name: str
    shape: list[Any]


class OpenVinoSession:
    """An ONNX file compiled by OpenVINO for the CPU, used like an onnxruntime session.

    ``threads``: inference threads (default: torch's thread count); ``precision``: ``auto``
    (OpenVINO's choice: bf16 where the CPU has AMX / AVX-512-BF16), ``f32`` or ``bf16``. One
    stream, latency hint: batch-1 frames one after another, as the pipeline runs them.
    """

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "auto") -> None:
        ov = require_openvino()
        if precision not in PRECISIONS:
            raise ExportError(f"OpenVINO precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = precision
        self.path = str(path)
        try:
            compiled = ov.Core().compile_model(self.path, "CPU", config)
        except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses with long text
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ExportError(f"{path}: OpenVINO cannot compile this file ({first[:160]})") from None
        self.precision = _precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        port = compiled.input(0)
        dims = port.get_partial_shape()
        shape = [d.get_length() if d.is_static else f"dim{i}" for i, d in enumerate(dims)]
        self._input = _Input(port.get_any_name(), shape)
        self._request = compiled.create_infer_request()

    def get_inputs(self) -> list[_Input]:
        return [self._input]

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """``feeds`` {input name: array} -> ``[first output]``. The input is read in place (not
        copied); the output is OpenVINO's copy (``share_outputs=False``: the next call cannot
        overwrite it; a second copy of 40 MB of logits cost ~10 ms at 1024x512, measured).
        ``output_names`` is accepted for onnxruntime's signature and ignored."""
        if set(feeds) != {self._input.name}:
            raise ExportError(f"{self.path}: expected the input {self._input.name!r}, got {sorted(feeds)}")
        x = np.ascontiguousarray(feeds[self._input.name])
        result = self._request.infer({0: x}, share_inputs=True, share_outputs=False)
        return [result[0]]


def _precision_name(value: Any) -> str:
    """OpenVINO's element type (``<Type: 'bfloat16'>``) -> ``bf16`` / ``f32`` / ``f16``."""
    text = str(getattr(value, "name", value)).lower()
    names = {"bf16": ("bf16", "bfloat16"), "f16": ("f16", "float16"), "f32": ("f32", "float32")}
    for short, spellings in names.items():  # bf16 first: "bfloat16" contains "float16"
        if any(n in text for n in spellings):
            return short
    return text
