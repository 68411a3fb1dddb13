"""``effseg serve MODEL``: a small local web app (FastAPI) around one loaded model.

Routes:

- ``GET /``: one page: drop or choose an image, see the overlay with its legend, the class
  shares and the latency.
- ``POST /api/predict`` (multipart field ``file``): JSON ``{"width", "height", "classes",
  "labels_png" (the class ids as an 8-bit greyscale PNG, base64), "shares" ({class: fraction of
  pixels}), "latency_ms", "runtime"}``, plus ``"resized_from"`` ``[W, H]`` and a ``"note"`` when
  the upload was larger than the pixel cap and was resized.
- ``POST /api/predict.png?kind=ids|color|overlay``: a PNG (8-bit class ids, colour mask, or
  overlay with legend) for scripts; a resize is said in the ``X-Effseg-Note`` header.
- ``POST /api/view``: what the page shows (overlay PNG as base64, shares, latency, note).
- ``GET /api/info``: the model's classes, palette and runtime.

Staying responsive: the event loop only receives the body's chunks and sends the answer; parsing
the multipart form, decoding the image, inference and encoding the answer (PNG, base64, JSON) run
in a pool of ``workers`` threads (the model itself one call at a time), so ``/api/info`` and the
page answer while predictions run. Before serving, the objects of the loaded model and the app are
moved out of the garbage collector's reach (``gc.freeze``): a full collection over them took
~0.2 s, all threads stopped, and would otherwise happen now and then between requests.

At most ``workers + queue`` uploads are in flight; the next one gets 503 with ``Retry-After``.
The upload limit is enforced while the body streams in (the ``Content-Length`` first, then the
bytes read: an oversized upload is never received in full). Uploads with more than
``max_megapixels`` pixels are resized (to the model's own input size when it has one) and the
answer says so.

Every refused request -- bad upload (400), too large (413), busy (503), unknown route (404), a
malformed form (400) -- is answered with ``{"error": "<one line>"}``; the server keeps serving.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run time.
import asyncio
import base64
import contextlib
import gc
import io
import json
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from effseg.app.serve_page import PAGE
from effseg.app.serve_upload import (
    Admission,
    UploadGuard,
    decode_upload,
    form_file,
    status_of,
)
from effseg.data.visualize import add_legend, colorize, overlay
from effseg.errors import ConfigError, DataError, EffsegError

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_MEGAPIXELS = 4.0
DEFAULT_WORKERS = 2
DEFAULT_QUEUE = 8
PICTURE_KINDS = ("ids", "color", "overlay")


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class Segmenter:
    """One predictor + engine shared by the request threads (model calls serialised by a lock)."""

    def __init__(self, predictor: Any, engine: Any) -> None:
        self.predictor, self.engine = predictor, engine
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Class ids ``(H, W)`` uint8 and the latency in ms (model, upsample, argmax)."""
        with self._lock:
            t0 = time.perf_counter()
            labels = self.engine(image)
            return labels, (time.perf_counter() - t0) * 1000.0

    @property
    def runtime(self) -> str:
        return getattr(self.engine, "name", "")

    def shares(self, labels: np.ndarray) -> dict[str, float]:
        """Fraction of pixels per class, largest first; classes absent from the image left out."""
        n = len(self.predictor.classes)
        counts = np.bincount(labels.ravel(), minlength=n)[:n]
        order = np.argsort(-counts, kind="stable")
        total = max(int(labels.size), 1)
        return {self.predictor.classes[i]: round(int(counts[i]) / total, 5) for i in order if counts[i]}

    def picture(self, image: np.ndarray, labels: np.ndarray, kind: str) -> np.ndarray:
        p = self.predictor
        if kind == "ids":
            return labels
        color = colorize(labels, p.palette)
        if kind == "color":
            return color
        return add_legend(overlay(image, color, 0.5), p.classes, p.palette, labels)


Body = tuple[list[bytes], str]  # a request body as received (its chunks) and its Content-Type


