"""The real app in headless Chromium: upload a group photo and see every face labelled; start
the webcam (a fake camera playing a frame of FER-2013 faces) and see annotated frames arrive.
Screenshots go to tests/artifacts/."""

from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import pytest

from fer_core.pipeline_bench import compose_frame
from fer_core.webcam import WEBCAM_SETTINGS
from tests.browser_support import screenshot, wait_ready, write_y4m
from tests.test_recognizer import real_layout, tiny_weights  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.data]


@pytest.fixture
def faces_frame(real_data: Path, tmp_path: Path):
    """A 640x480 frame of two FER-2013 faces, as the fake camera's video and as a photo."""
    frame, boxes = compose_frame(real_layout(real_data, 2, WEBCAM_SETTINGS))
    write_y4m(tmp_path / "camera.y4m", frame, frames=30)  # read by the chromium fixture
    photo = tmp_path / "group.png"
    cv2.imwrite(str(photo), frame)
    return photo, boxes


def _open_page(page, title: str) -> None:
    """Click the page's link in the app's sidebar navigation, as a visitor does, and wait for it."""
    page.locator("[data-testid=stSidebarNav] a", has_text=title).first.click()
    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=60_000)
    wait_ready(page)


def _live_status(page) -> tuple[float, int, int] | None:
    text = page.locator("[data-testid=stMarkdownContainer]", has_text="frames processed").first.inner_text(
        timeout=1000)
    m = re.search(r"([\d.]+) FPS .* (\d+) frames processed · (\d+) face", text)
    return (float(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def test_photo_upload_and_live_webcam(tiny_weights, faces_frame, app_url, chromium):  # noqa: F811
    photo, boxes = faces_frame
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
    page = context.new_page()

    # ---------------------------------------------------------------- photo
    page.goto(app_url)
    wait_ready(page)
    page.locator("[data-testid=stSidebarNav]", has_text="Recognise").wait_for(timeout=30_000)  # st.navigation
    _open_page(page, "Photo")
    page.locator("input[type=file]").first.set_input_files(str(photo))
    page.get_by_text("All results").wait_for(timeout=60_000)
    wait_ready(page)
    page.get_by_text(f"{len(boxes)} faces · 640×480").wait_for(timeout=10_000)
    assert page.locator("[data-testid=stException]").count() == 0
    page.locator("[data-testid=stPlotlyChart] .main-svg").first.wait_for(timeout=30_000)  # probability bars
    time.sleep(1)  # plotly's draw transition
    screenshot(page, "photo_group")

    # ---------------------------------------------------------------- webcam
    _open_page(page, "Webcam")
    page.get_by_text("Camera off").wait_for(timeout=30_000)
    page.frame_locator("iframe").first.get_by_role("button", name="START").click()
    status = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            status = _live_status(page)
        except Exception:  # not rendered yet
            status = None
        if status and status[1] >= 15 and status[0] > 0 and status[2] >= 1:
            break
        time.sleep(1)
    assert status is not None, "the live status never appeared: no frame reached the callback"
    fps, frames, faces = status
    assert frames >= 15 and fps > 0, status
    assert faces >= 1, status  # faces were found in the frames the browser sent
    page.get_by_text(re.compile(r"Face #\d+, last 30 s")).wait_for(timeout=30_000)  # the live chart is fed
    video = page.frame_locator("iframe").first.locator("video")
    assert video.count() >= 1
    time.sleep(2)  # let a few annotated frames play before the screenshot
    screenshot(page, "webcam_live")
    page.frame_locator("iframe").first.get_by_role("button", name="STOP").click()
    page.get_by_text("Camera off").wait_for(timeout=30_000)  # the page leaves its live loop cleanly
    assert page.locator("[data-testid=stException]").count() == 0
    context.close()
