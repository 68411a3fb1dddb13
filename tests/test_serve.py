"""`effseg serve`: upload, result, bad uploads (framework test client) and a real headless browser."""

from __future__ import annotations

import base64
import io
import shutil
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effseg
from effseg.data.visualize import add_legend, colorize, overlay
from effseg.pipeline.engines import TorchEngine

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402

from effseg.app.serve import Segmenter, create_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> Segmenter:
    torch.manual_seed(0)
    model = effseg.build_model("lraspp", backbone="mobilenetv3_small", num_classes=3, aux=False)
    path = tmp_path_factory.mktemp("serve") / "m.pt"
    torch.save(
        {
            "model": model.state_dict(),
            "model_config": model.config,
            "classes": ["road", "car", "sky"],
            "palette": [[128, 64, 128], [0, 0, 142], [70, 130, 180]],
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "config": {},
        },
        path,
    )
    predictor = effseg.load(path)
    return Segmenter(predictor, TorchEngine(predictor))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    yy, xx = np.mgrid[0:48, 0:64]
    return np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1).astype(np.uint8)


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _bomb() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_upload_and_results(segmenter: Segmenter, photo: np.ndarray) -> None:
    client = TestClient(create_app(segmenter, title="tiny"))
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and "tiny" in page.text
    expected = segmenter.predictor.predict(photo)
    reply = client.post("/api/predict", files={"file": ("p.png", _png_bytes(photo), "image/png")})
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert (data["width"], data["height"]) == (64, 48) and data["runtime"] == "eager"
    assert "labels" not in data  # the compact answer: a PNG of the class ids, not a list of lists
    labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(data["labels_png"]))))
    np.testing.assert_array_equal(labels, expected)
    counts = np.bincount(expected.ravel(), minlength=3)
    shares = {c: counts[i] / expected.size for i, c in enumerate(["road", "car", "sky"]) if counts[i]}
    assert data["shares"] == pytest.approx(shares, abs=1e-5)
    assert data["latency_ms"] > 0
    # PNG endpoints for scripts
    ids = client.post("/api/predict.png?kind=ids", files={"file": ("p.png", _png_bytes(photo))})
    assert ids.headers["content-type"] == "image/png" and float(ids.headers["x-latency-ms"]) > 0
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(ids.content))), expected)
    over = client.post("/api/predict.png?kind=overlay", files={"file": ("p.png", _png_bytes(photo))})
    p = segmenter.predictor
    want = add_legend(overlay(photo, colorize(expected, p.palette), 0.5), p.classes, p.palette, expected)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(over.content))), want)
    view = client.post("/api/view", files={"file": ("p.png", _png_bytes(photo))}).json()
    assert set(view) >= {"overlay", "shares", "latency_ms", "colors"} and view["colors"]["road"] == "#804080"


def test_bad_uploads_get_one_line_and_server_keeps_serving(segmenter: Segmenter, photo: np.ndarray) -> None:
    client = TestClient(create_app(segmenter, max_upload_mb=0.05))
    cases = [
        (b"hello, not an image", 400, "not a readable image"),
        (b"", 400, "empty"),
        (_bomb(), 400, "decompression bomb"),
        (np.random.default_rng(0).bytes(60_000), 413, "the limit is"),
    ]
    for payload, status, text in cases:
        reply = client.post("/api/view", files={"file": ("x.png", payload, "image/png")})
        assert reply.status_code == status, reply.text
        error = reply.json()["error"]
        assert text in error and "\n" not in error
    bomb = client.post("/api/predict", files={"file": ("b.png", _bomb())})
    assert "900000000 pixels" in bomb.json()["error"]
    assert client.post("/api/view", files={"file": ("p.png", _png_bytes(photo))}).status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_browser_uploads_and_reads_result(segmenter: Segmenter, photo: np.ndarray, tmp_path: Path) -> None:
    """Headless Debian chromium (driven by Playwright) uploads an image and reads the page."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip(f"no browser: {CHROMIUM} is not installed (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    uvicorn = pytest.importorskip("uvicorn")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(segmenter, title="tiny"), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        (tmp_path / "street.png").write_bytes(_png_bytes(photo))
        (tmp_path / "notes.txt").write_text("not an image")
        expected = segmenter.shares(segmenter.predictor.predict(photo))
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, headless=True,
                                         args=CHROMIUM_FLAGS)  # fmt: skip
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                page.set_input_files("#file", str(tmp_path / "street.png"))
                page.wait_for_selector("#result.shown", timeout=30_000)
                rows = page.locator("#shares tr.share").all_inner_texts()
                names = [r.split()[0] for r in rows]
                assert names == list(expected)
                assert float(page.inner_text("#latency")) > 0
                assert page.inner_text("#size") == "64x48"
                width = page.eval_on_selector("#overlay", "img => img.naturalWidth")
                assert width == 64  # the overlay image decoded in the browser (legend below it)
                page.set_input_files("#file", str(tmp_path / "notes.txt"))
                page.wait_for_function("document.getElementById('error').textContent.length > 0")
                assert "not a readable image" in page.inner_text("#error")
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
