"""Write a comparison report: ``report.md`` (+ PNG files) and a self-contained ``report.html``.

The report holds a model table (params, GFLOPs, latency, mIoU, mIoU per 10 ms), a Pareto
plot (latency vs mIoU), per-class IoU, row-normalised confusion matrices, and a grid of
input | prediction per model | ground truth. ``report.md`` references the PNGs next to it;
``report.html`` embeds the same PNGs as base64, so it can be mailed or opened anywhere.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effseg.bench.pareto import pareto_figure
from effseg.bench.pareto import pareto_front as pareto_front  # re-exported for the demo
from effseg.data.visualize import colorize
from effseg.fileio import AtomicFiles, atomic_files


@dataclass
class ModelResult:
    """One model's numbers. ``miou``/``pixel_acc``/IoUs in percent, latency in ms (median, batch 1)."""

    name: str
    params_m: float | None = None
    gflops: float | None = None
    latency_ms: float | None = None
    latency_p90_ms: float | None = None
    miou: float | None = None
    pixel_acc: float | None = None
    iou_per_class: Sequence[float | None] | None = None
    confusion: np.ndarray | None = None  # (C, C): rows ground truth, columns prediction
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def miou_per_10ms(self) -> float | None:
        """mIoU points per 10 ms of latency: a crude efficiency score (higher is better)."""
        if self.miou is None or not self.latency_ms:
            return None
        return self.miou / (self.latency_ms / 10.0)


@dataclass
class Sample:
    """One image for the grid: ``image`` (H, W, 3) uint8, ``label`` (H, W) ids (255 ignore),
    ``predictions`` model name -> (H, W) ids."""

    name: str
    image: np.ndarray
    label: np.ndarray | None
    predictions: dict[str, np.ndarray]


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "model"


# --------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(results: Sequence[ModelResult], path: Path, files: AtomicFiles) -> Path | None:
    """Latency (ms) vs mIoU (%) scatter with the Pareto front, written to ``path`` with ``files``;
    ``None`` if nothing to plot."""
    pts = [(r.latency_ms, r.miou, r.name) for r in results if r.latency_ms and r.miou is not None]
    fig = pareto_figure(pts)
    return None if fig is None else files.savefig(fig, path, "the Pareto plot")


