"""Segment files on disk: colour masks, overlays, class-id and Cityscapes label-id PNGs.

``effseg predict MODEL INPUT... --out DIR`` calls :func:`predict_files`. Outputs mirror the
input's relative path (so ``frankfurt/x.png`` and ``lindau/x.png`` do not collide)::

    DIR/color/<rel>.png       palette colours (always)
    DIR/overlay/<rel>.png     colours blended over the image (--overlay)
    DIR/ids/<rel>.png         raw class ids, 8-bit grey (--class-ids)
    DIR/label_ids/<rel>.png   Cityscapes label ids for the test server (--label-ids)

An unreadable input is reported by name and skipped; the others go on.
"""

from __future__ import annotations

import glob
import itertools
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from effseg.api import IMAGE_EXTENSIONS, Predictor, colorize, overlay, read_image
from effseg.errors import DataError, EffsegError, ModelError

OUTPUT_KINDS = ("color", "overlay", "ids", "label_ids")


@dataclass
class PredictSummary:
    """What :func:`predict_files` did: output paths per input and ``(input, reason)`` failures."""

    written: dict[Path, list[Path]] = field(default_factory=dict)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.written) + len(self.failed)


def collect_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """Expand files, directories (recursive, image extensions) and globs.

    Returns ``(path, relative output stem)`` pairs in a stable order, de-duplicated. A named
    file is taken whatever its extension (so a corrupt or mis-named file is reported, not
    silently skipped); directory and glob matches are filtered by image extension.
    """
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()

    def add(path: Path, rel: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append((path, rel.with_suffix("")))

    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise DataError(f"{path}: directory has no images ({', '.join(IMAGE_EXTENSIONS)})")
            for p in files:
                add(p, p.relative_to(path))
        elif path.is_file():
            add(path, Path(path.name))
        elif glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_EXTENSIONS]
            if not files:
                raise DataError(f"{text}: pattern matches no image files")
            # Output paths are relative to the pattern's literal leading folders.
            literal = list(itertools.takewhile(lambda part: not glob.has_magic(part), Path(text).parts))
            root = Path(*literal) if literal else Path(".")
            for m in files:
                try:
                    rel = m.relative_to(root)
                except ValueError:
                    rel = Path(m.name)
                add(m, rel)
        else:
            raise DataError(f"{path}: no such file, directory or glob match")
    # Two inputs with the same output name (e.g. a/x.png and b/x.jpg given as files) would
    # overwrite each other: prefix their parent folder names until unique.
    stems: dict[Path, int] = {}
    for _, rel in found:
        stems[rel] = stems.get(rel, 0) + 1
    if any(n > 1 for n in stems.values()):
        found = [
            (p, Path(*p.resolve().parts[-3:]).with_suffix("") if stems[rel] > 1 else rel) for p, rel in found
        ]
    return found


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def predict_files(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    overlay_alpha: float | None = None,
    class_ids: bool = False,
    label_ids: bool = False,
    batch_size: int = 1,
    input_size: tuple[int, int] | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> PredictSummary:
    """Run ``predictor`` over every image in ``inputs`` and write PNGs under ``out_dir``.

    ``overlay_alpha`` (0..1) also writes overlays; ``class_ids`` writes raw ids;
    ``label_ids`` writes Cityscapes label ids (19-class Cityscapes models only).
    """
    to_label_ids = None
    if label_ids:
        from effseg.data.cityscapes import CITYSCAPES_CLASSES, train_ids_to_label_ids

        if list(predictor.classes) != list(CITYSCAPES_CLASSES):
            raise ModelError(
                f"--label-ids needs a model trained on the 19 Cityscapes classes; {predictor.source} "
                f"has {predictor.num_classes} classes ({', '.join(predictor.classes[:4])}, ...)"
            )
        to_label_ids = train_ids_to_label_ids
    files = collect_inputs(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True, soft_wrap=True)  # never break a file name across lines
    summary = PredictSummary()
    columns = (
        TextColumn("[bold]predict"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[name]}"),
    )
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        task = bar.add_task("predict", total=len(files), name="")
        for chunk in _chunks(files, max(1, batch_size)):
            images: list[np.ndarray] = []
            ok: list[tuple[Path, Path]] = []
            for path, rel in chunk:
                try:
                    images.append(read_image(path))
                    ok.append((path, rel))
                except EffsegError as err:
                    summary.failed.append((path, str(err)))
                    console.print(
                        f"[red]skipped[/red] {escape(str(path))}: {escape(str(err))}", highlight=False
                    )
                    bar.advance(task)
            if not images:
                continue
            bar.update(task, name=ok[-1][0].name)
            preds = predictor.predict_arrays(images, input_size=input_size, batch_size=len(images))
            for (path, rel), image, pred in zip(ok, images, preds, strict=True):
                written = [out / "color" / f"{rel}.png"]
                color = colorize(pred, predictor.palette)
                _save_png(color, written[-1])
                if overlay_alpha is not None:
                    written.append(out / "overlay" / f"{rel}.png")
                    _save_png(overlay(image, color, overlay_alpha), written[-1])
                if class_ids:
                    written.append(out / "ids" / f"{rel}.png")
                    _save_png(pred.astype(np.uint8), written[-1])
                if to_label_ids is not None:
                    written.append(out / "label_ids" / f"{rel}.png")
                    _save_png(np.asarray(to_label_ids(pred), dtype=np.uint8), written[-1])
                summary.written[path] = written
                bar.advance(task)
    return summary


def _chunks(items: Sequence, n: int) -> Iterable[Sequence]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def print_summary(summary: PredictSummary, out_dir: str | Path, console: Console | None = None) -> None:
    """One line per failure and a closing count, on stderr."""
    console = console or Console(stderr=True, file=sys.stderr, soft_wrap=True)
    ok, bad = len(summary.written), len(summary.failed)
    msg = f"wrote predictions for {ok} of {summary.total} image(s) to {out_dir}"
    if bad:
        console.print(f"[red]{msg}; {bad} failed:[/red]", highlight=False)
        for path, reason in summary.failed:
            console.print(f"  {path}: {reason}", highlight=False, markup=False)
    else:
        console.print(msg, highlight=False)
