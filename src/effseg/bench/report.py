"""``effseg bench`` outputs: the terminal table, ``bench.md``, ``bench.json`` and ``pareto.png``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from effseg.bench.pareto import pareto_figure as _figure
from effseg.fileio import atomic_files, atomic_savefig

RUNTIME_MARKERS = {
    "eager": "o",
    "channels_last": "s",
    "compile": "D",
    "compile-int8": "P",
    "onnxruntime": "^",
    "onnxruntime-int8": "v",
    "openvino": "X",
    "openvino-int8": "d",
}


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


TABLE_COLUMNS = [
    ("model", "model", None),
    ("runtime", "runtime", None),
    ("params_m", "params (M)", 2),
    ("gflops", "GFLOPs", 1),
    ("latency_ms_median", "median (ms)", 1),
    ("latency_ms_p90", "p90 (ms)", 1),
    ("fps", "FPS", 2),
    ("vs_eager", "x eager", 2),
    ("achieved_gflops_per_s", "GFLOP/s", 1),
    ("peak_mem_mb", "peak mem (MB)", 0),
    ("miou", "mIoU", 2),
    ("miou_per_10ms", "mIoU/10ms", 3),
]


def markdown_table(report: dict[str, Any]) -> str:
    """The result rows as a markdown table, with the machine and settings above it."""
    from effseg.bench.sysinfo import describe

    s = report["settings"]
    lines = [
        f"Machine: {describe(report['machine'])}.",
        f"Input {s['input_size'][1]}x{s['input_size'][0]} (WxH), batch {s['batch']}, {s['device']}, "
        f"{s['dtype']}, {s['threads']} threads, {s['warmup']} warm-up + {s['runs']} timed runs "
        f"({s['timing']}). FLOPs: {report['flops_convention']}.",
        "",
        "| " + " | ".join(h for _, h, _ in TABLE_COLUMNS) + " |",
        "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|",
    ]
    for row in report["results"]:
        if "error" in row:
            cells = [row["model"], row["runtime"], f"failed: {row['error']}"] + [""] * (
                len(TABLE_COLUMNS) - 3
            )
        else:
            cells = [
                _fmt(row.get(k), nd) if nd is not None else str(row.get(k, "-")) for k, _, nd in TABLE_COLUMNS
            ]
        lines.append("| " + " | ".join(cells) + " |")
    stage_rows = [r for r in report["results"] if r.get("stages")]
    if stage_rows:
        lines += [
            "",
            "Where eager time goes (median ms per stage, measured separately):",
            "",
            "| model | backbone | head | final upsample |",
            "|---|---|---|---|",
        ]
        for r in stage_rows:
            st = r["stages"]
            lines.append(
                f"| {r['model']} | {_fmt(st.get('backbone_ms'))} | {_fmt(st.get('head_ms'))} | "
                f"{_fmt(st.get('upsample_ms'))} |"
            )
    return "\n".join(lines) + "\n"


def pareto_figure(report: dict[str, Any]) -> tuple[Any, str]:
    """``(figure or None, y metric)``: mIoU vs latency with the Pareto front (GFLOPs vs latency, no
    front, when no mIoU is known); ``None`` when no row has a latency. The y metric is ``miou`` or
    ``gflops``."""
    rows = [r for r in report["results"] if r.get("latency_ms_median") is not None]
    use_miou = bool(rows) and all(r.get("miou") is not None for r in rows)
    ykey, ylabel = ("miou", "mIoU (%)") if use_miou else ("gflops", "GFLOPs")
    rows = [r for r in rows if r.get(ykey) is not None]
    s = report["settings"]
    h, w = s["input_size"]
    fig = _figure(
        [(r["latency_ms_median"], r[ykey], f"{r['model']} ({r['runtime']})") for r in rows],
        xlabel=f"latency median (ms), batch {s['batch']}, {w}x{h}, {s['device']}, {s['threads']} threads",
        ylabel=ylabel,
        title=("mIoU" if use_miou else "GFLOPs") + " vs latency",
        front=use_miou,
        markers=[RUNTIME_MARKERS.get(r["runtime"], "o") for r in rows],
    )
    return fig, ykey


def plot_pareto(report: dict[str, Any], path: str | Path) -> str:
    """Write :func:`pareto_figure` to ``path`` (atomically; nothing when no row has a latency).
    Returns the y metric used (``miou`` or ``gflops``)."""
    fig, ykey = pareto_figure(report)
    if fig is not None:
        atomic_savefig(fig, path, "the Pareto plot")
    return ykey


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and ``pareto.png`` (when a row has a latency) into
    ``out_dir``, together (:func:`effseg.fileio.atomic_files`): a full or read-only disk is one
    line naming the file, and leaves the files of an earlier report as they were and no new folder.
    Returns the paths written: ``json``, ``markdown`` and, when a row has a latency, ``plot``
    (when every run failed there is nothing to plot, and no ``plot`` key).
    """
    out = Path(out_dir)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "plot": out / "pareto.png"}
    fig, _ = pareto_figure(report)
    try:
        with atomic_files() as files:
            text = json.dumps(report, indent=2, default=_json_default) + "\n"
            files.write_text(paths["json"], text, "the benchmark results")
            files.write_text(paths["markdown"], markdown_table(report), "the benchmark table")
            if fig is not None:
                files.savefig(fig, paths["plot"], "the Pareto plot")
    finally:
        if fig is not None:
            import matplotlib.pyplot as plt

            plt.close(fig)
    if fig is None:
        del paths["plot"]
    return paths


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def print_table(report: dict[str, Any], console: Any = None) -> None:
    """The result rows as a rich table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    from effseg.bench.sysinfo import describe

    console = console or Console()
    table = Table(title="effseg bench", caption=describe(report["machine"]))
    for _, header, _ in TABLE_COLUMNS:
        if header in ("model", "runtime"):
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, justify="right")
    for row in report["results"]:
        if "error" in row:
            table.add_row(row["model"], row["runtime"], f"[red]{row['error'][:80]}")
        else:
            table.add_row(
                *[
                    _fmt(row.get(k), nd) if nd is not None else str(row.get(k, "-"))
                    for k, _, nd in TABLE_COLUMNS
                ]
            )
    console.print(table)


__all__ = ["TABLE_COLUMNS", "markdown_table", "pareto_figure", "plot_pareto", "print_table", "write_report"]
