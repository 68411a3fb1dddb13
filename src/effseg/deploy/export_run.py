"""``effseg export``: a model artifact -> checked ONNX / TorchScript file, optionally int8.

The pipeline over :mod:`effseg.deploy`: load the source with the one artifact loader, export
and check it (:mod:`effseg.deploy.export`), and for ``--int8`` calibrate on real images
(:mod:`effseg.deploy.quantize`), then compare int8 with fp32 on held-out images of the model's
own dataset (argmax agreement, and mIoU with the evaluator).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effseg.config import IMAGENET_MEAN, IMAGENET_STD
from effseg.deploy.artifact import load_artifact
from effseg.deploy.export import check_finite_logits, export_onnx, export_torchscript
from effseg.deploy.onnx_io import DEFAULT_OPSET, compare_logits, read_onnx_metadata, write_onnx_metadata
from effseg.deploy.runtime import load_onnx_model
from effseg.errors import DataError, ExportError
from effseg.fileio import OutputError, atomic_path, writable_dir
from effseg.size import Size, parse_size

__all__ = [
    "calibration_arrays",
    "check_output_file",
    "load_source",
    "parse_input_size",
    "run_export",
    "with_data_overrides",
]


def parse_input_size(text: str | tuple[int, int] | list[int]) -> Size:
    """``"1024x512"`` (WIDTHxHEIGHT, like the CLI) -> ``Size(h=512, w=1024)``; a pair is ``(H, W)``."""
    return parse_size(text, "--input-size")


def load_source(source: str | Path, num_classes: int = 19) -> tuple[nn.Module, dict[str, Any], str]:
    """The model to export: anything :func:`effseg.deploy.artifact.load_artifact` takes, config
    YAMLs and model names (random weights) included, except ONNX files: ``(model, meta, name)``."""
    art = load_artifact(source, allow_untrained=True, num_classes=num_classes)
    if art.is_onnx:
        raise ExportError(f"{source}: already an ONNX file; export from a run folder, checkpoint or config")
    return art.model, art.meta, art.name


def _normalisation(meta: dict[str, Any]) -> tuple[list[float], list[float]]:
    mean, std = meta.get("mean"), meta.get("std")
    if mean is None or std is None:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return list(mean), list(std)


def calibration_arrays(
    calib: str, size: tuple[int, int], meta: dict[str, Any], limit: int = 32, what: str = "--calib"
) -> tuple[list[np.ndarray], str]:
    """Preprocessed calibration images for ``--calib``: a folder of images / a Cityscapes-layout root,
    or a split name (``train``, ``val``) of the dataset in the checkpoint's config; ``what`` names
    the option in errors.

    ``size`` is ``(H, W)``; each array is ``(1, 3, H, W)`` float32, normalised.
    """
    from effseg.deploy.quantize import find_calibration_images, load_calibration_batches, preprocess

    mean, std = _normalisation(meta)
    path = Path(calib)
    if path.is_dir():
        files = find_calibration_images(path)
        return load_calibration_batches(files, size, mean, std, limit), f"{len(files)} images under {path}"
    dataset = _config_dataset(meta, calib, what=what)
    idx = np.linspace(0, len(dataset) - 1, num=min(limit, len(dataset))).round().astype(int)
    arrays = [preprocess(dataset.load_raw(int(i))[0], size, mean, std) for i in sorted(set(idx.tolist()))]
    return arrays, f"{dataset.__class__.__name__} split {calib!r}"


def _config_dataset(
    meta: dict[str, Any], split: str, what: str, transform: Any = None, limit: int | None = None
) -> Any:
    """The ``split`` of the dataset the model was trained on (from its stored config), with the
    evaluation options; its first ``limit`` samples when given."""
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
    options = val_dataset_options(c)
    options.pop("cache", None)  # one pass over the images: a preloaded copy would only cost time
    try:
        ds = build_dataset(c.data.dataset, c.data.root, split, transform=transform, **options)
    except DataError as err:  # a shipped model carries no data path: say how to give one
        skip = " (or skip the mIoU with --no-eval)" if what == "--eval-split" else ""
        raise DataError(f"{what} {split!r}: {err}; give the dataset with --set data.root=DIR{skip}") from None
    if limit is not None and limit < len(ds):
        ds.samples = ds.samples[:limit]  # the dataset's own sample list: every attribute stays its own
    return ds


def _eval_miou(model: nn.Module, meta: dict[str, Any], split: str, limit: int | None) -> dict[str, Any]:
    from effseg.config import config_from_dict
    from effseg.data import build_eval_transform
    from effseg.engine.evaluate import evaluate

    c = config_from_dict(meta["config"])
    mean, std = _normalisation(meta)
    transform = build_eval_transform(mean=tuple(mean), std=tuple(std))
    ds = _config_dataset(meta, split, "--eval-split", transform, limit=limit)
    res = evaluate(model, ds, mode="whole", resize=c.eval.resize, device="cpu", progress=False)
    return {"miou": float(res["miou"]) * 100, "images": len(ds)}


def with_data_overrides(meta: dict[str, Any], overrides: Sequence[str], source: str | Path) -> dict[str, Any]:
    """``meta`` with ``KEY=VALUE`` overrides applied to (a copy of) its stored training config,
    checked like a config file's keys; only the images read for calibration and evaluation use
    it, the exported file's metadata keeps the stored config."""
    if not overrides:
        return meta
    from effseg.config import stored_config

    if not isinstance(meta.get("config"), dict):
        raise ExportError(f"--set: {source} carries no training config to override; pass a folder to --calib")
    return meta | {"config": stored_config(meta["config"], overrides, source).to_dict()}


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
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Export ``source`` to ``out`` (see ``effseg export --help``); returns a JSON-able report.

    ``overrides`` (``--set``, e.g. ``data.root=/data/CamVid``) edit the stored config that
    ``--calib SPLIT`` and the int8 evaluation read the dataset from (:func:`with_data_overrides`).

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
    if overrides and not int8:
        raise ExportError("--set: only --int8 reads a dataset (calibration split and mIoU); drop --set")
    check_output_file(out, "--out")
    model, meta, name = load_source(source, num_classes=num_classes)
    data_meta = with_data_overrides(meta, overrides, source)  # checked before the export's work
    if fmt == "torchscript":
        return export_torchscript(model, out, size, meta=meta).to_dict()
    has_config = isinstance(data_meta.get("config"), dict)
    if not (int8 and evaluate):
        eval_split = None
    elif eval_split is None and has_config:  # default: the config's val split
        eval_split = (data_meta["config"].get("data") or {}).get("val_split")
    if int8:  # the images must be there before the export's work, not after it
        if not Path(str(calib)).is_dir():
            _config_dataset(data_meta, str(calib), "--calib")
        if eval_split and has_config:
            _config_dataset(data_meta, eval_split, "--eval-split")
    fp32_path = out.with_name(out.stem + ".fp32.onnx") if int8 else out
    report = export_onnx(model, fp32_path, size, dynamic=dynamic, opset=opset, meta=meta)
    if not int8:
        return report.to_dict()
    # Every step on a temporary file beside --out, renamed onto it only once all passed: a kill, a
    # full disk or a failed check leaves an earlier file at --out as it was.
    with atomic_path(out, "the int8 ONNX export", fsync=True) as tmp:
        settings, int8_meta = _quantize_and_compare(
            fp32_path, tmp, out, data_meta, size, str(calib), calib_images, eval_split, eval_images
        )
    report.path, report.int8 = str(out), settings
    report.metadata = int8_meta
    return report.to_dict() | {"fp32_path": str(fp32_path), "model": name}


