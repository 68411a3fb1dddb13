"""Parameters and GFLOPs of every backbone x head (``effseg models``).

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``, which
counts one multiply-add as 2 FLOPs (convolutions, matmuls; not activations,
normalisation, pooling or interpolation).  GFLOPs = FLOPs / 1e9.  Models and
inputs are built on the ``meta`` device, so counting ResNet-101 at 512x1024
costs no compute and no memory (CPU fallback if an op has no meta kernel).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from effseg.models import build_model, list_backbones, list_heads
from effseg.size import Size
from effseg.size import parse_size as _parse_size

TABLE_START = "<!-- models-table:start -->"
TABLE_END = "<!-- models-table:end -->"


def parse_size(text: str) -> Size:
    """``"1024x512"`` (WIDTHxHEIGHT) -> ``Size(h=512, w=1024)``."""
    return _parse_size(text, "--input-size")


def count_params(model: nn.Module) -> dict[str, float]:
    """Parameters in millions: ``params_m`` of the inference path, ``params_total_m`` of everything.

    One rule: ``params_m`` is what the model declares as the parameters an eval-mode forward uses,
    ``model.inference_parameters()`` (the model contract: every effseg model excludes its
    training-only auxiliary heads); a module that declares nothing counts all its parameters.
    """
    total = sum(p.numel() for p in model.parameters())
    declared = getattr(model, "inference_parameters", None)
    inference = declared() if callable(declared) else total
    return {"params_m": inference / 1e6, "params_total_m": total / 1e6}


def count_flops(model: nn.Module, x: torch.Tensor | Sequence[int], batch: int = 1) -> dict[str, Any]:
    """FLOPs of one eval-mode forward (1 multiply-add = 2 FLOPs): ``flops`` (int), ``gflops`` and
    ``gflops_stages`` (GFLOPs per top-level child: backbone, head, ...).

    ``x``: an input tensor ``(B, 3, H, W)``, or a size ``(H, W)`` for an empty ``(batch, 3, H, W)``
    input on the model's device (use a ``meta`` model for free counting).
    """
    if not isinstance(x, torch.Tensor):
        device = next(model.parameters()).device
        x = torch.empty(batch, 3, *x, device=device)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, depth=2) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    stages = {}
    for name, ops in counter.get_flop_counts().items():
        parts = name.split(".")
        if len(parts) == 2:
            stages[parts[1]] = sum(ops.values()) / 1e9
    total = int(counter.get_total_flops())
    return {"flops": total, "gflops": total / 1e9, "gflops_stages": stages}


def model_stats(
    head: str, backbone: str, input_size: tuple[int, int] = (512, 1024), num_classes: int = 19, **kwargs: Any
) -> dict[str, Any]:
    """``{"head", "backbone", "params", "gflops"}`` of the inference model (no aux head).

    ``input_size`` is ``(H, W)``; ``kwargs`` go to :func:`build_model`.
    """
    kwargs = {"aux": False, **kwargs}
    try:
        with torch.device("meta"):
            model = build_model(head, backbone=backbone, num_classes=num_classes, **kwargs)
        flops = count_flops(model, input_size)["flops"]
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count on the CPU
        model = build_model(head, backbone=backbone, num_classes=num_classes, **kwargs)
        flops = count_flops(model, input_size)["flops"]
    params = int(round(count_params(model)["params_m"] * 1e6))
    return {"head": head, "backbone": backbone, "params": params, "gflops": flops / 1e9}


def models_table(
    heads: Iterable[str] | None = None,
    backbones: Iterable[str] | None = None,
    input_size: tuple[int, int] = (512, 1024),
    num_classes: int = 19,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Stats (see :func:`model_stats`) for every head x backbone, heads outermost."""
    return [
        model_stats(h, b, input_size, num_classes, **kwargs)
        for h in (heads or list_heads())
        for b in (backbones or list_backbones())
    ]


def caption(input_size: tuple[int, int], num_classes: int = 19, output_stride: int = 8) -> str:
    h, w = input_size
    return (
        f"Inference models (no auxiliary head), {num_classes} classes, output stride {output_stride}, "
        f"input 1x3x{h}x{w}. Parameters in millions; GFLOPs counted with "
        "torch.utils.flop_counter (one multiply-add = 2 FLOPs)."
    )


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table: head | backbone | params (M) | GFLOPs."""
    lines = ["| head | backbone | params (M) | GFLOPs |", "|---|---|---:|---:|"]
    lines += [
        f"| {r['head']} | {r['backbone']} | {r['params'] / 1e6:.2f} | {r['gflops']:.1f} |" for r in rows
    ]
    return "\n".join(lines) + "\n"


def write_markdown(path: str | Path, rows: list[dict[str, Any]], text_caption: str) -> Path:
    """Write the table to ``path``; if the file has the models-table markers, replace only between them.

    The file is replaced atomically (:func:`effseg.fileio.atomic_write_text`): a full or read-only
    disk is one line and leaves the document (e.g. a README with the markers) as it was.
    """
    from effseg.fileio import atomic_write_text

    path = Path(path)
    block = f"{TABLE_START}\n{text_caption}\n\n{to_markdown(rows)}{TABLE_END}"
    text = block + "\n"
    if path.is_file():
        old = path.read_text(encoding="utf-8")
        if TABLE_START in old and TABLE_END in old:
            start, end = old.index(TABLE_START), old.index(TABLE_END) + len(TABLE_END)
            text = old[:start] + block + old[end:]
    return atomic_write_text(path, text, "the models table")


def print_table(rows: list[dict[str, Any]], text_caption: str) -> None:
    """Print the table with rich."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="effseg models", caption=text_caption)
    for name, justify in (
        ("head", "left"),
        ("backbone", "left"),
        ("params (M)", "right"),
        ("GFLOPs", "right"),
    ):
        table.add_column(name, justify=justify)
    for r in rows:
        table.add_row(r["head"], r["backbone"], f"{r['params'] / 1e6:.2f}", f"{r['gflops']:.1f}")
    Console().print(table)
