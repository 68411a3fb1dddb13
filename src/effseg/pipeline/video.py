"""Frame sources and sinks for ``effseg predict``: image files, video files, cameras, video output.

A source yields :class:`Frame` items in order; a frame that cannot be decoded is yielded with
``error`` set (and no image) so that the caller names it and goes on. Video is read and written
with OpenCV (frames are converted to RGB on reading and back to BGR on writing).

Output video codecs by extension: ``.mp4``/``.mov`` MPEG-4 Part 2 (``mp4v``), ``.avi`` Motion
JPEG, ``.mkv`` FFV1 (lossless: colour masks decode back to exact palette colours).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effseg.errors import DataError
from effseg.fileio import AtomicTarget, OutputError, describe_output_error

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
WRITE_CODECS = {".mp4": "mp4v", ".mov": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mkv": "FFV1"}
DEFAULT_CAMERA_FPS = 30.0


@dataclass
class Frame:
    """One input frame: ``image`` ``(H, W, 3)`` uint8 RGB, or ``error`` (one line) if unreadable.

    ``name`` is what messages show (a path, or ``video.mp4#12``); ``rel`` the output stem
    (relative path without suffix) for per-frame files.
    """

    index: int
    name: str
    rel: Path
    image: np.ndarray | None = None
    error: str | None = None


def is_video(path: str | Path) -> bool:
    """True for a file name with a video extension (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ...)."""
    return Path(str(path)).suffix.lower() in VIDEO_EXTENSIONS


def read_image_file(path: Path) -> np.ndarray:
    """An image file -> ``(H, W, 3)`` uint8 RGB via :func:`effseg.api.read_image`; a decompression
    bomb (a header declaring more pixels than Pillow's limit) is a one-line :class:`DataError`."""
    from PIL import Image

    from effseg.api import read_image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return read_image(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        limit = Image.MAX_IMAGE_PIXELS
        raise DataError(
            f"{path}: image declares too many pixels ({_declared_size(err)}; limit {limit} pixels), "
            "refused as a possible decompression bomb"
        ) from None


def _declared_size(err: Exception) -> str:
    text = str(err)
    start = text.find("(")
    return text[start + 1 : text.find(" pixels")] + " pixels" if start >= 0 and " pixels" in text else text


def image_frames(files: list[tuple[Path, Path]]) -> Iterator[Frame]:
    """``(path, rel)`` pairs (from :func:`effseg.pipeline.predict.collect_inputs`) -> frames."""
    for i, (path, rel) in enumerate(files):
        try:
            yield Frame(i, str(path), rel, image=read_image_file(path))
        except DataError as err:
            yield Frame(i, str(path), rel, error=str(err))


@dataclass
class VideoInfo:
    """What OpenCV reports about a video or camera: frames (0 if unknown), fps and size."""

    frames: int
    fps: float
    width: int
    height: int


def open_capture(source: str | Path | int) -> tuple[object, VideoInfo]:
    """``cv2.VideoCapture`` for a video file or a camera index, with its :class:`VideoInfo`."""
    import cv2

    if isinstance(source, int):
        cap = cv2.VideoCapture(source)
        what = f"camera {source}"
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such video file")
        cap = cv2.VideoCapture(str(path))
        what = str(path)
    if not cap.isOpened():
        cap.release()
        raise DataError(f"{what}: cannot be opened as a video (OpenCV/FFmpeg could not read it)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    info = VideoInfo(
        frames=max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)) if not isinstance(source, int) else 0,
        fps=fps if fps > 0 else DEFAULT_CAMERA_FPS,
        width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    return cap, info


def video_frames(source: str | Path | int, max_frames: int | None = None) -> Iterator[Frame]:
    """Frames of a video file (until its end) or a camera (until ``max_frames`` or Ctrl-C), as RGB."""
    import cv2

    cap, _ = open_capture(source)
    label = f"camera{source}" if isinstance(source, int) else Path(source).name
    stem = Path(f"camera{source}") if isinstance(source, int) else Path(Path(source).stem)
    try:
        i = 0
        while max_frames is None or i < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            yield Frame(
                i, f"{label}#{i}", stem / f"frame_{i:06d}", image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            )
            i += 1
    finally:
        cap.release()


class VideoSink:
    """Writes RGB ``(H, W, 3)`` uint8 frames to a video file at ``fps`` (codec by extension).

    The frames go to a hidden temporary file beside ``path`` (``.<name>.<random>.tmp<suffix>``);
    :meth:`close` checks that it reads back as a video and renames it onto ``path``, so an earlier
    file there survives a failed run and a half-written video is never left under the final name.
    :meth:`discard` removes the temporary file instead.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        """``size`` is ``(height, width)`` in pixels; every frame must have it."""
        import cv2

        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in WRITE_CODECS:
            raise DataError(
                f"--out {self.path}: unknown video extension; expected one of {sorted(WRITE_CODECS)}"
            )
        self.size = size
        h, w = size
        self.target = AtomicTarget(self.path, "the output video", fsync=True)
        self.tmp = self.target.tmp
        self._writer = cv2.VideoWriter(
            str(self.tmp), cv2.VideoWriter_fourcc(*WRITE_CODECS[suffix]), fps, (w, h)
        )
        if not self._writer.isOpened():
            self.target.discard()
            raise DataError(f"--out {self.path}: OpenCV cannot write {WRITE_CODECS[suffix]} video here")
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        if rgb.shape[:2] != self.size:
            raise DataError(
                f"{self.path}: frame {rgb.shape[1]}x{rgb.shape[0]} differs from the video's "
                f"{self.size[1]}x{self.size[0]} (all frames of a video output must have one size)"
            )
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finish the file, check it and rename it onto ``path``.

        Raises:
            OutputError: the video could not be written (full disk, read-only folder; OpenCV's
                writer fails silently, so the file is read back to find out).
        """
        self._writer.release()
        try:
            _check_video(self.tmp, self.frames, self.path, self.target.kept)
        except BaseException:
            self.target.discard()
            raise
        self.target.commit()

    def discard(self) -> None:
        """Stop writing and remove the temporary file; ``path`` keeps what it held."""
        self._writer.release()
        self.target.discard()


def _check_video(tmp: Path, frames: int, path: Path, kept: str = "") -> None:
    """Raise :class:`OutputError` unless ``tmp`` opens as a video with a readable first frame."""
    import cv2

    if frames == 0:
        return
    cap = cv2.VideoCapture(str(tmp))
    try:
        ok = cap.isOpened() and cap.read()[0]
    finally:
        cap.release()
    if not ok:
        why = RuntimeError("OpenCV wrote a file that does not read back as a video")
        raise OutputError(describe_output_error(path, "the output video", why, kept))
