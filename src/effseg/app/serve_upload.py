"""The guarded edges of ``effseg serve``: uploads (size limit while streaming, decoding, the pixel
cap) and admission (a bounded number of requests in flight, 503 with ``Retry-After`` beyond it).

Nothing here runs a model; :mod:`effseg.app.serve` wires it into the FastAPI app.
"""

from __future__ import annotations

import io
import json
import math
import re
import threading
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from effseg.errors import DataError, EffsegError
from effseg.size import Size

BODY_SLACK = 64 * 1024  # bytes of multipart headers allowed around the file itself


class UploadTooLarge(DataError):
    """The upload is larger than ``--max-upload-mb`` (answered with 413)."""


class ServerBusy(EffsegError, RuntimeError):
    """Every worker is busy and the queue is full (answered with 503 and ``Retry-After``)."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def status_of(err: EffsegError) -> int:
    """The HTTP status of a refused request: 413 too large, 503 busy, 400 anything else."""
    if isinstance(err, UploadTooLarge):
        return 413
    if isinstance(err, ServerBusy):
        return 503
    return 400


def megabytes(n: float) -> str:
    """``12.3 MB`` (10^6 bytes), three significant digits (``0.23 MB``, ``999 MB``, ``1234 MB``)."""
    mb = n / 1e6
    return f"{mb:.3g} MB" if mb < 1000 else f"{mb:.0f} MB"


def fit_size(w: int, h: int, max_pixels: int, model_size: Size | None) -> tuple[int, int]:
    """``(width, height)`` an upload of ``w x h`` is resized to when it has more than ``max_pixels``
    pixels: the smallest size (aspect kept) that still covers the model's own input size when it
    has one (the network sees that size anyway), else ``max_pixels``; never larger than the upload
    and never more than ``max_pixels``."""
    if w * h <= max_pixels:
        return w, h
    cap = math.sqrt(max_pixels / (w * h))
    scale = min(cap, max(model_size.w / w, model_size.h / h)) if model_size else cap
    scale = min(scale, 1.0)
    return max(1, round(w * scale)), max(1, round(h * scale))


def decode_upload(
    data: bytes, max_bytes: int, max_pixels: int | None = None, model_size: Size | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Uploaded bytes -> ``((H, W, 3) uint8 RGB, info)``.

    ``info`` holds ``resized_from`` (``[W, H]`` of the upload) and a ``note`` when the image had
    more than ``max_pixels`` pixels and was resized (:func:`fit_size`; JPEGs are decoded at a
    reduced scale directly, which is fast). Raises :class:`DataError` (one line) for an empty
    upload, a file that is not an image or a decompression bomb, :class:`UploadTooLarge` beyond
    ``max_bytes``.
    """
    from PIL import Image, UnidentifiedImageError

    from effseg.data.image import read_image

    if not data:
        raise DataError("the upload is empty; choose an image file (PNG, JPEG, ...)")
    if len(data) > max_bytes:
        raise UploadTooLarge(f"the upload is {megabytes(len(data))}; the limit is {megabytes(max_bytes)}")
    info: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            target = fit_size(w, h, max_pixels, model_size) if max_pixels else (w, h)
            if target != (w, h):
                img.draft("RGB", target)  # JPEG: decode at 1/2, 1/4 or 1/8 scale, still >= target
            img.load()
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF rotation by 90 degrees: sides swap
                w, h, target = h, w, (target[1], target[0])
            image = read_image(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        declared = re.search(r"\((\d+) pixels\)", str(err))
        raise DataError(
            f"the image declares {declared.group(1) if declared else 'too many'} pixels, more than the "
            f"{Image.MAX_IMAGE_PIXELS} allowed: refused as a possible decompression bomb"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, DataError) as err:
        text = re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-fA-F]+>", "", str(err)).strip() or type(err).__name__
        raise DataError(f"the upload is not a readable image ({text})") from None
    if target != (w, h):
        import cv2

        if image.shape[:2] != (target[1], target[0]):  # a JPEG draft is close; others decode whole
            image = cv2.resize(image, target, interpolation=cv2.INTER_AREA)
        to = "the model's size" if model_size else f"{max_pixels / 1e6:g} megapixels"
        info["resized_from"] = [w, h]
        info["note"] = (
            f"resized from {w}x{h} to {image.shape[1]}x{image.shape[0]} ({to}): uploads above "
            f"{max_pixels / 1e6:g} megapixels are resized"
        )
    return image, info


NO_FILE = "no image in the request: send it as the multipart form field 'file' (curl -F file=@street.jpg ...)"
MAX_FORM_PARTS = 8


