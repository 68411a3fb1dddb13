"""Issue 25, the server: responsive while predicting (work off the event loop), a bounded queue
(503 + Retry-After), the upload limit while streaming, the pixel cap, one error shape for every
4xx, validated options, the banner after the bind; the runtime cache bounded and self-healing."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effseg
from effseg.cli import main as cli_main
from effseg.pipeline.engines import TorchEngine
from effseg.size import Size

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
uvicorn = pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

from effseg.app.serve import Segmenter, create_app  # noqa: E402
from effseg.app.serve_upload import fit_size  # noqa: E402


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    torch.manual_seed(0)
    model = effseg.build_model("lraspp", backbone="mobilenetv3_small", num_classes=3, aux=False)
    path = tmp_path_factory.mktemp("serve") / "m.pt"
    torch.save(
        {"model": model.state_dict(), "model_config": model.config, "classes": ["road", "car", "sky"]}, path
    )
    return effseg.load(path)


class GatedEngine(TorchEngine):
    """The eager engine, held at the door until ``gate`` opens (``entered`` tells that it waits)."""

    def __init__(self, predictor) -> None:  # noqa: ANN001
        super().__init__(predictor)
        self.gate, self.entered = threading.Event(), threading.Event()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(30)
        return super().__call__(image)


def _png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _photo(w: int = 64, h: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)


def _multipart(data: bytes, field: str = "file") -> tuple[bytes, str]:
    boundary = "effsegboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class Server:
    """``create_app(...)`` under uvicorn on a free loopback port, in a thread."""

    def __init__(self, app) -> None:  # noqa: ANN001
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):  # noqa: ANN201
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            reply = conn.getresponse()
            return reply.status, dict(reply.getheaders()), reply.read()
        finally:
            conn.close()

    def post_image(self, data: bytes, path: str = "/api/predict"):  # noqa: ANN201
        body, kind = _multipart(data)
        return self.request("POST", path, body, {"Content-Type": kind})


def test_info_answers_while_predictions_run_and_a_full_queue_gets_503(predictor) -> None:
    engine = GatedEngine(predictor)
    app = create_app(Segmenter(predictor, engine), workers=1, queue=1)
    image = _png(_photo())
    results: dict[str, tuple] = {}
    with Server(app) as server:
        first = threading.Thread(target=lambda: results.update(a=server.post_image(image)))
        first.start()
        assert engine.entered.wait(30)  # the only worker is inside the model, held there
        t0 = time.perf_counter()
        status, _, body = server.request("GET", "/api/info")
        assert status == 200 and json.loads(body)["classes"] == ["road", "car", "sky"]
        assert time.perf_counter() - t0 < 1.0  # the event loop is free while the model runs
        second = threading.Thread(target=lambda: results.update(b=server.post_image(image)))
        second.start()
        deadline = time.monotonic() + 10
        while app.state.admission.pending < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, headers, body = server.post_image(image)  # worker busy, queue (1) full
        assert status == 503 and int(headers["retry-after"]) >= 1
        error = json.loads(body)
        assert list(error) == ["error"] and error["error"].startswith("the server is busy (2 requests")
        engine.gate.set()
        first.join(30)
        second.join(30)
    assert results["a"][0] == 200 and results["b"][0] == 200


def _raw(port: int, head: bytes, chunks: list[bytes] = ()) -> tuple[int, dict]:  # type: ignore[assignment]
    """Send ``head`` then ``chunks`` on a raw socket (ignoring a reset once the server answered);
    returns the status and JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        try:
            for chunk in chunks:
                s.sendall(chunk)
        except OSError:
            pass  # the server answered and closed: it does not read an oversized body
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                data.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]
            ):
                more = s.recv(65536)
                if not more:
                    break
                data += more
        except (IndexError, ValueError, OSError):
            pass
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


