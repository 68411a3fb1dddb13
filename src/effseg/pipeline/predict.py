"""Segment images, folders, globs, video files and cameras: ``effseg predict MODEL INPUT...``.

:func:`predict` loads the model (:func:`effseg.load`), picks the runtime
(:mod:`effseg.pipeline.engines`) and runs the threaded pipeline (:mod:`effseg.pipeline.threaded`).
With ``--out DIR`` the outputs mirror each input's relative path (a video's frames go to
``<video stem>/frame_000000``)::

    DIR/color/<rel>.png       palette colours (always)
    DIR/overlay/<rel>.png     colours blended over the image, legend below (--overlay)
    DIR/ids/<rel>.png         raw class ids, 8-bit grey (--class-ids)
    DIR/label_ids/<rel>.png   Cityscapes label ids for the test server (--label-ids)

With ``--out x.mp4`` (``.avi``, ``.mov``, ``.mkv``) one video is written at the input's frame
rate and size: colour masks, or overlays with ``--overlay`` (legend drawn in the corner).
An unreadable input is reported by name and skipped; the others go on. Every file is written
atomically (:mod:`effseg.fileio`). An unusable ``--out`` (a file where a folder is needed, an
existing video without ``--overwrite``, an unwritable folder) is refused before the model loads;
a write that fails later (a full disk) stops the run with one line counting what was written.
"""

from __future__ import annotations

import glob
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from effseg.api import IMAGE_EXTENSIONS
from effseg.data.visualize import add_legend, colorize, inset_legend, overlay
from effseg.errors import DataError, ModelError
from effseg.fileio import OutputError, atomic_write_bytes, writable_dir
from effseg.pipeline.threaded import PipelineSummary, run_pipeline
from effseg.pipeline.video import (
    WRITE_CODECS,
    Frame,
    VideoSink,
    image_frames,
    is_video,
    open_capture,
    video_frames,
)
from effseg.size import Size

OUTPUT_KINDS = ("color", "overlay", "ids", "label_ids")


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


@dataclass
class Outputs:
    """What to write for each frame. ``overlay_alpha`` None: no overlay; ``legend`` None: on for
    overlays, off for colour masks; ``overwrite``: replace an existing output video (a folder's
    files are always replaced, each atomically)."""

    out: Path
    overlay_alpha: float | None = None
    legend: bool | None = None
    class_ids: bool = False
    label_ids: bool = False
    fps: float | None = None
    overwrite: bool = False

    @property
    def is_video(self) -> bool:
        return self.out.suffix.lower() in WRITE_CODECS


class _Writer:
    """``write(frame, labels) -> paths`` for the pipeline's writer thread: PNGs or one video."""

    def __init__(self, predictor: Any, outputs: Outputs, fps: float) -> None:
        self.p, self.o, self.fps = predictor, outputs, fps
        self.video: VideoSink | None = None
        self.frames = 0  # frames whose outputs are written (or handed to the video)
        self.to_label_ids = None
        if outputs.label_ids:
            from effseg.data.cityscapes import CITYSCAPES_CLASSES, train_ids_to_label_ids

            if list(predictor.classes) != list(CITYSCAPES_CLASSES):
                raise ModelError(
                    f"--label-ids needs a model trained on the 19 Cityscapes classes; {predictor.source} "
                    f"has {predictor.num_classes} classes ({', '.join(predictor.classes[:4])}, ...)"
                )
            self.to_label_ids = train_ids_to_label_ids

    def picture(self, image: np.ndarray, labels: np.ndarray, color: np.ndarray) -> np.ndarray:
        o = self.o
        pic = color if o.overlay_alpha is None else overlay(image, color, o.overlay_alpha)
        legend = o.legend if o.legend is not None else o.overlay_alpha is not None
        if not legend:
            return pic
        if o.is_video:
            return inset_legend(pic, self.p.classes, self.p.palette)
        return add_legend(pic, self.p.classes, self.p.palette, labels)

    def __call__(self, frame: Frame, labels: np.ndarray) -> list[Path]:
        o, image = self.o, frame.image
        assert image is not None
        color = colorize(labels, self.p.palette)
        if o.is_video:
            if self.video is None:
                self.video = VideoSink(o.out, self.fps, image.shape[:2])
            self.video.write(self.picture(image, labels, color))
            self.frames += 1
            return []
        written = [o.out / "color" / f"{frame.rel}.png"]
        legend = o.legend is True and o.overlay_alpha is None
        _save_png(add_legend(color, self.p.classes, self.p.palette, labels) if legend else color, written[-1])
        if o.overlay_alpha is not None:
            written.append(o.out / "overlay" / f"{frame.rel}.png")
            _save_png(self.picture(image, labels, color), written[-1])
        if o.class_ids:
            written.append(o.out / "ids" / f"{frame.rel}.png")
            _save_png(labels.astype(np.uint8), written[-1])
        if self.to_label_ids is not None:
            written.append(o.out / "label_ids" / f"{frame.rel}.png")
            _save_png(np.asarray(self.to_label_ids(labels), dtype=np.uint8), written[-1])
        self.frames += 1
        return written

    def close(self, keep: bool = True) -> None:
        """Finish the video (``keep``) or drop its temporary file (a failed run)."""
        if self.video is not None:
            self.video.close() if keep else self.video.discard()


