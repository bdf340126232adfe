"""Running the real app and driving it with Debian's headless Chromium through Playwright.

Used by every ``@pytest.mark.browser`` test: ``app_url`` starts ``streamlit run`` on a free
loopback port (with the test's environment) and stops it afterwards; ``browser_page`` opens
a page in Chromium with a fake webcam fed from a y4m the test wrote.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
DOC_SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_y4m(path: Path, frame: np.ndarray | list[np.ndarray], frames: int = 30, fps: int = 15) -> Path:
    """A looping fake-webcam video (H, W even): one frame repeated ``frames`` times, or a list of
    frames played once each, at ``fps``. Grey frames carry no colour; RGB frames are converted to YUV 4:2:0."""
    import cv2

    seq = frame if isinstance(frame, list) else [frame] * frames
    h, w = seq[0].shape[:2]
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for f in seq:
            if f.ndim == 2:
                chroma = np.full((h // 2) * (w // 2), 128, np.uint8).tobytes()
                fh.write(b"FRAME\n" + f.astype(np.uint8).tobytes() + chroma + chroma)
            else:
                fh.write(b"FRAME\n" + cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def start_app(env: dict[str, str], port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early:\n{proc.stdout.read().decode(errors='replace')}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("streamlit did not become healthy within 60 s")


@pytest.fixture
def app_url() -> Iterator[str]:
    """The app on a free port, with the test's isolated FER_* environment."""
    port = free_port()
    proc = start_app(dict(os.environ), port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def chromium(tmp_path: Path):
    """A Playwright Chromium (Debian's) with a fake webcam; set ``tmp_path/'camera.y4m'`` first if needed."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (make test installs it with apt-get)")
    from playwright.sync_api import sync_playwright

    y4m = tmp_path / "camera.y4m"
    if not y4m.exists():
        write_y4m(y4m, np.full((480, 640), 90, np.uint8))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={y4m}"])
        yield browser
        browser.close()


def wait_ready(page, timeout_ms: int = 60_000) -> None:
    """Connected to the server and the script has finished running."""
    page.wait_for_selector("[data-testid=stAppViewContainer]", timeout=timeout_ms)
    page.wait_for_selector("[data-testid=stApp][data-test-connection-state=CONNECTED]", timeout=timeout_ms)
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=timeout_ms)


def open_page(page, title: str, timeout_ms: int = 60_000) -> None:
    """Click the page's link in the app's sidebar navigation, as a visitor does, and wait until it has run."""
    page.locator("[data-testid=stSidebarNav] a", has_text=title).first.click()
    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=timeout_ms)
    wait_ready(page, timeout_ms=timeout_ms)


def screenshot(page, name: str, doc: str | None = None) -> Path:
    """A full-page screenshot in tests/artifacts/; with ``FER_DOC_SCREENSHOTS=1`` (``make screenshots``)
    also the visible part as ``docs/screenshots/<doc>.png``, the README's pictures."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if doc and os.environ.get("FER_DOC_SCREENSHOTS") == "1":
        DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOC_SCREENSHOTS / f"{doc}.png"))
    return path