class _FormParts:
    """The parts of a multipart body, collected by python-multipart's callbacks: ``(headers, data
    chunks)`` each."""

    def __init__(self) -> None:
        self.parts: list[tuple[dict[bytes, bytes], list[bytes]]] = []
        self.name, self.value = b"", b""  # the part header being read (it may come in pieces)
        self.ended = False  # the closing boundary was read

    def begin(self) -> None:
        if len(self.parts) >= MAX_FORM_PARTS:
            raise DataError(f"the form has more than {MAX_FORM_PARTS} fields; send the image alone")
        self.parts.append(({}, []))

    def header_name(self, data: bytes, start: int, end: int) -> None:
        self.name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def header_end(self) -> None:
        self.parts[-1][0][self.name.lower()] = self.value
        self.name, self.value = b"", b""

    def data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1][1].append(data[start:end])

    def end(self) -> None:
        self.ended = True


def form_file(chunks: list[bytes], content_type: str, field: str = "file") -> bytes:
    """The bytes of the file in the multipart form field ``field`` of a request body (``chunks`` as
    received). Runs in a worker thread, so that parsing a large upload never holds the event loop.

    Raises :class:`DataError` (one line) for a body that is not a multipart form or is cut short
    (no closing boundary), a form without the file, more than one file in ``field`` or more than
    :data:`MAX_FORM_PARTS` parts.
    """
    from python_multipart import MultipartParser
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import parse_options_header

    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        raise DataError(NO_FILE)
    if not options.get(b"boundary"):
        raise DataError("the request is not a valid multipart form: its Content-Type has no boundary")
    form = _FormParts()
    callbacks = {
        "on_part_begin": form.begin,
        "on_header_field": form.header_name,
        "on_header_value": form.header_value,
        "on_header_end": form.header_end,
        "on_part_data": form.data,
        "on_end": form.end,
    }
    try:
        parser = MultipartParser(options[b"boundary"], callbacks)  # type: ignore[arg-type]
        for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as err:
        why = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"the request is not a valid multipart form ({why})") from None
    if not form.ended:
        raise DataError("the form ends before its closing boundary: the upload is incomplete; send it again")
    files = []
    for headers, data in form.parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition.get(b"name") == field.encode() and b"filename" in disposition:
            files.append(b"".join(data))
    if not files:
        raise DataError(NO_FILE)
    if len(files) > 1:
        raise DataError(f"the form holds {len(files)} files in the field '{field}'; send one image")
    return files[0]


class Admission:
    """At most ``workers + queue`` requests in flight; :meth:`enter` refuses the next one with
    :class:`ServerBusy`, whose ``retry_after`` (s) estimates when a slot frees up from the mean
    request time so far."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers, self.limit = workers, workers + queue
        self.pending = 0
        self.mean_s = 1.0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self.pending >= self.limit:
                wait = max(1, min(60, math.ceil(self.pending * self.mean_s / self.workers)))
                raise ServerBusy(
                    f"the server is busy ({self.pending} requests in progress or queued, the limit is "
                    f"{self.limit}); try again in {wait} s",
                    wait,
                )
            self.pending += 1

    def leave(self, seconds: float) -> None:
        with self._lock:
            self.pending -= 1
            self.mean_s = 0.8 * self.mean_s + 0.2 * seconds


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class UploadGuard:
    """ASGI middleware in front of every ``POST /api/...``: the ``Content-Length`` is checked
    before a byte of the body is read, then the bytes actually received are counted, so an
    oversized upload is refused (413) without being received in full; requests beyond
    :class:`Admission`'s limit get 503 with ``Retry-After`` before their body is read."""

    def __init__(self, app: Any, admission: Admission, max_bytes: int) -> None:
        self.app, self.admission, self.max_bytes = app, admission, max_bytes
        self.max_body = max_bytes + BODY_SLACK

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_body:
            msg = f"the upload is {megabytes(int(declared))}; the limit is {megabytes(self.max_bytes)}"
            await send_error(send, 413, msg)
            return
        try:
            self.admission.enter()
        except ServerBusy as err:
            await send_error(send, 503, str(err), [(b"retry-after", str(err.retry_after).encode())])
            return
        received = 0

        async def limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise UploadTooLarge(
                        f"the upload is more than {megabytes(received)} (stopped reading there); the "
                        f"limit is {megabytes(self.max_bytes)}"
                    )
            return message

        import time

        t0 = time.perf_counter()
        try:
            await self.app(scope, limited, send)
        finally:
            self.admission.leave(time.perf_counter() - t0)


async def send_error(send: Send, status: int, message: str, headers: list | None = None) -> None:
    """Answer ``{"error": message}`` with ``status`` (and close: the body may be unread)."""
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
