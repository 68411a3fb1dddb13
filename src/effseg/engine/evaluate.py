"""Evaluation: whole-image or sliding-window inference, flip/multi-scale TTA, IoU table.

For every image the class scores are upsampled (bilinear) to the *label's* full
resolution before the argmax, so a model run at 1024x512 is scored against the
2048x1024 ground truth when the dataset provides it. Scores are accumulated in a
:class:`~effseg.engine.metrics.ConfusionMatrix` on the model's device and summed
over ranks under torchrun (each rank evaluates every N-th image).

``model`` may be an ``nn.Module`` (eval-mode output ``(B, C, H, W)`` logits) or any
callable with the same contract, e.g. an ONNX Runtime wrapper returning numpy.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from effseg.engine import distributed as du
from effseg.engine.metrics import MIOU_RULE, ConfusionMatrix
from effseg.engine.tta import ModelLike, describe_tta, parse_tta, predict_scores, slide_logits
from effseg.errors import ConfigError, DataError
from effseg.models.contract import class_ids

__all__ = [
    "evaluate",
    "parse_tta",
    "predict_scores",
    "slide_logits",
    "write_eval_outputs",
    "print_eval_table",
    "plot_confusion",
    "confusion_figure",
    "label_id_filename",
    "inference_cost",
    "eval_options",
    "cost_line",
]

_CITYSCAPES_NAME = re.compile(r"^([A-Za-z]+_\d+_\d+)")


def label_id_filename(image_path: str | Path) -> str:
    """``frankfurt_000000_000294_leftImg8bit.png`` -> ``frankfurt_000000_000294_pred_labelIds.png``."""
    stem = Path(image_path).stem
    m = _CITYSCAPES_NAME.match(stem)
    prefix = m.group(1) if m else stem.removesuffix("_leftImg8bit")
    return f"{prefix}_pred_labelIds.png"


class _Indexed(Dataset):
    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, Any, int]:
        index = self.indices[i]
        image, label = self.dataset[index]
        return image, label, index


def _model_device(model: ModelLike) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


@torch.no_grad()
def eval_options(eval_cfg: Any, tta: bool = True) -> dict[str, Any]:
    """A config's ``eval`` section (:class:`~effseg.config.EvalConfig`) as :func:`evaluate`'s
    keywords: ``mode``, ``resize``, ``crop_size``, ``stride``, ``num_workers`` and, with ``tta``,
    its ``scales`` and ``flip`` (the trainer's validation runs without TTA). The one mapping of
    the section, for the trainer, ``effseg eval`` and the cross-drive estimate; a caller
    overrides what its own flags set: ``{**eval_options(e), "mode": args.mode}``."""
    e = eval_cfg
    options = dict(
        mode=e.mode, resize=e.resize, crop_size=e.crop_size, stride=e.stride, num_workers=e.num_workers
    )
    return {**options, "scales": list(e.scales), "flip": e.flip} if tta else options


def evaluate(
    model: ModelLike,
    dataset: Dataset,
    mode: str = "whole",
    tta: str | Sequence[str | float] | None = None,
    *,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    resize: Sequence[int] | None = None,
    crop_size: Sequence[int] = (512, 1024),
    stride: Sequence[int] = (341, 683),
    device: torch.device | str | None = None,
    num_workers: int = 0,
    amp: str = "none",
    save_label_ids: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``model`` on ``dataset`` (items ``(image (3, H, W) normalised, label (H, W))``).

    ``tta`` is a spec like ``"flip,0.75,1.0,1.25"`` (or give ``scales``/``flip``).
    Returns the :func:`~effseg.engine.metrics.scores_from_matrix` dict plus
    ``confusion_matrix``, ``classes``, ``num_images``, ``mode``, ``scales``, ``flip``.
    With ``save_label_ids``, writes one Cityscapes label-id PNG per image there.
    """
    tta_scales, tta_flip = parse_tta(tta)
    scales = list(scales) if scales is not None else tta_scales
    flip = tta_flip if flip is None else flip
    classes = list(getattr(dataset, "classes", []))
    num_classes = int(getattr(dataset, "num_classes", len(classes)))
    ignore_index = int(getattr(dataset, "ignore_index", 255))
    model_classes = getattr(model, "num_classes", None)
    if model_classes is not None and int(model_classes) != num_classes:
        raise ConfigError(f"the model predicts {model_classes} classes but the dataset has {num_classes}")
    device = torch.device(device) if device is not None else _model_device(model)
    to_label_ids = None
    out_dir = None
    if save_label_ids is not None:
        from effseg.data.cityscapes import CITYSCAPES_CLASSES, train_ids_to_label_ids

        if classes != list(CITYSCAPES_CLASSES):
            raise DataError("--save-label-ids needs a dataset with the 19 Cityscapes classes")
        to_label_ids = train_ids_to_label_ids
        from effseg.fileio import check_writable_dir

        # checked before the evaluation runs; made with the first PNG (a failed run leaves no folder)
        out_dir = check_writable_dir(save_label_ids, "the label-id PNGs")
    samples = getattr(dataset, "samples", None)

    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    rank, world = du.get_rank(), du.get_world_size()
    loader = DataLoader(
        _Indexed(dataset, range(rank, len(dataset), world)),  # type: ignore[arg-type]
        batch_size=1,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),  # keeps the global RNG (training dropout) untouched
    )
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    autocast = (
        torch.autocast(device.type, dtype=amp_dtype)
        if amp_dtype is not None and isinstance(model, nn.Module)
        else nullcontext()
    )
    bar = None
    if progress and rank == 0:
        from effseg.progress import progress_bar

        bar = progress_bar(transient=True)
        bar.start()
        task = bar.add_task("eval", total=len(loader))
    times: list[list[tuple[float, bool, float]]] = []  # per image: (scale, flipped, seconds) per pass
    try:
        for image, label, index in loader:
            image = image.to(device, non_blocking=True)
            label = label.to(device, non_blocking=True)
            times.append([])
            with autocast:
                scores = predict_scores(
                    model,
                    image,
                    label.shape[-2:],
                    num_classes,
                    mode=mode,
                    scales=scales,
                    flip=flip,
                    resize=resize,
                    crop_size=crop_size,
                    stride=stride,
                    pass_times=times[-1],
                )
            pred = class_ids(scores)
            cm.update(pred, label)
            if to_label_ids is not None and out_dir is not None:
                from PIL import Image

                ids = to_label_ids(pred[0].to(torch.uint8).cpu().numpy()).astype(np.uint8)
                name = (
                    label_id_filename(samples[int(index)][0])
                    if samples
                    else f"{int(index):06d}_pred_labelIds.png"
                )
                from effseg.fileio import atomic_path

                with atomic_path(out_dir / name, "a label-id PNG") as tmp:
                    Image.fromarray(ids).save(tmp)  # uint8 (H, W) -> mode L
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
        if was_training:
            model.train()
    cm.all_reduce()
    result = cm.compute(classes or None)
    result.update(
        confusion_matrix=cm.mat.cpu().tolist(),
        classes=classes or [str(i) for i in range(num_classes)],
        num_images=len(dataset),  # type: ignore[arg-type]
        mode=mode,
        scales=scales,
        flip=flip,
        resize=list(resize) if resize is not None else None,
        **inference_cost(times, scales, flip),
    )
    return result


