"""The runtimes ``effseg bench`` times: one :class:`Runner` (a prepared zero-argument forward) each.

- PyTorch: ``eager``, ``channels_last``, ``compile`` (inductor, freezing), ``compile-int8``
  (PT2E int8 for x86 + inductor, :mod:`effseg.deploy.pt2e`);
- ONNX files: ``onnxruntime`` / ``onnxruntime-int8`` and ``openvino`` / ``openvino-int8`` (the same
  fp32 export and the same static int8 QDQ file, compiled by OpenVINO at its default precision:
  bf16 for the layers left in floating point on CPUs with AMX / AVX-512-BF16; the row records it).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effseg.deploy.onnx_io import ONNX_RUNTIMES, split_runtime
from effseg.errors import BenchError

RUNTIMES = ("eager", "channels_last", "compile", "compile-int8", *ONNX_RUNTIMES)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Runner:
    """One prepared runtime of one model: ``fn()`` runs one forward on the prepared input."""

    runtime: str
    fn: Callable[[], Any]
    info: dict[str, Any] = field(default_factory=dict)
    times_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def parse_runtimes(spec: str | Sequence[str]) -> list[str]:
    """``"eager,onnxruntime"`` -> ``["eager", "onnxruntime"]``; unknown names raise BenchError."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [s for s in items if s not in RUNTIMES]
    if bad or not items:
        raise BenchError(
            f"--runtime {','.join(bad) or spec!r}: unknown runtime; expected a comma list of "
            f"{', '.join(RUNTIMES)}"
        )
    return list(dict.fromkeys(items))


def calibration(calib: Sequence[np.ndarray] | None, size: tuple[int, int]) -> tuple[list[np.ndarray], str]:
    """The int8 runtimes' calibration arrays (1, 3, H, W) and where they come from: ``calib``, or
    4 seeded random-normal inputs (enough for latency; their ranges are not a photo's)."""
    if calib:
        return list(calib), "given images"
    rng = [np.random.default_rng(i) for i in range(4)]
    random = [r.standard_normal((1, 3, *size)).astype(np.float32) for r in rng]
    return random, "random normal inputs (latency only: ranges are not realistic)"


def torch_runner(
    model: nn.Module,
    x: torch.Tensor,
    runtime: str,
    dtype: torch.dtype,
    calib: Sequence[np.ndarray] | None = None,
) -> Runner:
    """``model`` on ``x`` (B, 3, H, W) in eager PyTorch, channels_last, compile or compile-int8."""
    info: dict[str, Any] = {}
    inp = x.to(dtype)
    if runtime == "compile-int8":  # PT2E int8 for x86 + inductor (effseg.deploy.pt2e)
        from effseg.deploy.pt2e import compile_int8

        if x.device.type != "cpu" or dtype != torch.float32:
            raise BenchError("--runtime compile-int8: x86 CPU int8; use --device cpu --dtype fp32")
        batches, src = calibration(calib, tuple(x.shape[-2:]))
        m = compile_int8(copy.deepcopy(model), [torch.from_numpy(a) for a in batches])
        info["quantization"] = {"method": "PT2E X86InductorQuantizer + inductor", "calibration": src}
        return Runner(runtime, lambda: m(inp), info)
    # Module.to() converts in place: every runtime but plain fp32 eager works on its own copy.
    m = model if runtime == "eager" and dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    if runtime == "channels_last":
        m = m.to(memory_format=torch.channels_last)
        inp = inp.contiguous(memory_format=torch.channels_last)
    elif runtime == "compile":
        import torch._inductor.config as inductor_config

        # freezing: constant-fold weights and fold BN into conv, prepack weights for oneDNN (CPU).
        inductor_config.freezing = True
        m = torch.compile(m, mode="max-autotune-no-cudagraphs" if x.is_cuda else None, dynamic=False)
        info["compile"] = {"backend": "inductor", "freezing": True}

    def fn() -> torch.Tensor:
        with torch.inference_mode():
            return m(inp)

    return Runner(runtime, fn, info)


def onnx_runner(
    model: nn.Module | None,
    onnx_path: str | None,
    x: torch.Tensor,
    runtime: str,
    threads: int,
    work: Path,
    calib: Sequence[np.ndarray] | None,
    opt_level: str,
    meta: dict[str, Any],
) -> Runner:
    """An ONNX runtime of :data:`ONNX_RUNTIMES`: ``model`` exported to ``work`` (or the given
    ``onnx_path``), quantized for the ``-int8`` runtimes, opened by onnxruntime or OpenVINO."""
    from effseg.deploy.export import export_onnx
    from effseg.deploy.onnx_io import onnx_session

    backend, precision = split_runtime(runtime)
    info: dict[str, Any] = {}
    if backend == "onnxruntime":
        info.update(ort_opt_level=opt_level, ort_threads=threads)
    size = tuple(x.shape[-2:])
    if onnx_path is None:
        assert model is not None
        path = work / f"model_{size[0]}x{size[1]}.onnx"
        if not path.exists():
            t0 = time.perf_counter()
            rep = export_onnx(model, path, size, meta=meta)
            info["export_seconds"] = round(time.perf_counter() - t0, 1)
            info["parity"] = rep.parity
        onnx_path = str(path)
    if precision == "int8":  # one quantized file per model, shared by onnxruntime and OpenVINO
        from effseg.deploy.quantize import quantize_onnx

        q = Path(work) / (Path(onnx_path).stem + "_int8.onnx")
        if not q.exists():
            batches, src = calibration(calib, size)
            info["quantization"] = quantize_onnx(onnx_path, q, batches, calibration_source=src)
        onnx_path = str(q)
    session = onnx_session(onnx_path, backend, threads=threads, opt_level=opt_level)
    name = session.get_inputs()[0].name
    arr = np.ascontiguousarray(x.float().cpu().numpy())
    info["onnx_path"] = onnx_path
    if backend == "openvino":
        info["openvino_precision"] = session.precision  # bf16 on CPUs with AMX, f32 elsewhere
    else:
        info["ort_spinning"] = (
            session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
        )

    def fn() -> Any:
        return session.run(None, {name: arr})

    return Runner(runtime, fn, info)
