"""Screenshots of TensorBoard as a user opens it on a run, in a real (headless) browser.

Starts `tensorboard --logdir RUN` on a free local port, waits until it answers, and has headless
Chromium (driven by Playwright, so the charts' WebGL lines are drawn) load each page and save a PNG:
the first page TensorBoard opens on, and the CUSTOM SCALARS tab (mixalign's layout: the distances
to the target first). Needs `pip install playwright` and a Chromium on PATH (`chromium` or
`chromium-browser`; on Debian: apt-get install chromium); nothing is downloaded.

    python scripts/tensorboard_screenshot.py runs/pile/lightning_logs/version_0 --out docs/tensorboard
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PAGES = {"first-page": "", "custom-scalars": "#custom_scalars"}  # file suffix -> URL fragment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, seconds: float = 60.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"tensorboard did not answer at {url} within {seconds:.0f} s")


def screenshots(browser: str, url: str, prefix: str, size: str, settle_ms: int) -> None:
    """Each page of PAGES, given `settle_ms` to fetch and draw its charts, as <prefix>-<page>.png."""
    from playwright.sync_api import sync_playwright

    width, height = (int(v) for v in size.split(","))
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        page = chromium.new_page(viewport={"width": width, "height": height})
        for name, fragment in PAGES.items():
            out = Path(f"{prefix}-{name}.png")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.goto(url + fragment)
            page.wait_for_timeout(settle_ms)
            page.screenshot(path=str(out))
            print(f"wrote {out}")
        chromium.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", help="a run directory (or a folder of runs) with TensorBoard events")
    parser.add_argument("--out", default="docs/tensorboard", help="PNG path prefix: <out>-<page>.png")
    parser.add_argument("--size", default="1400,1000", help="browser window, width,height in pixels")
    parser.add_argument("--settle-ms", type=int, default=8000, help="time each page gets to load and draw")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("no chromium on PATH: install one (Debian: apt-get install chromium)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir, "--port", str(port),
                               "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(url)
        time.sleep(3)  # let it read the event files
        screenshots(browser, url, args.out, args.size, args.settle_ms)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