def inference_cost(
    times: Sequence[Sequence[tuple[float, bool, float]]], scales: Sequence[float], flip: bool
) -> dict[str, Any]:
    """The cost of the inference (and of its TTA) from per-image pass timings.

    ``times[i]`` holds ``(scale, flipped, seconds)`` per pass of image ``i`` (from
    :func:`~effseg.engine.tta.predict_scores`). Returns ``tta`` (the spec, ``"none"`` without),
    ``tta_passes``, ``ms_per_image`` (median over images of all passes: network, upsampling to
    the label size, merging) and ``ms_single_pass`` (median of the plain pass, scale 1 without
    flip, timed inside the same run; ``None`` when the TTA has no such pass). This process's
    images only (rank 0 under torchrun); data loading and the argmax are not included.
    """
    totals = [sum(t for _, _, t in image) for image in times if image]
    plain = [t for image in times for s, f, t in image if s == 1.0 and not f]
    return {
        "tta": describe_tta(scales, flip),
        "tta_passes": len(scales) * (2 if flip else 1),
        "ms_per_image": float(np.median(totals) * 1000.0) if totals else None,
        "ms_single_pass": float(np.median(plain) * 1000.0) if plain else None,
    }


def cost_line(result: dict[str, Any]) -> str:
    """``TTA flip (2 passes): 24.1 ms/image, the plain pass alone 12.0 ms (2.0x)``, or
    ``no TTA: 12.0 ms/image``; empty without timings."""
    ms = result.get("ms_per_image")
    if ms is None:
        return ""
    if result.get("tta", "none") == "none":
        return f"no TTA: {ms:.1f} ms/image"
    single = result.get("ms_single_pass")
    one = f", the plain pass alone {single:.1f} ms ({ms / single:.1f}x)" if single else ""
    return f"TTA {result['tta']} ({result['tta_passes']} passes): {ms:.1f} ms/image{one}"


