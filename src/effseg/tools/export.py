"""Export a segmentation model to ONNX or TorchScript, check it, and load it back.

ONNX export uses torch's ``torch.export``-based exporter (``dynamo=True``): the
legacy TorchScript-based exporter cannot export PPM's adaptive average pooling
when the bins do not divide the feature map (1024x512 at output stride 8 gives a
128x64 map, which bin 3 does not divide).  The exporter's ONNX optimiser folds
every eval-mode BatchNorm into the preceding convolution; :func:`export_onnx`
checks that no ``BatchNormalization`` node is left (and folds with onnxruntime's
basic graph optimiser if one is), runs ``onnx.checker`` and compares the file's
logits with PyTorch's on the same input.

Metadata (classes, palette, mean, std, input size, model config) is stored in the
ONNX ``metadata_props`` so that :func:`load_onnx_model` gives the evaluator and
``effseg predict`` everything a checkpoint would.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from effseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from effseg.errors import ExportError

DEFAULT_OPSET = 18
META_KEY = "effseg"  # metadata_props key holding the JSON metadata
# Used only when a model comes without checkpoint metadata (random weights, a bare build_model).
_IMAGENET_MEAN = IMAGENET_MEAN
_IMAGENET_STD = IMAGENET_STD



def parse_input_size(text: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``"1024x512"`` (width x height, like the CLI) -> ``(H, W) = (512, 1024)``.

    A tuple/list is taken as ``(H, W)`` already.
    """
    if isinstance(text, (tuple, list)):
        if len(text) != 2 or not all(isinstance(v, int) and v > 0 for v in text):
            raise ExportError(f"input size {text!r}: expected (H, W) with two positive integers")
        return int(text[0]), int(text[1])
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise ExportError(
            f"--input-size {text!r}: expected WIDTHxHEIGHT with positive integers, e.g. 1024x512"
        )
    return int(m.group(2)), int(m.group(1))


# ----------------------------------------------------------------------------- metadata


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
    out["mean"] = [float(v) for v in meta.get("mean", _IMAGENET_MEAN)]
    out["std"] = [float(v) for v in meta.get("std", _IMAGENET_STD)]
    config = getattr(model, "config", None) or meta.get("model_config")
    out["model_config"] = config if isinstance(config, dict) else None
    # The resolved training config (dataset, eval settings): lets `effseg eval model.onnx` find its data.
    out["config"] = meta.get("config") if isinstance(meta.get("config"), dict) else None
    return out


