"""The predict pipeline: a reader thread decodes, the main thread runs the model, a writer thread
encodes; bounded queues between them keep memory flat however many frames come.

    source (files | video | camera) --Queue(depth)--> engine (main thread) --Queue(depth)--> sink

Frames stay in input order. A frame that cannot be read is named on the console, counted as
failed and skipped; the others are written. :func:`run_pipeline` returns a
:class:`PipelineSummary`; :meth:`PipelineSummary.line` is the closing line (frames, wall time,
end-to-end FPS, model-only FPS, runtime).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape

from effseg.pipeline.video import Frame
from effseg.progress import progress_bar

_DONE = object()


@dataclass
class PipelineSummary:
    """What the pipeline did. Times in seconds."""

    frames: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    wall_seconds: float = 0.0
    model_seconds: float = 0.0
    runtime: str = ""

    @property
    def fps(self) -> float:
        """End-to-end frames per second (decode, preprocess, model, argmax, encode)."""
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def model_fps(self) -> float:
        """Frames per second of the model alone (normalised tensor in, class ids out)."""
        return self.frames / self.model_seconds if self.model_seconds > 0 else 0.0

    def line(self) -> str:
        failed = f", {len(self.failed)} failed" if self.failed else ""
        return (
            f"{self.frames} frames{failed} in {self.wall_seconds:.2f} s: {self.fps:.1f} FPS end to end, "
            f"{self.model_fps:.1f} FPS model only, runtime {self.runtime}"
        )


def _reader(frames: Iterable[Frame], out: queue.Queue, stop: threading.Event, errors: list) -> None:
    try:
        for frame in frames:
            while not stop.is_set():
                try:
                    out.put(frame, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
    except BaseException as err:  # noqa: BLE001 - handed to the main thread, re-raised there
        errors.append(err)
    finally:
        out.put(_DONE)


def _writer(
    inbox: queue.Queue, write: Callable[[Frame, np.ndarray], list[Path]], done: list, errors: list
) -> None:
    while True:
        item = inbox.get()
        if item is _DONE:
            return
        if errors:
            continue  # drain: the main thread stops at the next frame
        frame, labels = item
        try:
            done.extend(write(frame, labels))
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            errors.append(err)


def iter_queue(q: queue.Queue) -> Iterator[Any]:
    while (item := q.get()) is not _DONE:
        yield item


def run_pipeline(
    frames: Iterable[Frame],
    engine: Any,
    write: Callable[[Frame, np.ndarray], list[Path]],
    *,
    total: int | None = None,
    depth: int = 4,
    console: Console | None = None,
    progress: bool = True,
    first: Frame | None = None,
) -> PipelineSummary:
    """Run ``engine`` (frame ``(H, W, 3)`` uint8 -> ids ``(H, W)`` uint8) over ``frames`` and hand
    each result to ``write(frame, labels) -> written paths`` on the writer thread.

    ``depth`` bounds each queue (frames in flight <= 2 * depth + 2); ``first`` is a frame already
    read (e.g. to pick the runtime), processed before the rest. Exceptions from the reader or the
    writer are re-raised here after both threads stop.
    """
    console = console or Console(stderr=True, soft_wrap=True)
    inbox: queue.Queue = queue.Queue(maxsize=depth)
    outbox: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    read_errors: list[BaseException] = []
    write_errors: list[BaseException] = []
    summary = PipelineSummary(runtime=getattr(engine, "name", type(engine).__name__))
    model_before = getattr(engine, "model_seconds", 0.0)

    def source() -> Iterator[Frame]:
        if first is not None:
            yield first
        yield from frames

    reader = threading.Thread(target=_reader, args=(source(), inbox, stop, read_errors), daemon=True)
    writer = threading.Thread(
        target=_writer, args=(outbox, write, summary.written, write_errors), daemon=True
    )
    start = time.perf_counter()
    reader.start()
    writer.start()
    try:
        count = None if total else "{task.completed} frames"  # a camera or stream has no total
        with progress_bar(count=count, rate="fps", console=console, disable=not progress) as bar:
            task = bar.add_task("predict", total=total)
            for frame in iter_queue(inbox):
                if write_errors:
                    break
                if frame.error is not None:
                    summary.failed.append((frame.name, frame.error))
                    console.print(f"[red]skipped[/red] {escape(frame.error)}", highlight=False)
                else:
                    labels = engine(frame.image)
                    outbox.put((frame, labels))
                    summary.frames += 1
                bar.advance(task)
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            with contextlib.suppress(queue.Empty):
                inbox.get(timeout=0.05)
        outbox.put(_DONE)
        writer.join()
    summary.wall_seconds = time.perf_counter() - start
    summary.model_seconds = getattr(engine, "model_seconds", 0.0) - model_before
    for errors in (read_errors, write_errors):
        if errors:
            raise errors[0]
    return summary
