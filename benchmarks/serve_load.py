"""Load test of ``effseg serve`` on loopback (bounded): is the server responsive under load, is its
memory flat, does every refused request get a 413/400/503 with a one-line ``{"error": ...}``?

    nice -n 10 python benchmarks/serve_load.py                       # camvid-ddrnet23_slim, eager
    python benchmarks/serve_load.py --model camvid-ddrnet23_slim --clients 4 --requests 50 --out r.md

Starts ``effseg serve MODEL`` on a free 127.0.0.1 port (a child process, ended at the end), then:

1. load: ``--clients`` threads send ``--requests`` uploads each to ``/api/predict`` (the package's
   480x360 street photos, JPEG), and one 12-megapixel JPEG (a photo upscaled to 4000x3000) goes
   in at the start; meanwhile ``/api/info`` is asked every 50 ms. Reported: requests/s, latency
   p50/p99 (client side, upload to answer), ``/api/info`` p50/p99/max while predictions run, the
   12-megapixel photo's time and the server's note, RSS of the server before, after 20 and after
   all requests (``/proc/PID/status``).
2. refusals: an upload declaring 50 MB (nothing sent after the headers), a text file, a missing
   form field, and a burst of 2 x (workers + queue) simultaneous uploads (the surplus must get 503
   with ``Retry-After``). Every non-200 answer is checked: status 400/413/503 and exactly
   ``{"error": "<one line>"}``.

Targets (issue 25): ``/api/info`` < 50 ms while predictions run; RSS after all requests within 10%
of after 20; every failed request a 413/400/503 with a one-line error.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

INFO_EVERY_S = 0.05


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def multipart(data: bytes, name: str = "photo.jpg", field: str = "file") -> tuple[bytes, str]:
    boundary = "effsegloadtest"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return (
        head.encode() + data + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def request(port: int, method: str, path: str, body: bytes | None = None, ctype: str | None = None):
    """``(status, headers, body bytes, seconds)`` of one request on a new connection."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype} if ctype else {})
        reply = conn.getresponse()
        data = reply.read()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, data, time.perf_counter() - t0
    finally:
        conn.close()