def write_onnx_metadata(path: str | Path, meta: dict[str, Any]) -> None:
    """Replace the metadata_props of an ONNX file with ``meta`` (JSON under the key ``effseg``)."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.save(proto, str(path))


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The effseg metadata dict stored in an ONNX file (empty dict when absent)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == META_KEY:
            return json.loads(entry.value)
    return {}


# ----------------------------------------------------------------------------- ONNX


def onnx_op_types(path: str | Path) -> dict[str, int]:
    """Count of each operator type in an ONNX graph (top level)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _fold_batchnorm_with_ort(path: Path) -> None:
    """Fold remaining BatchNormalization nodes into Conv with onnxruntime's basic optimiser.

    Basic level only does constant folding and Conv+BN / Conv+Add fusions, which
    keep the graph in the standard ONNX domain (the extended level would not).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "folded.onnx"
        opts.optimized_model_filepath = str(out)
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        path.write_bytes(out.read_bytes())


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress prints and torchvision-registration warnings."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


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
    import onnxruntime as ort

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
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def compare_logits(ref: torch.Tensor, out: torch.Tensor) -> dict[str, float]:
    """Max abs logit difference and argmax agreement (fraction of pixels) of two (B, C, H, W) tensors."""
    ref, out = ref.float(), out.float()
    return {
        "max_abs_diff": float((ref - out).abs().max()),
        "argmax_agreement": float((ref.argmax(1) == out.argmax(1)).float().mean()),
    }


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    import onnx

    if opset < 17:
        raise ExportError(f"opset {opset}: expected >= 17 (LayerNorm/Resize semantics effseg relies on)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
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
    program.save(str(out))
    bn = onnx_op_types(out).get("BatchNormalization", 0)
    if bn:
        _fold_batchnorm_with_ort(out)
        bn = onnx_op_types(out).get("BatchNormalization", 0)
    if bn:
        raise ExportError(f"{out}: {bn} BatchNormalization node(s) could not be folded into a convolution")
    metadata = model_metadata(model, meta)
    # input_size is (H, W); fixed_input_size is (W, H) as effseg.api's Predictor expects, None if dynamic.
    metadata.update(
        {
            "input_size": list(input_size),
            "dynamic": bool(dynamic),
            "opset": opset,
            "fixed_input_size": None if dynamic else [input_size[1], input_size[0]],
            "format": "onnx",
            "precision": "fp32",
        }
    )
    write_onnx_metadata(out, metadata)
    onnx.checker.check_model(str(out), full_check=True)
    report = ExportReport(
        path=str(out),
        format="onnx",
        input_size=tuple(input_size),
        dynamic=dynamic,
        opset=opset,
        batchnorm_nodes=bn,
        checker="passed",
        metadata=metadata,
    )
    if check_parity:
        session = ort_session(out)
        with torch.inference_mode():
            ref = model(x)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
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
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x = _example_input(input_size)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x,), check_trace=False, strict=False)
        frozen = torch.jit.freeze(traced)
        ref = model(x)
        got = frozen(x)
    metadata = model_metadata(model, meta)
    metadata.update(
        {"input_size": list(input_size), "dynamic": False, "format": "torchscript", "precision": "fp32"}
    )
    torch.jit.save(frozen, str(out), _extra_files={"effseg.json": json.dumps(metadata)})
    bn = sum(1 for n in frozen.graph.nodes() if n.kind() == "aten::batch_norm")
    report = ExportReport(
        path=str(out),
        format="torchscript",
        input_size=tuple(input_size),
        dynamic=False,
        batchnorm_nodes=bn,
        parity=compare_logits(ref, got),
        metadata=metadata,
    )
    if report.parity["argmax_agreement"] < min_agreement:
        raise ExportError(
            f"{out}: TorchScript argmax agreement {report.parity['argmax_agreement']:.4%} "
            f"< {min_agreement:.1%}"
        )
    return report


# ----------------------------------------------------------------------------- loading


class OnnxSegmentor(nn.Module):
    """An exported ONNX model that behaves like an eval-mode Segmentor.

    ``forward(x)``: (B, 3, H, W) float tensor (normalised like training) -> logits
    (B, C, H, W) float tensor on ``x``'s device.  A static-size export is fed
    inputs bilinearly resized to its size, and the logits are resized back; a
    batch larger than the exported one is run one image at a time.
    """

    def __init__(
        self, path: str | Path, meta: dict[str, Any], threads: int | None = None, opt_level: str = "all"
    ) -> None:
        super().__init__()
        self.path = str(path)
        self.meta = meta
        self.session = ort_session(path, threads=threads, opt_level=opt_level)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        self.static_batch = shape[0] if isinstance(shape[0], int) else None
        self.static_size = (shape[2], shape[3]) if all(isinstance(s, int) for s in shape[2:]) else None
        self.num_classes = meta.get("num_classes")
        self.classes = meta.get("classes")
        self.palette = np.asarray(meta["palette"], dtype=np.uint8) if meta.get("palette") else None
        self.config = meta.get("model_config")

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ExportError(f"{self.path}: expected input (B, 3, H, W), got {tuple(x.shape)}")
        size = tuple(x.shape[-2:])
        inp = x.float()
        if self.static_size is not None and size != tuple(self.static_size):
            inp = F.interpolate(inp, size=self.static_size, mode="bilinear", align_corners=False)
        if self.static_batch is not None and inp.shape[0] != self.static_batch:
            logits = torch.cat([self._run(inp[i : i + 1]) for i in range(inp.shape[0])])
        else:
            logits = self._run(inp)
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.to(x.device)


def load_onnx_model(path: str | Path, threads: int | None = None) -> tuple[OnnxSegmentor, dict[str, Any]]:
    """Load an effseg ONNX file: ``(model_like, meta)``.

    ``model_like(x)`` maps a (B, 3, H, W) float tensor to (B, C, H, W) logits via
    onnxruntime; ``meta`` holds ``classes``, ``palette``, ``mean``, ``std``,
    ``input_size`` (H, W), ``num_classes``, ``model_config`` and ``precision``.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file {path} does not exist")
    try:
        meta = read_onnx_metadata(path)
    except Exception as err:  # onnx raises DecodeError and friends
        raise ExportError(f"{path}: not a readable ONNX file ({type(err).__name__})") from err
    model = OnnxSegmentor(path, meta, threads=threads)
    return model.eval(), meta


