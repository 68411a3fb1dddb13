"""Screenshot of the `effseg serve` page for the docs (docs/img/serve.png).

    python benchmarks/serve_screenshot.py camvid-<name> ../shared/camvid/val/0016E5_07959.jpg
    python benchmarks/serve_screenshot.py --arch lraspp:mobilenetv3_large IMAGE   # random weights

Starts the app on a free local port, drives headless Debian chromium (Playwright,
``/usr/bin/chromium``, never a downloaded browser) to upload IMAGE, waits for the result and
saves the page.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="anything effseg.load accepts")
    parser.add_argument("image", type=Path)
    parser.add_argument(
        "--arch", help="HEAD:BACKBONE with random weights and the CamVid classes instead of MODEL"
    )
    parser.add_argument("--runtime", default="eager")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "serve.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    if not args.model and not args.arch:
        parser.error("give MODEL or --arch")

    import uvicorn
    from playwright.sync_api import sync_playwright

    from effseg.app.serve import create_app, load_segmenter

    model = args.model
    if args.arch:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_pipeline import random_checkpoint

        model = str(random_checkpoint(args.arch, Path(tempfile.mkdtemp()) / "model.pt"))
    title = args.model or f"{args.arch} (random weights)"
    app = create_app(load_segmenter(model, args.runtime), title=title)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1000, "height": 720})
            page.goto(f"http://127.0.0.1:{port}/")
            page.set_input_files("#file", str(args.image))
            page.wait_for_selector("#result.shown", timeout=120_000)
            page.wait_for_function("document.getElementById('overlay').complete")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