# ----------------------------------------------------------------------------- reporting


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 100:.2f}"


def markdown_table(result: dict[str, Any]) -> str:
    lines = ["| class | IoU (%) | acc (%) | GT pixels |", "|---|---:|---:|---:|"]
    for name, s in result["per_class"].items():
        lines.append(f"| {name} | {_pct(s['iou'])} | {_pct(s['acc'])} | {s['gt_pixels']} |")
    lines += [
        "",
        f"**mIoU {_pct(result['miou'])}**, mean acc {_pct(result['mean_acc'])}, "
        f"pixel acc {_pct(result['pixel_acc'])} ({result['classes_averaged']} classes averaged, "
        f"{result['num_images']} images, mode {result['mode']}, scales {result['scales']}, "
        f"flip {result['flip']})",
        "",
        f"Rule: {MIOU_RULE}.",
    ]
    cost = cost_line(result)
    if cost:  # median over the images; network passes, upsampling and merging, not data loading
        lines[-1:-1] = [f"Inference cost: {cost} (median over the images, data loading excluded)", ""]
    for key in ("seen_in_training", "picked_on_val"):  # effseg eval's labels of the figure
        if result.get(key):
            lines += ["", f"Note: {result[key]}."]
    return "\n".join(lines) + "\n"


def print_eval_table(result: dict[str, Any], console: Any = None) -> None:
    """The per-class table and the summary, with the mIoU rule, on a rich console."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="evaluation", show_footer=False)
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    table.add_column("acc %", justify="right")
    table.add_column("GT pixels", justify="right")
    for name, s in result["per_class"].items():
        table.add_row(name, _pct(s["iou"]), _pct(s["acc"]), str(s["gt_pixels"]))
    table.add_section()
    table.add_row("[bold]mIoU[/]", f"[bold]{_pct(result['miou'])}[/]", _pct(result["mean_acc"]), "")
    table.add_row("pixel acc", _pct(result["pixel_acc"]), "", str(result["num_pixels"]))
    console.print(table)
    if cost_line(result):
        console.print(f"mIoU {_pct(result['miou'])}  {cost_line(result)}", highlight=False)
    console.print(f"[dim]{MIOU_RULE}[/]")


def plot_confusion(result: dict[str, Any], path: str | Path) -> None:
    """Row-normalised confusion matrix (rows = ground truth) as a PNG, written atomically."""
    from effseg.fileio import atomic_savefig

    atomic_savefig(confusion_figure(result), path, "the confusion matrix", dpi=100)


def confusion_figure(result: dict[str, Any]) -> Any:
    """The matplotlib figure of the row-normalised confusion matrix (rows = ground truth); the
    caller saves (at dpi 100) and closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mat = np.asarray(result["confusion_matrix"], dtype=np.float64)
    rows = mat.sum(1, keepdims=True)
    norm = np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0)
    names = result["classes"]
    n = len(names)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"confusion (row-normalised), mIoU {_pct(result['miou'])}")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def _jsonable(obj: Any) -> Any:
    """NaN/inf -> None (strict JSON), tuples -> lists, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_eval_outputs(result: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``eval.json``, ``eval.md`` and ``confusion_matrix.png`` into ``out_dir``, together
    (:func:`effseg.fileio.atomic_files`): either all three are replaced or none is. A full or
    read-only disk is one line naming the file, leaves the previous results intact and no empty
    folder, no 0-byte or half-written file."""
    from effseg.fileio import atomic_files

    out = Path(out_dir)
    paths = {
        "json": out / "eval.json",
        "markdown": out / "eval.md",
        "confusion": out / "confusion_matrix.png",
    }
    text = json.dumps(_jsonable(result), indent=2, allow_nan=False) + "\n"
    table = markdown_table(result)
    fig = confusion_figure(result)
    try:
        with atomic_files() as files:
            files.write_text(paths["json"], text, "the evaluation results")
            files.write_text(paths["markdown"], table, "the evaluation table")
            files.savefig(fig, paths["confusion"], "the confusion matrix", dpi=100)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)  # also when a write failed before the figure's
    return paths