# ----------------------------------------------------------------------------- end to end (CLI)


def load_source(source: str | Path, num_classes: int = 19) -> tuple[nn.Module, dict[str, Any], str]:
    """A run folder / checkpoint (``effseg.engine.checkpoint.load_model``), a config YAML or a
    model name such as ``pspnet_resnet18`` (random weights): ``(model, meta, name)``."""
    from effseg.tools.bench import resolve_model

    bm = resolve_model(str(source), num_classes=num_classes)
    if bm.model is None:
        raise ExportError(f"{source}: already an ONNX file; export from a run folder, checkpoint or config")
    return bm.model, bm.meta, bm.name


def calibration_arrays(
    calib: str, size: tuple[int, int], meta: dict[str, Any], limit: int = 32
) -> tuple[list[np.ndarray], str]:
    """Preprocessed calibration images for ``--calib``: a folder of images / a Cityscapes-layout root,
    or a split name (``train``, ``val``) of the dataset in the checkpoint's config."""
    from effseg.tools.quantize import find_calibration_images, load_calibration_batches, preprocess

    mean, std = meta.get("mean") or _IMAGENET_MEAN, meta.get("std") or _IMAGENET_STD
    path = Path(calib)
    if path.is_dir():
        files = find_calibration_images(path)
        return load_calibration_batches(files, size, mean, std, limit), f"{len(files)} images under {path}"
    dataset = _config_dataset(meta, calib, what="--calib")
    idx = np.linspace(0, len(dataset) - 1, num=min(limit, len(dataset))).round().astype(int)
    arrays = [preprocess(dataset.load_raw(int(i))[0], size, mean, std) for i in sorted(set(idx.tolist()))]
    return arrays, f"{dataset.__class__.__name__} split {calib!r}"


def _config_dataset(meta: dict[str, Any], split: str, what: str, transform: Any = None) -> Any:
    cfg = meta.get("config")
    if not isinstance(cfg, dict) or "data" not in cfg:
        raise ExportError(
            f"{what} {split!r}: not a folder, and the model carries no training config naming a dataset; "
            f"pass a folder of images"
        )
    from effseg.config import config_from_dict
    from effseg.data import build_dataset
    from effseg.data.from_config import val_dataset_options

    c = config_from_dict(cfg)
    return build_dataset(c.data.dataset, c.data.root, split, transform=transform, **val_dataset_options(c))


def _eval_miou(model: nn.Module, meta: dict[str, Any], split: str, limit: int | None) -> dict[str, Any]:
    from torch.utils.data import Subset

    from effseg.config import config_from_dict
    from effseg.data import build_eval_transform
    from effseg.engine.evaluate import evaluate

    c = config_from_dict(meta["config"])
    mean, std = meta.get("mean") or c.data.mean, meta.get("std") or c.data.std
    ds = _config_dataset(meta, split, "--eval-split", build_eval_transform(mean=tuple(mean), std=tuple(std)))
    if limit is not None and limit < len(ds):
        sub = Subset(ds, list(range(limit)))
        for attr in ("classes", "num_classes", "ignore_index"):
            setattr(sub, attr, getattr(ds, attr))
        ds = sub
    e = c.eval
    res = evaluate(model, ds, mode="whole", resize=e.resize, device="cpu", progress=False)
    return {"miou": float(res["miou"]) * 100, "images": len(ds)}