def check_output_file(out: Path, what: str) -> None:
    """Refuse, before any work, an output path that is a folder or whose folder cannot be written."""
    if out.is_dir():
        raise OutputError(f"{what} {out}: is a folder; give a file name such as {out / 'model.onnx'}")
    writable_dir(out.parent, f"the export {out.name} ({what})")


def _quantize_and_compare(
    fp32_path: Path,
    tmp: Path,
    out: Path,
    meta: dict[str, Any],
    size: Size,
    calib: str,
    calib_images: int,
    eval_split: str | None,
    eval_images: int | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Quantize ``fp32_path`` into ``tmp`` (the file that becomes ``out``; int8 QDQ calibrated on
    ``calib``), compare it with fp32 (argmax agreement on held-out images; mIoU on ``eval_split``
    when the config names a dataset) and store the settings in its metadata; returns
    ``(settings, int8 metadata)``."""
    from effseg.deploy.quantize import quantize_onnx

    arrays, source_desc = calibration_arrays(calib, size, meta, calib_images)
    settings = quantize_onnx(fp32_path, tmp, arrays, calibration_source=source_desc)
    fp32_model, _ = load_onnx_model(fp32_path)
    int8_model, _ = load_onnx_model(tmp)
    agree_arrays, agree_desc = arrays, f"{len(arrays)} calibration images"
    if eval_split and isinstance(meta.get("config"), dict):  # held-out images, not the calibration ones
        agree_arrays, agree_desc = calibration_arrays(
            eval_split, size, meta, eval_images or calib_images, what="--eval-split"
        )
    agree = []
    max_diff = 0.0
    for arr in agree_arrays:
        x = torch.from_numpy(arr)
        ref, got = fp32_model(x), int8_model(x)
        check_finite_logits(ref, got, out)
        cmp = compare_logits(ref, got)
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
    int8_meta = read_onnx_metadata(tmp)
    int8_meta["quantization"] = settings
    write_onnx_metadata(tmp, int8_meta)
    return settings, int8_meta
