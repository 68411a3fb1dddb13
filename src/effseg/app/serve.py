"""``effseg serve MODEL``: a small local web app (FastAPI) around one loaded model.

Routes:

- ``GET /``: one page: drop or choose an image, see the overlay with its legend, the class
  shares and the latency.
- ``POST /api/predict`` (multipart field ``file``): JSON ``{"width", "height", "classes",
  "labels" (H rows of W class ids), "shares" ({class: fraction of pixels}), "latency_ms",
  "runtime"}``.
- ``POST /api/predict.png?kind=ids|color|overlay``: a PNG (8-bit class ids, colour mask, or
  overlay with legend) for scripts.
- ``POST /api/view``: what the page shows (overlay PNG as base64, shares, latency).
- ``GET /api/info``: the model's classes, palette and runtime.

A bad upload (not an image, larger than ``max_upload_mb``, a decompression bomb) is answered
with status 400 or 413 and ``{"error": "<one line>"}``; the server keeps serving.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run time.
import base64
import io
import re
import threading
import time
import warnings
from typing import Any

import numpy as np

from effseg.app.serve_page import PAGE
from effseg.data.visualize import add_legend, colorize, overlay
from effseg.errors import DataError, EffsegError

DEFAULT_MAX_UPLOAD_MB = 20.0


def decode_upload(data: bytes, max_bytes: int) -> np.ndarray:
    """Uploaded bytes -> ``(H, W, 3)`` uint8 RGB; :class:`DataError` (one line) for an empty or too
    large upload, a file that is not an image, or a decompression bomb."""
    from PIL import Image, UnidentifiedImageError

    from effseg.api import read_image

    if not data:
        raise DataError("the upload is empty; choose an image file (PNG, JPEG, ...)")
    if len(data) > max_bytes:
        raise DataError(f"the upload is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
            return read_image(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        declared = re.search(r"\((\d+) pixels\)", str(err))
        raise DataError(
            f"the image declares {declared.group(1) if declared else 'too many'} pixels, more than the "
            f"{Image.MAX_IMAGE_PIXELS} allowed: refused as a possible decompression bomb"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"the upload is not a readable image ({type(err).__name__}: {err})") from None


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class Segmenter:
    """One predictor + engine shared by the request threads (calls serialised by a lock)."""

    def __init__(self, predictor: Any, engine: Any) -> None:
        self.predictor, self.engine = predictor, engine
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Class ids ``(H, W)`` uint8 and the latency in ms (model, upsample, argmax)."""
        with self._lock:
            t0 = time.perf_counter()
            labels = self.engine(image)
            return labels, (time.perf_counter() - t0) * 1000.0

    def shares(self, labels: np.ndarray) -> dict[str, float]:
        """Fraction of pixels per class, largest first; classes absent from the image left out."""
        n = len(self.predictor.classes)
        counts = np.bincount(labels.ravel(), minlength=n)[:n]
        order = np.argsort(-counts, kind="stable")
        total = max(int(labels.size), 1)
        return {self.predictor.classes[i]: round(int(counts[i]) / total, 5) for i in order if counts[i]}

    def picture(self, image: np.ndarray, labels: np.ndarray, kind: str) -> np.ndarray:
        p = self.predictor
        color = colorize(labels, p.palette)
        if kind == "ids":
            return labels
        if kind == "color":
            return color
        return add_legend(overlay(image, color, 0.5), p.classes, p.palette, labels)


def create_app(segmenter: Segmenter, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, title: str = "effseg"):  # noqa: ANN201 - FastAPI
    """The FastAPI application (see the module docstring for its routes)."""
    from fastapi import FastAPI, File, Query, Request, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = FastAPI(title=f"{title} - effseg serve", docs_url=None, redoc_url=None)
    max_bytes = int(max_upload_mb * 1e6)
    page = PAGE.replace("{{TITLE}}", title).replace("{{MAX_MB}}", f"{max_upload_mb:g}")

    @app.exception_handler(EffsegError)
    async def _bad_input(_request: Request, err: EffsegError) -> JSONResponse:
        status = 413 if "the limit is" in str(err) else 400
        return JSONResponse({"error": str(err)}, status_code=status)

    async def _read(file: UploadFile) -> np.ndarray:
        data = await file.read(max_bytes + 1)
        return decode_upload(data, max_bytes)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        p = segmenter.predictor
        return {
            "model": title,
            "classes": list(p.classes),
            "palette": np.asarray(p.palette).tolist(),
            "runtime": getattr(segmenter.engine, "name", ""),
        }

    @app.post("/api/predict")
    async def predict(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI style
        image = await _read(file)
        labels, ms = segmenter(image)
        return {
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "classes": list(segmenter.predictor.classes),
            "labels": labels.tolist(),
            "shares": segmenter.shares(labels),
            "latency_ms": round(ms, 2),
            "runtime": getattr(segmenter.engine, "name", ""),
        }

    @app.post("/api/predict.png")
    async def predict_png(
        file: UploadFile = File(...),  # noqa: B008 - FastAPI style
        kind: str = Query("ids", pattern="^(ids|color|overlay)$"),
    ) -> Response:
        image = await _read(file)
        labels, ms = segmenter(image)
        headers = {"X-Latency-Ms": f"{ms:.2f}"}
        return Response(_png(segmenter.picture(image, labels, kind)), media_type="image/png", headers=headers)

    @app.post("/api/view")
    async def view(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI style
        image = await _read(file)
        labels, ms = segmenter(image)
        p = segmenter.predictor
        colors = {c: "#" + bytes(int(v) for v in p.palette[i]).hex() for i, c in enumerate(p.classes)}
        return {
            "overlay": base64.b64encode(_png(segmenter.picture(image, labels, "overlay"))).decode(),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "shares": segmenter.shares(labels),
            "colors": colors,
            "latency_ms": round(ms, 2),
            "runtime": getattr(segmenter.engine, "name", ""),
        }

    return app


def load_segmenter(model: str, runtime: str = "eager", device: str = "cpu") -> Segmenter:
    """Load ``model`` (any :func:`effseg.load` spec) with ``runtime`` for serving. ``auto`` and the
    onnxruntime runtimes export per image size; ``auto`` times on, and the int8 runtimes calibrate
    on, the package's street photos (:func:`effseg.sample_images`), never on a blank frame."""
    from effseg.api import load
    from effseg.data.image import read_image
    from effseg.pipeline.engines import build_engine
    from effseg.samples import sample_images

    predictor = load(model, device=device, batch_size=1)
    samples = [read_image(p) for p in sample_images()]
    engine = build_engine(predictor, runtime, model, samples)
    engine(samples[0])  # warm-up: the first call's allocations are not a user's latency
    return Segmenter(predictor, engine)


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    runtime: str = "eager",
    device: str = "cpu",
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
) -> None:
    """Load ``model`` and serve the app with uvicorn until Ctrl-C."""
    try:
        import uvicorn
    except ImportError as err:
        raise DataError(
            f"effseg serve needs uvicorn: pip install uvicorn fastapi python-multipart ({err})"
        ) from None
    segmenter = load_segmenter(model, runtime, device)
    app = create_app(segmenter, max_upload_mb=max_upload_mb, title=str(model))
    print(f"effseg serve: {model} ({getattr(segmenter.engine, 'name', runtime)}) on http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="warning")