def run_export(
    source: str | Path,
    out: str | Path,
    fmt: str = "onnx",
    input_size: str | tuple[int, int] = "1024x512",
    dynamic: bool = False,
    int8: bool = False,
    calib: str | None = None,
    calib_images: int = 32,
    eval_split: str | None = None,
    eval_images: int | None = None,
    evaluate: bool = True,
    opset: int = DEFAULT_OPSET,
    num_classes: int = 19,
) -> dict[str, Any]:
    """Export ``source`` to ``out`` (see ``effseg export --help``); returns a JSON-able report.

    With ``int8``, the fp32 ONNX file is written next to ``out`` as ``<stem>.fp32.onnx`` and ``out``
    is the int8 QDQ model calibrated on ``calib``; the report holds the int8-vs-fp32 argmax agreement
    and, when the model's config names a dataset, the mIoU (%) of both on ``eval_split`` (default: the
    config's validation split; ``evaluate=False`` skips it).
    """
    if fmt not in ("onnx", "torchscript"):
        raise ExportError(f"--format {fmt!r}: expected onnx or torchscript")
    size = parse_input_size(input_size)
    out = Path(out)
    if int8 and (fmt != "onnx" or dynamic):
        raise ExportError("--int8 needs --format onnx without --dynamic (static QDQ calibration at one size)")
    if int8 and not calib:
        raise ExportError("--int8 needs --calib DIR_OR_SPLIT: real images to calibrate activation ranges")
    model, meta, name = load_source(source, num_classes=num_classes)
    if fmt == "torchscript":
        return export_torchscript(model, out, size, meta=meta).to_dict()
    fp32_path = out.with_name(out.stem + ".fp32.onnx") if int8 else out
    report = export_onnx(model, fp32_path, size, dynamic=dynamic, opset=opset, meta=meta)
    if not int8:
        return report.to_dict()
    from effseg.tools.quantize import quantize_onnx

    if not evaluate:
        eval_split = None
    elif eval_split is None and isinstance(meta.get("config"), dict):  # default: the config's val split
        eval_split = (meta["config"].get("data") or {}).get("val_split")
    arrays, source_desc = calibration_arrays(str(calib), size, meta, calib_images)
    settings = quantize_onnx(fp32_path, out, arrays, calibration_source=source_desc)
    fp32_model, _ = load_onnx_model(fp32_path)
    int8_model, _ = load_onnx_model(out)
    agree_arrays, agree_desc = arrays, f"{len(arrays)} calibration images"
    if eval_split and isinstance(meta.get("config"), dict):  # held-out images, not the calibration ones
        agree_arrays, agree_desc = calibration_arrays(eval_split, size, meta, eval_images or calib_images)
    agree = []
    max_diff = 0.0
    for arr in agree_arrays:
        x = torch.from_numpy(arr)
        cmp = compare_logits(fp32_model(x), int8_model(x))
        agree.append(cmp["argmax_agreement"])
        max_diff = max(max_diff, cmp["max_abs_diff"])
    settings["argmax_agreement_vs_fp32"] = float(np.mean(agree))
    settings["agreement_images"] = f"{len(agree_arrays)} images: {agree_desc}"
    settings["max_abs_logit_diff_vs_fp32"] = max_diff
    if eval_split and isinstance(meta.get("config"), dict):
        fp = _eval_miou(fp32_model, meta, eval_split, eval_images)
        q = _eval_miou(int8_model, meta, eval_split, eval_images)
        settings.update(
            miou_fp32=fp["miou"],
            miou_int8=q["miou"],
            miou_change=q["miou"] - fp["miou"],
            eval_split=eval_split,
            eval_images=fp["images"],
        )
    int8_meta = read_onnx_metadata(out)
    int8_meta["quantization"] = settings
    write_onnx_metadata(out, int8_meta)
    report.path, report.int8 = str(out), settings
    report.metadata = int8_meta
    return report.to_dict() | {"fp32_path": str(fp32_path), "model": name}
