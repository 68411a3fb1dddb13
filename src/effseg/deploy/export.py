"""Export a segmentation model to ONNX or TorchScript and check the file against PyTorch.

ONNX export uses torch's ``torch.export``-based exporter (``dynamo=True``): the
legacy TorchScript-based exporter cannot export PPM's adaptive average pooling
when the bins do not divide the feature map (1024x512 at output stride 8 gives a
128x64 map, which bin 3 does not divide).  The exporter's ONNX optimiser folds
every eval-mode BatchNorm into the preceding convolution; :func:`export_onnx`
checks that no ``BatchNormalization`` node is left (and folds with onnxruntime's
basic graph optimiser if one is), runs ``onnx.checker`` and compares the file's
logits with PyTorch's on the same input.  The metadata (see
:mod:`effseg.deploy.onnx_io`) makes the file loadable by :func:`effseg.load`.

Sizes in this module are ``(H, W)`` tuples of pixels.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effseg.deploy.onnx_io import (
    DEFAULT_OPSET,
    compare_logits,
    model_metadata,
    onnx_op_types,
    ort_session,
    require,
    write_onnx_metadata,
)
from effseg.errors import ExportError
from effseg.fileio import atomic_path, atomic_write_bytes

__all__ = [
    "DEFAULT_OPSET",
    "ExportReport",
    "check_finite_logits",
    "check_onnx_finite",
    "export_onnx",
    "export_torchscript",
]


def _fold_batchnorm_with_ort(path: Path) -> None:
    """Fold remaining BatchNormalization nodes into Conv with onnxruntime's basic optimiser.

    Basic level only does constant folding and Conv+BN / Conv+Add fusions, which
    keep the graph in the standard ONNX domain (the extended level would not).
    """
    ort = require("onnxruntime")

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "folded.onnx"
        opts.optimized_model_filepath = str(out)
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        path.write_bytes(out.read_bytes())


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress prints, torchvision-registration warnings and torch's own
    deprecation notice about its internal pytree classes (nothing a user can act on)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


@dataclass
class ExportReport:
    """What :func:`export_onnx` / :func:`export_torchscript` produced and how it was checked."""

    path: str
    format: str
    input_size: tuple[int, int]
    dynamic: bool
    opset: int | None = None
    batchnorm_nodes: int | None = None
    checker: str | None = None
    parity: dict[str, float] = field(default_factory=dict)
    dynamic_sizes_ok: list[tuple[int, int]] = field(default_factory=list)
    int8: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, out: Path, metadata: dict[str, Any], **checks: Any) -> ExportReport:
        """The report of the file written to ``out``: its format, input size, dynamic flag and opset
        as its ``metadata`` (:func:`_file_metadata`) states them, and the ``checks`` made on it."""
        return cls(
            path=str(out),
            format=metadata["format"],
            input_size=tuple(metadata["input_size"]),
            dynamic=metadata["dynamic"],
            opset=metadata.get("opset"),
            metadata=metadata,
            **checks,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _file_metadata(
    model: nn.Module,
    meta: dict[str, Any] | None,
    fmt: str,
    input_size: tuple[int, int],
    dynamic: bool,
    **extra: Any,
) -> dict[str, Any]:
    """The metadata an exported file stores: the model's (:func:`model_metadata`), then the input
    size (H, W), ``dynamic``, the format's ``extra`` keys, the format and ``precision`` fp32."""
    export = {"input_size": list(input_size), "dynamic": bool(dynamic), **extra}
    return {**model_metadata(model, meta), **export, "format": fmt, "precision": "fp32"}


def _example_input(size: tuple[int, int], batch: int = 1, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=gen)