def test_upload_limit_is_enforced_while_streaming(predictor) -> None:
    app = create_app(Segmenter(predictor, TorchEngine(predictor)), max_upload_mb=0.2)
    with Server(app) as server:
        head = (
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 999000000\r\n\r\n"
        )
        status, body = _raw(server.port, head)  # no byte of the body sent: answered from the header
        assert (status, body) == (413, {"error": "the upload is 999 MB; the limit is 0.2 MB"})
        chunked = (
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        pieces = [b"%x\r\n" % len(c) + c + b"\r\n" for c in [part] + [b"\0" * 65536] * 64]
        status, body = _raw(server.port, chunked, pieces)  # 4 MB offered, no length declared
        assert status == 413 and body["error"].startswith("the upload is more than 0.")
        assert body["error"].endswith("MB (stopped reading there); the limit is 0.2 MB")
        # the size the file really has, when it fits the body slack but not the limit
        status, _, raw = server.post_image(b"\0" * 230_000)
        assert (status, json.loads(raw)) == (413, {"error": "the upload is 0.23 MB; the limit is 0.2 MB"})
        assert server.post_image(_png(_photo()))[0] == 200  # still serving


def test_every_4xx_has_one_error_shape(predictor) -> None:
    client = TestClient(create_app(Segmenter(predictor, TorchEngine(predictor))))
    image = _png(_photo())
    cases = [
        (client.post("/api/predict", files={"other": ("x.png", image)}), 400, "no image in the request"),
        (client.post("/api/predict", data={"a": "b"}), 400, "multipart form field 'file'"),
        (client.post("/api/predict.png?kind=jpeg", files={"file": ("x.png", image)}), 400, "kind='jpeg'"),
        (client.get("/nope"), 404, "no such route: /nope"),
        (client.post("/api/info"), 405, "POST is not allowed on /api/info"),
        (
            client.post("/api/view", content=b"garbage", headers={"Content-Type": "multipart/form-data"}),
            400,
            "",
        ),
        (client.post("/api/view", files={"file": ("x.png", b"not an image")}), 400, "not a readable image"),
    ]
    for reply, status, text in cases:
        assert reply.status_code == status, reply.text
        body = reply.json()
        assert list(body) == ["error"] and text in body["error"] and "\n" not in body["error"], body
        assert "<_io." not in body["error"]


def test_huge_photos_are_resized_and_the_answer_says_so(predictor) -> None:
    client = TestClient(create_app(Segmenter(predictor, TorchEngine(predictor)), max_megapixels=0.5))
    photo = _photo(2400, 1600)
    for fmt in ("JPEG", "PNG"):
        data = client.post("/api/predict", files={"file": ("big", _png(photo, fmt))}).json()
        assert (data["width"], data["height"]) == (866, 577) and data["resized_from"] == [2400, 1600]
        assert (
            data["note"]
            == "resized from 2400x1600 to 866x577 (0.5 megapixels): uploads above 0.5 megapixels are resized"
        )
    small = client.post("/api/view", files={"file": ("s.png", _png(_photo()))}).json()
    assert "note" not in small and (small["width"], small["height"]) == (64, 48)
    # a model with its own input size: the smallest size that still covers it
    assert fit_size(4000, 3000, 4_000_000, Size(h=360, w=480)) == (480, 360)
    assert fit_size(3840, 2160, 4_000_000, Size(h=360, w=480)) == (640, 360)
    assert fit_size(1000, 1000, 4_000_000, Size(h=360, w=480)) == (1000, 1000)  # under the cap: as is
    assert fit_size(20000, 200, 1_000_000, Size(h=360, w=480)) == (10000, 100)  # never above the cap


def test_form_parsing_and_encoding_run_in_the_workers_not_on_the_loop(predictor, monkeypatch) -> None:
    """The event loop only passes chunks in and bytes out: the multipart parse (python-multipart,
    ~1 ms per MB) and the JSON encoding of the answer happen in the ``effseg-serve`` threads."""
    import effseg.app.serve as serve_module

    seen: dict[str, list[str]] = {"parse": [], "json": []}

    def spy(name: str, fn):  # noqa: ANN001, ANN202
        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            seen[name].append(threading.current_thread().name)
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(serve_module, "form_file", spy("parse", serve_module.form_file))
    monkeypatch.setattr(serve_module, "_json", spy("json", serve_module._json))
    client = TestClient(create_app(Segmenter(predictor, TorchEngine(predictor))))
    for route in ("/api/predict", "/api/view"):
        reply = client.post(route, files={"file": ("x.png", _png(_photo()))})
        assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
        assert reply.json()["width"] == 64
    assert len(seen["parse"]) == 2 and len(seen["json"]) == 2, seen
    workers = seen["parse"] + seen["json"]  # the pool's threads, not the loop's
    assert all(name.startswith("effseg-serve_") for name in workers), workers


def test_malformed_forms_are_one_line_400s(predictor) -> None:
    client = TestClient(create_app(Segmenter(predictor, TorchEngine(predictor))))
    image = _png(_photo())
    two = client.post("/api/predict", files=[("file", ("a.png", image)), ("file", ("b.png", image))])
    assert (two.status_code, two.json()) == (
        400,
        {"error": "the form holds 2 files in the field 'file'; send one image"},
    )
    many = client.post(
        "/api/predict", data={f"f{i}": "x" for i in range(9)}, files={"file": ("a.png", image)}
    )
    assert (many.status_code, many.json()) == (
        400,
        {"error": "the form has more than 8 fields; send the image alone"},
    )
    body, _ = _multipart(image)
    cut = client.post(
        "/api/predict",
        content=body[:-30],  # the closing boundary is missing
        headers={"Content-Type": "multipart/form-data; boundary=effsegboundary"},
    )
    assert (cut.status_code, cut.json()) == (
        400,
        {"error": "the form ends before its closing boundary: the upload is incomplete; send it again"},
    )
    plain = client.post("/api/predict", content=image, headers={"Content-Type": "image/png"})
    assert plain.status_code == 400 and plain.json()["error"].startswith("no image in the request")
    assert client.post("/api/predict", files={"file": ("a.png", image)}).status_code == 200


def test_serve_freezes_the_loaded_objects_before_serving(predictor, monkeypatch) -> None:
    """A full garbage collection over the loaded model and app (~0.2 s, every thread stopped) must
    not happen while requests are served: ``serve`` moves them to the permanent generation."""
    import gc

    import effseg.app.serve as serve_module

    frozen: list[int] = []
    monkeypatch.setattr(
        serve_module, "load_segmenter", lambda *_args: Segmenter(predictor, TorchEngine(predictor))
    )
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: frozen.append(gc.get_freeze_count())
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        serve_module.serve("tiny", port=port)
    finally:
        gc.unfreeze()
    assert len(frozen) == 1 and frozen[0] > 10_000  # torch, the model, FastAPI: all frozen


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--port", "70000"], "--port 70000: expected a TCP port number 1..65535"),
        (["--port", "0"], "--port 0: expected a TCP port number 1..65535"),
        (["--max-upload-mb", "0"], "--max-upload-mb 0.0: expected a number above 0 and at most 10000"),
        (["--max-upload-mb", "-5"], "--max-upload-mb -5.0: expected a number above 0 and at most 10000"),
        (["--max-upload-mb", "nan"], "--max-upload-mb nan: expected a number above 0 and at most 10000"),
        (["--workers", "0"], "--workers 0: expected 1..64 threads"),
    ],
)
def test_serve_options_are_checked_first(option: list[str], message: str, capsys) -> None:
    assert cli_main(["serve", "no-such-model", *option]) == 2
    out = capsys.readouterr()
    assert out.err.strip() == f"effseg: error: {message}" and out.out == ""