def jpeg(array: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def check_error(status: int, data: bytes, problems: list[str], what: str) -> None:
    """A refused request must be 400/413/503 with exactly ``{"error": "<one line>"}``."""
    try:
        body = json.loads(data)
    except ValueError:
        problems.append(f"{what}: {status} with a non-JSON body {data[:80]!r}")
        return
    if status not in (400, 413, 503):
        problems.append(f"{what}: status {status}")
    if list(body) != ["error"] or not isinstance(body["error"], str) or "\n" in body["error"]:
        problems.append(f"{what}: body {body!r} is not one-line {{'error': ...}}")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="camvid-ddrnet23_slim")
    parser.add_argument("--runtime", default="eager")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=50, help="per client")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--queue", type=int, default=8)
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)

    from effseg.data.image import read_image
    from effseg.samples import sample_images

    photos = [jpeg(read_image(p)) for p in sample_images()]
    big = read_image(sample_images()[0])
    import cv2

    big_jpeg = jpeg(cv2.resize(big, (4000, 3000), interpolation=cv2.INTER_CUBIC), 85)

    port = free_port()
    cmd = [sys.executable, "-m", "effseg", "serve", args.model, "--port", str(port),
           "--runtime", args.runtime, "--workers", str(args.workers), "--queue", str(args.queue)]  # fmt: skip
    errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 - read only if the server fails to start
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if server.poll() is not None:
                errors.seek(0)
                print(errors.read(), file=sys.stderr)
                return 1
            try:
                if request(port, "GET", "/api/info")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        banner = server.stdout.readline().strip()
        return run(args, port, server.pid, photos, big_jpeg, banner)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def run(args: argparse.Namespace, port: int, pid: int, photos: list[bytes], big: bytes, banner: str) -> int:
    problems: list[str] = []
    rss = {"before": rss_mb(pid)}
    lock = threading.Lock()
    done: list[tuple[int, float]] = []
    info_ms: list[float] = []
    running = threading.Event()
    running.set()
    big_result: dict = {}

    def client(k: int) -> None:
        for i in range(args.requests):
            body, ctype = multipart(photos[(k + i) % len(photos)])
            status, _, data, s = request(port, "POST", "/api/predict", body, ctype)
            if status != 200:
                check_error(status, data, problems, f"client {k} request {i}")
            with lock:
                done.append((status, s))
                if len(done) == min(20, args.clients * args.requests):
                    rss["after_20"] = rss_mb(pid)

    def big_photo() -> None:
        body, ctype = multipart(big, "12mp.jpg")
        status, _, data, s = request(port, "POST", "/api/predict", body, ctype)
        answer = json.loads(data)
        big_result.update(status=status, seconds=s, note=answer.get("note") or answer.get("error"))

    def info_poller() -> None:
        while running.is_set():
            status, _, _, s = request(port, "GET", "/api/info")
            if status != 200:
                problems.append(f"/api/info: status {status}")
            info_ms.append(s * 1000)
            time.sleep(INFO_EVERY_S)

    poller = threading.Thread(target=info_poller)
    threads = [threading.Thread(target=big_photo)] + [
        threading.Thread(target=client, args=(k,)) for k in range(args.clients)
    ]
    t0 = time.perf_counter()
    poller.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    running.clear()
    poller.join()
    rss["after_all"] = rss_mb(pid)
    ok = [s for status, s in done if status == 200]

    # refusals
    refusals: dict[str, int] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        raw = b""
        while b"}" not in raw:
            more = s.recv(65536)
            if not more:
                break
            raw += more
    status = int(raw.split(b" ", 2)[1])
    check_error(status, raw.split(b"\r\n\r\n", 1)[1], problems, "50 MB declared")
    refusals[f"50 MB declared: {status}"] = 1
    for what, (body, ctype) in {
        "text file": multipart(b"this is not an image", "notes.txt"),
        "no file field": multipart(photos[0], field="image"),
    }.items():
        status, _, data, _ = request(port, "POST", "/api/predict", body, ctype)
        check_error(status, data, problems, what)
        refusals[f"{what}: {status}"] = 1
    burst_n = 2 * (args.workers + args.queue)
    burst: list[tuple[int, dict, bytes]] = []

    def one() -> None:
        body, ctype = multipart(photos[0])
        status, headers, data, _ = request(port, "POST", "/api/predict", body, ctype)
        with lock:
            burst.append((status, headers, data))

    burst_threads = [threading.Thread(target=one) for _ in range(burst_n)]
    for t in burst_threads:
        t.start()
    for t in burst_threads:
        t.join()
    for status, headers, data in burst:
        if status != 200:
            check_error(status, data, problems, "burst")
            if status == 503 and "retry-after" not in headers:
                problems.append("burst: 503 without Retry-After")
    busy = sum(1 for st, _, _ in burst if st == 503)
    refusals[f"burst of {burst_n}: {busy} x 503, {sum(1 for st, _, _ in burst if st == 200)} x 200"] = 1

    n = len(done)
    first = min(20, n)
    drift = (rss["after_all"] - rss["after_20"]) / rss["after_20"] * 100
    lines = [
        f"`effseg serve {args.model}` ({args.runtime}, {args.workers} workers, queue {args.queue}), "
        f"{args.clients} clients x {args.requests} requests of a 480x360 JPEG + one 12-megapixel JPEG "
        f"({len(big) / 1e6:.1f} MB), loopback:",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests | {n} in {wall:.1f} s: {n / wall:.2f} requests/s ({len(ok)} answered 200) |",
        f"| latency p50 / p99 (client side) | {pct(ok, 50) * 1000:.0f} / {pct(ok, 99) * 1000:.0f} ms |",
        f"| `/api/info` while predicting: p50 / p99 / max ({len(info_ms)} asks) | "
        f"{pct(info_ms, 50):.1f} / {pct(info_ms, 99):.1f} / {max(info_ms, default=float('nan')):.1f} ms |",
        f"| 12-megapixel photo | {big_result.get('status')} in {big_result.get('seconds', 0):.2f} s: "
        f"{big_result.get('note')} |",
        f"| server RSS before / after {first} / after {n} | {rss['before']:.0f} / {rss['after_20']:.0f} / "
        f"{rss['after_all']:.0f} MB ({drift:+.1f}% from {first} to {n}) |",
        f"| refused requests | {'; '.join(refusals)} |",
        "| problems | "
        + ("; ".join(problems[:5]) if problems else "none: every refusal a 400/413/503 with a one-line error")
        + " |",
        "",
        f"server: {banner}",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    targets = max(info_ms, default=0) < 50 and abs(drift) <= 10 and not problems
    print(
        f"targets ({'met' if targets else 'NOT met'}): /api/info < 50 ms, RSS within 10%, "
        "refusals well-formed"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