def _probe_sizes(size: tuple[int, int], stride: int) -> list[tuple[int, int]]:
    """Sizes that check a dynamic export: the export size, half, and sizes not divisible by 6*stride."""
    h, w = size
    cands = [
        (h, w),
        (max(stride, h // 2), max(stride, w // 2)),
        (h + stride, w - stride if w > 2 * stride else w),
        (h + 3 * stride, w + 5 * stride),
    ]
    out: list[tuple[int, int]] = []
    for c in cands:
        if c not in out:
            out.append(c)
    return out


def export_onnx(
    model: nn.Module,
    out: str | Path,
    input_size: tuple[int, int] = (512, 1024),
    *,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    meta: dict[str, Any] | None = None,
    check_parity: bool = True,
    min_agreement: float = 0.999,
) -> ExportReport:
    """Export ``model`` (eval mode; input (B, 3, H, W) -> logits (B, C, H, W)) to ONNX at ``out``.

    ``input_size`` is ``(H, W)`` in pixels.  ``dynamic`` makes batch, height and
    width symbolic; the file is then run at several sizes and compared with
    PyTorch, and an :class:`ExportError` names the sizes that fail and the ones that
    work.  Raises :class:`ExportError` when fp32 argmax agreement with PyTorch is
    below ``min_agreement``.
    """
    if opset < 17:
        raise ExportError(f"opset {opset}: expected >= 17 (LayerNorm/Resize semantics effseg relies on)")
    out = Path(out)
    with atomic_path(out, "the ONNX export", fsync=True) as tmp:
        report = _export_onnx_to(
            model, tmp, out, input_size, dynamic, opset, meta, check_parity, min_agreement
        )
    report.path = str(out)
    return report


def _export_onnx_to(
    model: nn.Module,
    tmp: Path,
    out: Path,
    input_size: tuple[int, int],
    dynamic: bool,
    opset: int,
    meta: dict[str, Any] | None,
    check_parity: bool,
    min_agreement: float,
) -> ExportReport:
    """:func:`export_onnx`'s steps, writing and checking the file ``tmp`` (messages name ``out``)."""
    onnx = require("onnx")

    model = model.eval()
    x = _example_input(input_size)
    dynamic_shapes = None
    if dynamic:
        dyn = torch.export.Dim.DYNAMIC
        dynamic_shapes = ({0: dyn, 2: dyn, 3: dyn},)
    try:
        with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                opset_version=opset,
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=dynamic_shapes,
                optimize=True,
                verbose=False,
            )
    except Exception as err:  # the exporter raises many types; report one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(
            f"ONNX export of {type(model).__name__} at {input_size[1]}x{input_size[0]} "
            f"(dynamic={dynamic}) failed: {first}"
        ) from err
    program.save(str(tmp))
    bn = onnx_op_types(tmp).get("BatchNormalization", 0)
    if bn:
        _fold_batchnorm_with_ort(tmp)
        bn = onnx_op_types(tmp).get("BatchNormalization", 0)
    if bn:
        raise ExportError(f"{out}: {bn} BatchNormalization node(s) could not be folded into a convolution")
    # input_size is (H, W); fixed_input_size is [W, H] (the metadata's stored form), None if dynamic.
    fixed = None if dynamic else [input_size[1], input_size[0]]
    metadata = _file_metadata(model, meta, "onnx", input_size, dynamic, opset=opset, fixed_input_size=fixed)
    write_onnx_metadata(tmp, metadata)
    onnx.checker.check_model(str(tmp), full_check=True)
    report = ExportReport.of(out, metadata, batchnorm_nodes=bn, checker="passed")
    if check_parity:
        session = ort_session(tmp)
        with torch.inference_mode():
            ref = model(x)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        check_finite_logits(ref, got, out)
        report.parity = compare_logits(ref, got)
        if report.parity["argmax_agreement"] < min_agreement:
            raise ExportError(
                f"{out}: argmax agreement with PyTorch {report.parity['argmax_agreement']:.4%} "
                f"< {min_agreement:.1%} (max abs logit diff {report.parity['max_abs_diff']:.3g})"
            )
        if dynamic:
            report.dynamic_sizes_ok = _check_dynamic(model, session, out, input_size, min_agreement)
    return report