def _json(answer: dict[str, Any]) -> bytes:
    """``answer`` as the JSON bytes FastAPI's ``JSONResponse`` would send (in the worker thread)."""
    return json.dumps(answer, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class _Work:
    """What one request does in a worker thread: parse the form, decode, segment, encode the answer
    (the event loop only passes the body in and the bytes out)."""

    def __init__(self, segmenter: Segmenter, max_bytes: int, max_pixels: int) -> None:
        self.s, self.max_bytes, self.max_pixels = segmenter, max_bytes, max_pixels
        self.model_size = getattr(segmenter.predictor, "input_size", None)

    def run(self, body: Body) -> tuple[np.ndarray, np.ndarray, float, dict[str, Any]]:
        data = form_file(*body)
        image, info = decode_upload(data, self.max_bytes, self.max_pixels, self.model_size)
        labels, ms = self.s(image)
        return image, labels, ms, info

    def predict(self, body: Body) -> bytes:
        image, labels, ms, info = self.run(body)
        return _json(
            {
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "classes": list(self.s.predictor.classes),
                "labels_png": base64.b64encode(_png(labels.astype(np.uint8))).decode(),
                "shares": self.s.shares(labels),
                "latency_ms": round(ms, 2),
                "runtime": self.s.runtime,
                **info,
            }
        )

    def png(self, body: Body, kind: str) -> tuple[bytes, float, dict[str, Any]]:
        image, labels, ms, info = self.run(body)
        return _png(self.s.picture(image, labels, kind)), ms, info

    def view(self, body: Body) -> bytes:
        image, labels, ms, info = self.run(body)
        p = self.s.predictor
        colors = {c: "#" + bytes(int(v) for v in p.palette[i]).hex() for i, c in enumerate(p.classes)}
        return _json(
            {
                "overlay": base64.b64encode(_png(self.s.picture(image, labels, "overlay"))).decode(),
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "shares": self.s.shares(labels),
                "colors": colors,
                "latency_ms": round(ms, 2),
                "runtime": self.s.runtime,
                **info,
            }
        )


def check_serve_options(
    port: int = 8000,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    workers: int = DEFAULT_WORKERS,
    queue: int = DEFAULT_QUEUE,
) -> None:
    """One-line :class:`ConfigError` for an option out of range (before anything is loaded)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: expected a TCP port number 1..65535")
    for name, value, top in (
        ("--max-upload-mb", max_upload_mb, 10_000),
        ("--max-megapixels", max_megapixels, 80),
    ):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= top):
            raise ConfigError(f"{name} {value}: expected a number above 0 and at most {top}")
    if not 1 <= workers <= 64:
        raise ConfigError(f"--workers {workers}: expected 1..64 threads")
    if not 0 <= queue <= 1000:
        raise ConfigError(f"--queue {queue}: expected 0..1000 waiting requests")


def create_app(  # noqa: ANN201 - FastAPI
    segmenter: Segmenter,
    *,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    title: str = "effseg",
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    workers: int = DEFAULT_WORKERS,
    queue: int = DEFAULT_QUEUE,
):
    """The FastAPI application (see the module docstring for its routes)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException

    check_serve_options(8000, max_upload_mb, max_megapixels, workers, queue)
    max_bytes = int(max_upload_mb * 1e6)
    work = _Work(segmenter, max_bytes, int(max_megapixels * 1e6))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="effseg-serve")
    admission = Admission(workers, queue)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any):  # noqa: ANN202 - the worker threads end with the server
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title=f"{title} - effseg serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.add_middleware(UploadGuard, admission=admission, max_bytes=max_bytes)
    app.state.admission, app.state.pool = admission, pool
    page = (
        PAGE.replace("{{TITLE}}", title)
        .replace("{{MAX_MB}}", f"{max_upload_mb:g}")
        .replace("{{MAX_MP}}", f"{max_megapixels:g}")
    )
    p = segmenter.predictor
    info_answer = {
        "model": title,
        "classes": list(p.classes),
        "palette": np.asarray(p.palette).tolist(),
        "runtime": segmenter.runtime,
        "max_upload_mb": max_upload_mb,
        "max_megapixels": max_megapixels,
    }

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(EffsegError)
    async def _bad_input(_request: Request, err: EffsegError) -> JSONResponse:
        headers = {"Retry-After": str(err.retry_after)} if hasattr(err, "retry_after") else None
        return error(status_of(err), str(err), headers)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException) -> JSONResponse:
        if err.status_code == 404:
            return error(
                404, f"no such route: {request.url.path} (routes: /, /api/info, /api/predict, /api/view)"
            )
        if err.status_code == 405:
            return error(405, f"{request.method} is not allowed on {request.url.path}")
        detail = err.detail if isinstance(err.detail, str) else str(err.detail)
        return error(err.status_code, " ".join(detail.split()), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = (err.errors() or [{}])[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("body", "query"))
        return error(400, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    async def upload(request: Request) -> Body:
        """The body's chunks as they arrive (the size limit enforced on the way in by
        :class:`UploadGuard`) and its Content-Type; parsed in the worker (:func:`form_file`)."""
        chunks = [chunk async for chunk in request.stream() if chunk]
        return chunks, request.headers.get("content-type", "")

    async def off_loop(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return info_answer

    def json_answer(content: bytes) -> Response:
        return Response(content, media_type="application/json")

    @app.post("/api/predict")
    async def predict(request: Request) -> Response:
        return json_answer(await off_loop(work.predict, await upload(request)))

    @app.post("/api/predict.png")
    async def predict_png(request: Request) -> Response:
        kind = request.query_params.get("kind", "ids")
        if kind not in PICTURE_KINDS:
            raise DataError(f"kind={kind!r}: expected one of {', '.join(PICTURE_KINDS)}")
        png, ms, extra = await off_loop(work.png, await upload(request), kind)
        headers = {"X-Latency-Ms": f"{ms:.2f}"}
        if extra.get("note"):
            headers["X-Effseg-Note"] = extra["note"]
        return Response(png, media_type="image/png", headers=headers)

    @app.post("/api/view")
    async def view(request: Request) -> Response:
        return json_answer(await off_loop(work.view, await upload(request)))

    return app


def load_segmenter(model: str, runtime: str = "eager", device: str = "cpu") -> Segmenter:
    """Load ``model`` (any :func:`effseg.load` spec) with ``runtime`` for serving. ``auto`` and the
    onnxruntime runtimes export per image size (kept in a bounded cache); ``auto`` times on, and
    the int8 runtimes calibrate on, the package's street photos (:func:`effseg.sample_images`)."""
    from effseg.api import load
    from effseg.data.image import read_image
    from effseg.pipeline.engines import build_engine
    from effseg.samples import sample_images

    predictor = load(model, device=device, batch_size=1)
    samples = [read_image(p) for p in sample_images()]
    engine = build_engine(predictor, runtime, model, samples)
    engine(samples[0])  # warm-up: the first call's allocations are not a user's latency
    return Segmenter(predictor, engine)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (listening starts when the server runs); a port in use,
    a privileged port or an address this computer does not have is one :class:`ConfigError` line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise ConfigError(f"--host {host}: not an address of this computer ({err})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        why = "the port is in use (another server?)" if err.errno == 98 else (err.strerror or str(err))
        raise ConfigError(f"cannot listen on {host}:{port}: {why}; choose another --port") from None
    sock.set_inheritable(True)
    return sock


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    runtime: str = "eager",
    device: str = "cpu",
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    workers: int = DEFAULT_WORKERS,
    queue: int = DEFAULT_QUEUE,
) -> None:
    """Bind ``host:port``, load ``model`` and serve the app with uvicorn until Ctrl-C. The
    ``on http://...`` line is printed once the port is bound and the model loaded."""
    check_serve_options(port, max_upload_mb, max_megapixels, workers, queue)
    try:
        import uvicorn
    except ImportError as err:
        raise DataError(
            f"effseg serve needs uvicorn: pip install uvicorn fastapi python-multipart ({err})"
        ) from None
    sock = bind_socket(host, port)
    try:
        segmenter = load_segmenter(model, runtime, device)
        app = create_app(
            segmenter,
            max_upload_mb=max_upload_mb,
            title=str(model),
            max_megapixels=max_megapixels,
            workers=workers,
            queue=queue,
        )
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        gc.collect()
        gc.freeze()  # the model's and the app's objects: no full collection walks them mid-request
        shown = f"[{host}]" if ":" in host else host
        print(f"effseg serve: {model} ({segmenter.runtime}) on http://{shown}:{port}/", flush=True)
        server.run(sockets=[sock])
    finally:
        sock.close()
