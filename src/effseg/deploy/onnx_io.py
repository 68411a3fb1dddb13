"""ONNX files and their effseg metadata: read, write, check; onnxruntime sessions; logit parity.

An effseg ONNX file carries, in its ``metadata_props`` under the key ``effseg``, one JSON object
with everything a checkpoint would give :func:`effseg.load`: ``num_classes``, ``classes``,
``palette``, ``mean``, ``std`` (0..1 units), ``model_config``, ``config`` (the resolved training
config), ``input_size`` ``[H, W]``, ``fixed_input_size`` ``[W, H]`` or ``null`` (dynamic),
``precision`` and, for int8 files, ``quantization``.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effseg.config import IMAGENET_MEAN, IMAGENET_STD
from effseg.errors import ExportError

DEFAULT_OPSET = 18
META_KEY = "effseg"  # metadata_props key holding the JSON metadata
# What effseg.load needs to turn logits into class ids (classes and palette are optional).
REQUIRED_METADATA = ("num_classes", "mean", "std")


def require(module: str) -> Any:
    """Import ``onnx`` / ``onnxruntime`` (dependencies of effseg) or raise a one-line ExportError."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(
            f"ONNX files need the {module} package, a dependency of effseg: pip install {module}"
        ) from None


def model_metadata(model: nn.Module, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Classes, palette, mean/std and model config of ``model`` (from checkpoint ``meta`` if given)."""
    meta = dict(meta or {})
    out: dict[str, Any] = {}
    num_classes = getattr(model, "num_classes", None) or meta.get("num_classes")
    out["num_classes"] = int(num_classes) if num_classes is not None else None
    classes = meta.get("classes")
    out["classes"] = list(classes) if classes is not None else None
    palette = meta.get("palette")
    out["palette"] = np.asarray(palette).astype(int).tolist() if palette is not None else None
    mean, std = meta.get("mean"), meta.get("std")
    if mean is None or std is None:  # a model without checkpoint metadata (random weights)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    out["mean"] = [float(v) for v in mean]
    out["std"] = [float(v) for v in std]
    config = getattr(model, "config", None) or meta.get("model_config")
    out["model_config"] = config if isinstance(config, dict) else None
    # The resolved training config (dataset, eval settings): lets `effseg eval model.onnx` find its data.
    out["config"] = meta.get("config") if isinstance(meta.get("config"), dict) else None
    return out


def write_onnx_metadata(path: str | Path, meta: dict[str, Any]) -> None:
    """Replace the metadata_props of an ONNX file with ``meta`` (JSON under the key ``effseg``)."""
    onnx = require("onnx")

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.save(proto, str(path))


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The effseg metadata dict stored in an ONNX file (empty dict when absent).

    Raises :class:`ExportError` (one line) when ``path`` is missing or is not an ONNX file.
    """
    onnx = require("onnx")

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeWarning-ish errors...
        raise ExportError(f"{path}: not a readable ONNX file ({type(err).__name__})") from None
    if not proto.graph.node:
        raise ExportError(f"{path}: not an ONNX model (the file parses but holds no graph)")
    for entry in proto.metadata_props:
        if entry.key == META_KEY:
            try:
                meta = json.loads(entry.value)
            except json.JSONDecodeError as err:
                raise ExportError(f"{path}: effseg metadata is not valid JSON ({err.msg})") from None
            if not isinstance(meta, dict):
                raise ExportError(f"{path}: effseg metadata is a {type(meta).__name__}, expected an object")
            return meta
    return {}


def check_onnx_metadata(path: str | Path, meta: dict[str, Any]) -> None:
    """Raise :class:`ExportError` naming the effseg metadata keys ``meta`` lacks (see REQUIRED_METADATA)."""
    if not meta:
        raise ExportError(
            f"{path}: no effseg metadata (the {META_KEY!r} entry with {', '.join(REQUIRED_METADATA)}); "
            "export the model with `effseg export`"
        )
    missing = [k for k in REQUIRED_METADATA if meta.get(k) in (None, [], "")]
    if missing:
        raise ExportError(
            f"{path}: effseg metadata lacks {', '.join(missing)}; export the model with `effseg export`"
        )


# ----------------------------------------------------------------------------- ONNX


def onnx_op_types(path: str | Path) -> dict[str, int]:
    """Count of each operator type in an ONNX graph (top level)."""
    onnx = require("onnx")

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def ort_session(
    path: str | Path,
    threads: int | None = None,
    opt_level: str = "all",
    profile: bool = False,
    spinning: bool | None = None,
) -> Any:
    """An onnxruntime CPU session: graph optimisation ``opt_level`` (disable/basic/extended/all),
    ``threads`` intra-op threads (default: torch's thread count), sequential execution.

    ``spinning``: let idle worker threads spin-wait (onnxruntime's default).  ``None`` follows
    ``OMP_WAIT_POLICY``: ``PASSIVE`` turns spinning off, so that onnxruntime and PyTorch's OpenMP
    threads wait the same way when they are compared on a busy machine.
    """
    ort = require("onnxruntime")

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if opt_level not in levels:
        raise ExportError(f"onnxruntime optimisation level {opt_level!r}: expected one of {sorted(levels)}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[opt_level]
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if spinning is None:
        spinning = os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if profile:
        opts.enable_profiling = True
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"{path}: onnxruntime cannot load this file ({first[:160]})") from None


BACKENDS = ("onnxruntime", "openvino")
# The runtimes that run an exported file: ``<backend>`` (the fp32 export) or ``<backend>-int8``.
ONNX_RUNTIMES = ("onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8")


def split_runtime(runtime: str) -> tuple[str, str]:
    """``onnxruntime-int8`` -> ``("onnxruntime", "int8")``; ``openvino`` -> ``("openvino", "fp32")``:
    the engine and the precision of the exported file it runs."""
    backend, _, precision = runtime.partition("-")
    return backend, precision or "fp32"


def onnx_session(
    path: str | Path,
    backend: str = "onnxruntime",
    threads: int | None = None,
    opt_level: str = "all",
    precision: str = "auto",
) -> Any:
    """A CPU session for the ONNX file ``path``: onnxruntime (:func:`ort_session`, ``opt_level``)
    or OpenVINO (:class:`effseg.deploy.openvino_io.OpenVinoSession`, ``precision``). Both answer
    ``get_inputs()`` and ``run(None, {name: array})``."""
    if backend == "openvino":
        from effseg.deploy.openvino_io import OpenVinoSession

        return OpenVinoSession(path, threads=threads, precision=precision)
    if backend != "onnxruntime":
        raise ExportError(f"ONNX backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    return ort_session(path, threads=threads, opt_level=opt_level)


def compare_logits(ref: torch.Tensor, out: torch.Tensor) -> dict[str, float]:
    """Max abs logit difference and argmax agreement (fraction of pixels) of two (B, C, H, W) tensors."""
    ref, out = ref.float(), out.float()
    return {
        "max_abs_diff": float((ref - out).abs().max()),
        "argmax_agreement": float((ref.argmax(1) == out.argmax(1)).float().mean()),
    }