def plot_confusion(
    result: ModelResult, classes: Sequence[str], path: Path, files: AtomicFiles
) -> Path | None:
    """Row-normalised confusion matrix (each ground-truth row sums to 1), written to ``path`` with
    ``files``; ``None`` without a confusion matrix."""
    if result.confusion is None:
        return None
    cm = np.asarray(result.confusion, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    plt = _plt()
    n = len(classes)
    size = max(4.0, 0.32 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels=classes, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels=classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"{result.name}: confusion (row-normalised)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return files.savefig(fig, path, "a confusion matrix")


def plot_samples(
    samples: Sequence[Sample],
    palette: np.ndarray,
    model_names: Sequence[str],
    path: Path,
    files: AtomicFiles,
    classes: Sequence[str] | None = None,
) -> Path | None:
    """Grid: one row per sample, columns input | each model's prediction | ground truth; with
    ``classes``, a colour legend of the classes that occur is stacked below the grid. Written to
    ``path`` with ``files``; ``None`` without samples."""
    if not samples:
        return None
    plt = _plt()
    cols = 1 + len(model_names) + 1
    h, w = samples[0].image.shape[:2]
    cell = 2.6
    fig, axes = plt.subplots(
        len(samples), cols, figsize=(cell * cols, cell * h / w * len(samples) + 0.4), dpi=110, squeeze=False
    )
    titles = ["input", *model_names, "ground truth"]
    for r, s in enumerate(samples):
        panels = [
            s.image,
            *[colorize(s.predictions[m], palette) if m in s.predictions else None for m in model_names],
        ]
        panels.append(colorize(s.label, palette) if s.label is not None else None)
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.axis("off")
            if panel is not None:
                ax.imshow(panel, interpolation="nearest")
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
    fig.tight_layout(pad=0.3)
    files.savefig(fig, path, "the prediction grid")
    if classes is not None:
        from PIL import Image

        from effseg.data.visualize import add_legend

        shown = [s.label for s in samples if s.label is not None]
        shown += [p for s in samples for p in s.predictions.values()]
        present = np.concatenate([a.ravel() for a in shown]) if shown else None
        with files.writing(path, "the prediction grid") as tmp:
            grid = np.asarray(Image.open(tmp).convert("RGB"))
            Image.fromarray(add_legend(grid, classes, palette, present, font_size=14)).save(tmp)
    return path


# --------------------------------------------------------------------------- writers


def _model_table(results: Sequence[ModelResult]) -> tuple[list[str], list[list[str]]]:
    header = [
        "model",
        "params (M)",
        "GFLOPs",
        "latency median (ms)",
        "latency p90 (ms)",
        "mIoU (%)",
        "pixel acc (%)",
        "mIoU / 10 ms",
    ]
    rows = [
        [
            r.name,
            _fmt(r.params_m),
            _fmt(r.gflops),
            _fmt(r.latency_ms, ".1f"),
            _fmt(r.latency_p90_ms, ".1f"),
            _fmt(r.miou),
            _fmt(r.pixel_acc),
            _fmt(r.miou_per_10ms),
        ]
        for r in results
    ]
    return header, rows


def _class_table(results: Sequence[ModelResult], classes: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    with_iou = [r for r in results if r.iou_per_class is not None]
    header = ["class", *[r.name for r in with_iou]]
    rows = []
    for i, cls in enumerate(classes):
        vals = [r.iou_per_class[i] if i < len(r.iou_per_class) else None for r in with_iou]  # type: ignore[index]
        rows.append([cls, *[_fmt(v) for v in vals]])
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}
img{max-width:100%;height:auto;margin:.5em 0}
.note{color:#555;font-size:13px}
"""


def write_report(
    out_dir: str | Path,
    results: Sequence[ModelResult],
    *,
    classes: Sequence[str],
    palette: np.ndarray | Sequence[Sequence[int]],
    samples: Sequence[Sample] = (),
    title: str = "effseg report",
    notes: Sequence[str] = (),
    settings: dict[str, Any] | None = None,
    street: Any | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNG figures into ``out_dir``.

    Returns ``{"md": ..., "html": ..., <figure name>: ...}``. ``notes`` are free-text lines
    (e.g. how mIoU is computed); ``settings`` a key -> value table (machine, input size, ...);
    ``street`` a :class:`effseg.app.street_demo.StreetResult`, shown first.

    The files are written together (:func:`effseg.fileio.atomic_files`): a full or read-only disk
    is one line naming the file, and leaves an earlier report in ``out_dir`` as it was.
    """
    with atomic_files() as files:
        return _write_report(
            files, Path(out_dir), results, classes, np.asarray(palette, dtype=np.uint8), samples,
            title, notes, settings, street,
        )  # fmt: skip


def _write_report(
    files: AtomicFiles,
    out: Path,
    results: Sequence[ModelResult],
    classes: Sequence[str],
    palette: np.ndarray,
    samples: Sequence[Sample],
    title: str,
    notes: Sequence[str],
    settings: dict[str, Any] | None,
    street: Any | None,
) -> dict[str, Path]:
    """:func:`write_report`'s work, every file written with ``files``."""
    figures: dict[str, Path] = {}
    if (p := plot_pareto(results, out / "pareto.png", files)) is not None:
        figures["pareto"] = p
    model_names = [r.name for r in results]
    if (p := plot_samples(samples, palette, model_names, out / "samples.png", files, classes)) is not None:
        figures["samples"] = p
    for r in results:
        if (p := plot_confusion(r, classes, out / f"confusion_{_slug(r.name)}.png", files)) is not None:
            figures[f"confusion_{_slug(r.name)}"] = p

    def uri(key: str) -> str:  # the figure as written so far: its temporary file
        return _img_data_uri(files.path(figures[key]))

    model_header, model_rows = _model_table(results)
    class_header, class_rows = _class_table(results, classes)
    confusion_keys = [k for k in figures if k.startswith("confusion_")]

    # ---- markdown
    md = [f"# {title}", ""]
    md += [f"- {n}" for n in notes] + ([""] if notes else [])
    street_md, street_html = _street_section(street, out)
    md += street_md
    md += ["## Models", "", _md_table(model_header, model_rows), ""]
    if "pareto" in figures:
        md += ["## Accuracy vs latency", "", "![Pareto plot](pareto.png)", ""]
    if "samples" in figures:
        md += [
            "## Predictions",
            "",
            "input | " + " | ".join(model_names) + " | ground truth",
            "",
            "![input, predictions, ground truth](samples.png)",
            "",
        ]
    if class_rows and len(class_header) > 1:
        md += ["## IoU per class (%)", "", _md_table(class_header, class_rows), ""]
    if confusion_keys:
        md += ["## Confusion matrices", ""]
        md += [f"![{k}]({figures[k].name})" for k in confusion_keys] + [""]
    if settings:
        md += [
            "## Settings",
            "",
            _md_table(["setting", "value"], [[k, str(v)] for k, v in settings.items()]),
            "",
        ]
    md_path = files.write_text(out / "report.md", "\n".join(md), "the report")

    # ---- html (self-contained: every image is a data: URI)
    esc = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if notes:
        parts.append("<ul class='note'>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    parts += street_html
    parts += ["<h2>Models</h2>", _html_table(model_header, model_rows)]
    if "pareto" in figures:
        parts += [
            "<h2>Accuracy vs latency</h2>",
            f"<img alt='Pareto plot' src='{uri('pareto')}'>",
        ]
    if "samples" in figures:
        cols = " | ".join(["input", *model_names, "ground truth"])
        parts += [
            "<h2>Predictions</h2>",
            f"<p class='note'>{esc(cols)}</p>",
            f"<img alt='predictions' src='{uri('samples')}'>",
        ]
    if class_rows and len(class_header) > 1:
        parts += ["<h2>IoU per class (%)</h2>", _html_table(class_header, class_rows)]
    if confusion_keys:
        parts.append("<h2>Confusion matrices</h2>")
        parts += [f"<img alt='{esc(k)}' src='{uri(k)}'>" for k in confusion_keys]
    if settings:
        parts += [
            "<h2>Settings</h2>",
            _html_table(["setting", "value"], [[k, str(v)] for k, v in settings.items()]),
        ]
    parts.append("</body></html>")
    html_path = files.write_text(out / "report.html", "\n".join(parts), "the report")
    return {"md": md_path, "html": html_path, **figures}


def _street_section(street: Any | None, out: Path) -> tuple[list[str], list[str]]:
    """Markdown and HTML of the shipped model on real street photos (empty without ``street``)."""
    if street is None:
        return [], []
    title = f"Real street photos: the shipped model {street.model}"
    miou = "no val mIoU recorded"
    if street.miou_val is not None:
        miou = f"{street.miou_val:.2f} mIoU on CamVid val"
    intro = (
        f"{street.model} ({miou}; trained by effseg on a CPU, docs/camvid.md) on the sample photos that "
        "ship with effseg (CamVid val): photo | overlay with the legend of the classes found."
    )
    header = ["runtime", "latency ms (480x360, batch 1, median)", "images/s"]
    rows = [
        [r["runtime"], _fmt(r["median_ms"], ".1f"), _fmt(r["fps"], ".1f")]
        if not r.get("error")
        else [r["runtime"], f"failed: {r['error']}", "-"]
        for r in street.latency
    ]
    grid = Path(street.grid)
    rel = grid.name if grid.parent == out else str(grid)
    md = [f"## {title}", "", intro, "", f"![street photos]({rel})", ""]
    parts = [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(intro)}</p>"]
    parts.append(f"<img alt='street photos' src='{_img_data_uri(grid)}'>")
    if rows:
        md += [_md_table(header, rows), ""]
        parts.append(_html_table(header, rows))
    return md, parts


def referenced_files(document: str | Path) -> list[str]:
    """Local files a report.md / report.html refers to (``src=``, ``href=``, ``![](...)``), data: URIs
    and web links excluded. Used by the tests to check that every reference resolves."""
    text = Path(document).read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]""", text)
    refs += re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    return [r for r in refs if not re.match(r"^(data:|https?:|mailto:|#)", r)]