def _save_png(array: np.ndarray, path: Path) -> None:
    """Encode ``array`` as PNG in memory, then write it atomically (an earlier file is replaced
    whole or kept whole)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    atomic_write_bytes(path, buf.getbuffer(), "a predicted mask")


def check_outputs(outputs: Outputs) -> None:
    """Refuse an unusable ``--out`` before any model is loaded: a file where a folder is needed, an
    existing video without ``overwrite``, a folder that cannot be written (full, read-only, no
    permission). Every refusal is one line naming the path."""
    out = outputs.out
    if outputs.is_video:
        if out.is_dir():
            raise OutputError(f"--out {out}: is a folder; give a new video file name, e.g. {out / 'seg.mp4'}")
        if out.exists() and not outputs.overwrite:
            raise OutputError(
                f"--out {out}: the video exists; add --overwrite to replace it, or choose another name"
            )
        writable_dir(out.parent, f"the output video {out.name}")
        return
    if out.exists() and not out.is_dir():
        raise OutputError(
            f"--out {out}: is a file, not a folder; give a folder for the PNGs, or a video file name "
            f"ending in {', '.join(sorted(WRITE_CODECS))}"
        )
    writable_dir(out, "the predicted masks (--out)")


def open_sources(
    inputs: Sequence[str | Path], camera: int | None = None, max_frames: int | None = None
) -> tuple[Iterator[Frame], int | None, float | None]:
    """All inputs as one frame stream: ``(frames, total or None if unknown, fps of the first video)``.

    Image files, folders and globs become image frames; video files are read frame by frame;
    ``camera`` (an index) is read until ``max_frames`` or Ctrl-C.
    """
    videos = [Path(str(i)) for i in inputs if is_video(i) and Path(str(i)).is_file()]
    images = [i for i in inputs if not (is_video(i) and Path(str(i)).is_file())]
    files = collect_inputs(images) if images else []
    streams: list[Iterable[Frame]] = [image_frames(files)] if files else []
    total: int | None = len(files)
    fps = None
    for v in videos:
        cap, info = open_capture(v)
        cap.release()  # type: ignore[attr-defined]
        fps = fps or info.fps
        total = total + info.frames if total is not None and info.frames else None
        streams.append(video_frames(v, max_frames))
    if camera is not None:
        cap, info = open_capture(camera)
        cap.release()  # type: ignore[attr-defined]
        fps, total = fps or info.fps, max_frames if not streams and max_frames else None
        streams.append(video_frames(camera, max_frames))
    if not streams:
        raise DataError("no input: give image files, folders, globs, video files or --camera N")
    if max_frames is not None and total is not None:
        total = min(total, max_frames)
    return itertools.islice(itertools.chain.from_iterable(streams), max_frames), total, fps


def predict(
    model: str | Path,
    inputs: Sequence[str | Path],
    outputs: Outputs,
    *,
    runtime: str = "auto",
    camera: int | None = None,
    input_size: Size | None = None,
    device: str = "cpu",
    max_frames: int | None = None,
    progress: bool = True,
    console: Console | None = None,
    predictor: Any = None,
    tta: str | None = None,
) -> PipelineSummary:
    """Segment ``inputs`` (and ``camera``) with ``model`` and write ``outputs``.

    ``input_size`` (a :class:`~effseg.size.Size`) is the size the network sees (outputs keep the
    input size; ``None``: the model's own, e.g. 480x360 for a shipped CamVid model, else each
    frame's own);
    ``runtime`` one of :data:`effseg.pipeline.engines.RUNTIMES`. Returns the pipeline summary
    (failed frames are listed in it, not raised). ``tta`` (``"flip"``, ``"flip,0.75,1.0,1.25"``):
    test-time augmentation by the Predictor (:mod:`effseg.engine.tta`), with runtime auto or eager.
    """
    from effseg.api import load
    from effseg.pipeline.engines import build_engine

    check_outputs(outputs)
    console = console or Console(stderr=True, soft_wrap=True)
    predictor = predictor or load(model, device=device, batch_size=1)
    # a shipped model's (or a static graph's) own size unless the caller chose one
    input_size = input_size or predictor.input_size
    frames, total, fps = open_sources(inputs, camera, max_frames)
    head: list[Frame] = []
    for frame in frames:  # the first readable frames: auto's timing frame, int8 calibration
        head.append(frame)
        if sum(f.image is not None for f in head) >= 4:
            break
    samples = [f.image for f in head if f.image is not None]
    if outputs.is_video and not samples:
        raise DataError(f"--out {outputs.out}: no readable frame to write")
    engine = (
        _tta_engine(predictor, runtime, tta, input_size)
        if tta is not None
        else build_engine(
            predictor,
            runtime,
            model,
            samples,
            input_size=input_size,
            log=lambda msg: console.print(msg, markup=False, highlight=False),
        )
    )
    if samples:  # warm up (first-call allocations, onnxruntime session) outside the timed pipeline
        engine(samples[0])
        engine.model_seconds, engine.frames = 0.0, 0
    writer = _Writer(predictor, outputs, outputs.fps or fps or 30.0)
    keep = False
    try:
        summary = run_pipeline(
            itertools.chain(head, frames), engine, writer, total=total, console=console, progress=progress
        )
        keep = True
    except KeyboardInterrupt:  # Ctrl-C ends a camera recording: the frames so far are the video
        keep = True
        raise
    except OutputError as err:  # a full disk, a folder that turned read-only: stop, and say how far
        of = f" of {total}" if total else ""
        what = "frames into the video (not kept)" if outputs.is_video else f"frames' outputs in {outputs.out}"
        raise OutputError(f"{err}; predict stopped after writing {writer.frames}{of} {what}") from None
    finally:
        writer.close(keep)
    return summary


def _tta_engine(predictor: Any, runtime: str, tta: str, input_size: Size | None) -> Any:
    """``--tta``: the Predictor's own passes (eager PyTorch, or an .onnx MODEL as given)."""
    import copy

    from effseg.engine.tta import describe_tta, parse_tta
    from effseg.pipeline.engines import PredictorEngine, is_onnx_predictor

    scales, flip = parse_tta(tta)
    if runtime not in ("auto", "eager"):
        raise ModelError(
            f"--tta {tta}: test-time augmentation runs with --runtime auto or eager, not {runtime}"
        )
    predictor = copy.copy(predictor)  # the caller's Predictor keeps its own default
    predictor.tta = tta
    name = "onnxruntime" if is_onnx_predictor(predictor) else "eager"
    return PredictorEngine(predictor, input_size, name=f"{name}, TTA {describe_tta(scales, flip)}")


def print_summary(summary: PipelineSummary, console: Console | None = None) -> None:
    """The failures (one line each) and the closing line, on stderr."""
    console = console or Console(stderr=True, soft_wrap=True)
    for _name, reason in summary.failed:
        console.print(f"  failed: {reason}", highlight=False, markup=False)
    console.print(summary.line(), highlight=False, markup=False)