def _check_dynamic(
    model: nn.Module, session: Any, out: Path, size: tuple[int, int], min_agreement: float
) -> list[tuple[int, int]]:
    stride = int(getattr(getattr(model, "backbone", None), "output_stride", 8) or 8)
    ok, bad = [], []
    for h, w in _probe_sizes(size, stride):
        x = _example_input((h, w), seed=h * 7 + w)
        with torch.inference_mode():
            ref = model(x)
        try:
            got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
            agree = compare_logits(ref, got)["argmax_agreement"] if got.shape == ref.shape else 0.0
        except Exception:  # onnxruntime raises its own Fail/InvalidArgument types
            agree = 0.0
        (ok if agree >= min_agreement else bad).append((h, w))
    if bad:
        fmt = ", ".join(f"{w}x{h}" for h, w in bad)
        good = ", ".join(f"{w}x{h}" for h, w in ok) or "none"
        raise ExportError(
            f"{out}: the dynamic-shape graph is wrong at {fmt} (works at {good}): adaptive pooling "
            f"whose bins do not divide the feature map is exported with bin edges fixed at trace time; "
            f"export with a fixed --input-size (load_onnx_model resizes other inputs to it)"
        )
    return ok


# ----------------------------------------------------------------------------- TorchScript


def export_torchscript(
    model: nn.Module,
    out: str | Path,
    input_size: tuple[int, int] = (512, 1024),
    *,
    meta: dict[str, Any] | None = None,
    min_agreement: float = 0.999,
) -> ExportReport:
    """Trace ``model`` at ``input_size`` (H, W), freeze it (``torch.jit.freeze`` folds BatchNorm into
    convolutions) and save it with the metadata as the extra file ``effseg.json``."""
    out = Path(out)
    model = model.eval()
    x = _example_input(input_size)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x,), check_trace=False, strict=False)
        frozen = torch.jit.freeze(traced)
        ref = model(x)
        got = frozen(x)
    check_finite_logits(ref, got, out)
    metadata = _file_metadata(model, meta, "torchscript", input_size, False)
    bn = sum(1 for n in frozen.graph.nodes() if n.kind() == "aten::batch_norm")
    report = ExportReport.of(out, metadata, batchnorm_nodes=bn, parity=compare_logits(ref, got))
    if report.parity["argmax_agreement"] < min_agreement:
        raise ExportError(
            f"{out}: TorchScript argmax agreement {report.parity['argmax_agreement']:.4%} "
            f"< {min_agreement:.1%}"
        )
    # Serialised in memory, then written by Python: torch.jit.save's own C++ file writer aborts the
    # interpreter on a full disk (std::terminate), a Python write raises an OSError we can explain.
    buffer = io.BytesIO()
    torch.jit.save(frozen, buffer, _extra_files={"effseg.json": json.dumps(metadata)})
    atomic_write_bytes(out, buffer.getbuffer(), "the TorchScript export", fsync=True)
    return report


def check_onnx_finite(path: str | Path) -> None:
    """Raise a one-line :class:`ExportError` naming the first floating-point initializer (weight)
    of an ONNX file that holds a NaN or an infinity: such a file runs, and answers class 0."""
    onnx = require("onnx")
    from onnx import numpy_helper

    floats = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.BFLOAT16,
    }
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - the loader reports unreadable files itself, in its own words
        return
    bad = [
        init.name
        for init in proto.graph.initializer
        if init.data_type in floats
        and not init.external_data
        and not np.isfinite(numpy_helper.to_array(init)).all()
    ]
    if bad:
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise ExportError(
            f"{path}: weight {bad[0]} holds NaN or infinite values{more}; the file is damaged: "
            "export it again from a good checkpoint"
        )


def check_finite_logits(ref: torch.Tensor, got: torch.Tensor, out: str | Path) -> None:
    """Raise :class:`ExportError` when PyTorch's (``ref``) or the exported file's (``got``) logits on
    the parity input hold a NaN or an infinity: argmax agreement means nothing then (NaN compares
    unequal, and argmax of an all-NaN row is 0 on both sides)."""
    for who, t in (("PyTorch's", ref), ("the exported graph's", got)):
        bad = int((~torch.isfinite(t.float())).sum())
        if bad:
            raise ExportError(
                f"{out}: {who} logits hold {bad} NaN or infinite values of {t.numel()} on the parity "
                "input: the model's weights are broken (not finite?); nothing was written"
            )