def test_no_banner_when_the_port_is_taken(capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli_main(["serve", "no-such-model", "--port", str(port)]) == 2
    out = capsys.readouterr()
    assert out.out == ""  # no "on http://..." line for a server that never listened
    assert out.err.strip() == (
        f"effseg: error: cannot listen on 127.0.0.1:{port}: the port is in use (another server?); "
        "choose another --port"
    )


# ----------------------------------------------------------------------------- the runtime cache


def test_export_cache_keeps_the_most_recent_sizes(predictor, tmp_path: Path, monkeypatch) -> None:
    from effseg.pipeline import export_cache

    monkeypatch.setattr(export_cache, "MAX_SIZES", 3)
    cache = export_cache.ExportCache(tmp_path, predictor.model, {})
    for h in range(10, 16):
        cache.folder((h, 20))
        time.sleep(0.01)  # distinct modification times
    cache.folder((12, 20))  # used again: most recent
    names = sorted(p.name for p in (tmp_path / cache.hash).iterdir())
    assert names == ["20x12", "20x14", "20x15"]


def test_engine_keeps_a_bounded_number_of_sessions(predictor, monkeypatch) -> None:
    from effseg.pipeline import engines, export_cache

    opened: list[tuple] = []

    class FakeSession:
        def get_inputs(self):  # noqa: ANN202
            return [type("I", (), {"name": "image"})()]

    class FakeCache:
        def onnx(self, net, precision, samples):  # noqa: ANN001, ANN202
            opened.append(net)
            return Path(f"{net[1]}x{net[0]}.onnx")

        def derived(self, base, kind):  # noqa: ANN001, ANN202
            return base

    monkeypatch.setattr(export_cache, "deploy_functions", lambda: (None, lambda p, b: FakeSession(), None))
    engine = engines.OnnxEngine(predictor, FakeCache())
    for h in (10, 11, 12, 13, 14, 10, 14):
        engine._session((h, 20), (h, 20))
    assert len(engine._sessions) == engines.MAX_SESSIONS == 4
    assert opened == [(10, 20), (11, 20), (12, 20), (13, 20), (14, 20), (10, 20)]  # 10 was evicted, 14 kept


def test_a_damaged_cache_entry_is_exported_again_with_a_note(
    predictor, tmp_path: Path, monkeypatch, capsys
) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from effseg.pipeline import export_cache

    def fake_export(model, out, input_size, meta):  # noqa: ANN001, ANN202
        graph = helper.make_graph(
            [helper.make_node("Identity", ["image"], ["logits"])],
            "g",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, *input_size])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, *input_size])],
        )
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), out)

    monkeypatch.setattr(export_cache, "deploy_functions", lambda: (fake_export, None, None))
    cache = export_cache.ExportCache(tmp_path, predictor.model, {})
    fp32 = cache.folder((8, 8)) / "fp32.onnx"
    fake_export(None, fp32, (8, 8), None)
    fp32.write_bytes(fp32.read_bytes()[:-20])  # truncated, as a disk error or a cut copy leaves it
    assert cache.onnx((8, 8), "fp32") == fp32
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"effseg: note: {fp32}: damaged runtime cache entry (")
    assert err[0].endswith("); exporting it again")
    onnx.checker.check_model(onnx.load(str(fp32)))  # healed
    assert cache.onnx((8, 8), "fp32") == fp32 and capsys.readouterr().err == ""
