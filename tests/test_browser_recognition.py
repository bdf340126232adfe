"""The real app in headless Chromium: upload a group photo and see every face labelled; start
the webcam (a fake camera playing a frame of FER-2013 faces, or panning over a scene of real
faces) and see annotated frames arrive with the faces boxed. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import pytest

from fer_core.recognition.pipeline_bench import compose_frame
from fer_core.recognition.webcam import WEBCAM_SETTINGS
from tests.browser_support import open_page, screenshot, wait_ready, write_y4m
from tests.test_detect import FIXTURES
from tests.test_recognizer import real_layout, tiny_weights  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser]


@pytest.fixture
def faces_frame(real_data: Path, tmp_path: Path):
    """A 640x480 frame of two FER-2013 faces, as the fake camera's video and as a photo."""
    frame, boxes = compose_frame(real_layout(real_data, 2, WEBCAM_SETTINGS["haar"]))
    write_y4m(tmp_path / "camera.y4m", frame, frames=30)  # read by the chromium fixture
    photo = tmp_path / "group.png"
    cv2.imwrite(str(photo), frame)
    return photo, boxes


def _live_status(page) -> tuple[float, int, int] | None:
    text = page.locator("[data-testid=stMarkdownContainer]", has_text="frames processed").first.inner_text(
        timeout=1000)
    m = re.search(r"([\d.]+) FPS · \d+×\d+ · .* (\d+) frames processed · (\d+) face", text)
    return (float(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def _poll_live(page, min_faces: int, seconds: float) -> tuple[float, int, int] | None:
    """Poll the live status line until 15 frames were processed with ``min_faces`` in the latest one;
    returns that status, else the best seen (most faces), else None when none appeared."""
    best = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            status = _live_status(page)
        except Exception:  # not rendered yet
            status = None
        if status and (best is None or status[2] >= best[2]):
            best = status
        if status and status[1] >= 15 and status[0] > 0 and status[2] >= min_faces:
            return status
        time.sleep(1)
    return best


def _start_live(page, min_faces: int) -> tuple[float, int, int]:
    """Press START and wait for the stream. A WebRTC negotiation between headless Chromium and the
    server on loopback occasionally never completes (seen once in eight full test runs, with no error
    on either side); a visitor would reload the page, and so does this."""
    for attempt in range(2):
        if attempt:
            page.reload()
            wait_ready(page)
            page.get_by_text("Camera off").wait_for(timeout=30_000)
        page.frame_locator("iframe").first.get_by_role("button", name="START").click()
        status = _poll_live(page, min_faces, 60 if attempt == 0 else 90)
        if status is not None:
            return status
    raise AssertionError("the live status never appeared: no frame reached the callback")


@pytest.fixture
def real_scene_camera(tmp_path: Path) -> int:
    """The fake camera pans across a 800x560 group photo of five real faces (the fixture portraits,
    tilted and mirrored) through a 640x480 window, 100 px right and 50 px down and back; returns
    how many faces stay in view all along."""
    from fer_core.recognition.scenes import load_pictures, photo_group

    scene = photo_group(load_pictures(FIXTURES), shape=(560, 800))
    frames = [scene.image[y:y + 480, x:x + 640] for x, y in
              [(round(100 * t / 20), round(50 * t / 20)) for t in [*range(21), *range(19, 0, -1)]]]
    write_y4m(tmp_path / "camera.y4m", frames, fps=30)  # read by the chromium fixture; a webcam's 30 FPS
    always = [b for b in scene.boxes if b[0] >= 100 and b[1] >= 50 and b[0] + b[2] <= 640 and b[1] + b[3] <= 480]
    return len(always)


def test_real_faces_in_a_photo_and_on_the_webcam(real_scene_camera, app_url, chromium, tmp_path):
    """With the default detector and the shipped models, the Photo page labels and explains every
    real face of the group photo, and the live page boxes the real faces the camera shows."""
    from fer_core.recognition.scenes import load_pictures, photo_group

    assert real_scene_camera == 4
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
    page = context.new_page()
    page.goto(app_url)
    wait_ready(page)
    page.locator("[data-testid=stSidebarNav]", has_text="Recognise").wait_for(timeout=30_000)

    open_page(page, "Photo")
    photo = tmp_path / "group.png"
    cv2.imwrite(str(photo), cv2.cvtColor(photo_group(load_pictures(FIXTURES)).image, cv2.COLOR_RGB2BGR))
    page.locator("input[type=file]").first.set_input_files(str(photo))
    page.get_by_text("All results").wait_for(timeout=120_000)
    wait_ready(page)
    page.get_by_text("5 faces · 640×480").wait_for(timeout=10_000)
    page.get_by_text("Show what the network looked at").click()
    page.get_by_text("Grad-CAM:").wait_for(timeout=120_000)
    wait_ready(page)
    assert page.locator("[data-testid=stException]").count() == 0
    page.get_by_role("heading", name="group.png").evaluate("e => e.scrollIntoView()")
    time.sleep(1)  # plotly's draw transition
    screenshot(page, "photo_real_faces", doc="photo")

    open_page(page, "Webcam")
    page.get_by_text("Camera off").wait_for(timeout=30_000)
    fps, frames, faces = _start_live(page, min_faces=real_scene_camera)
    assert frames >= 15 and faces >= real_scene_camera, (fps, frames, faces)
    time.sleep(5)
    size = page.locator("[data-testid=stMarkdownContainer]", has_text="frames processed").first.inner_text()
    print(f"live: {_live_status(page)} (FPS, frames, faces) {size}")  # reported in docs/detection.md
    screenshot(page, "webcam_real_scene", doc="webcam")
    page.frame_locator("iframe").first.get_by_role("button", name="STOP").click()
    page.get_by_text("Camera off").wait_for(timeout=30_000)
    assert page.locator("[data-testid=stException]").count() == 0
    context.close()


@pytest.mark.data
def test_photo_upload_and_live_webcam(tiny_weights, faces_frame, app_url, chromium):  # noqa: F811
    photo, boxes = faces_frame
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
    page = context.new_page()

    # ---------------------------------------------------------------- photo
    page.goto(app_url)
    wait_ready(page)
    page.locator("[data-testid=stSidebarNav]", has_text="Recognise").wait_for(timeout=30_000)  # st.navigation
    open_page(page, "Photo")
    page.locator("input[type=file]").first.set_input_files(str(photo))
    page.get_by_text("All results").wait_for(timeout=60_000)
    wait_ready(page)
    page.get_by_text(f"{len(boxes)} faces · 640×480").wait_for(timeout=10_000)
    assert page.locator("[data-testid=stException]").count() == 0
    page.locator("[data-testid=stPlotlyChart] .main-svg").first.wait_for(timeout=30_000)  # probability bars
    time.sleep(1)  # plotly's draw transition
    screenshot(page, "photo_group")

    # ---------------------------------------------------------------- webcam
    open_page(page, "Webcam")
    page.get_by_text("Camera off").wait_for(timeout=30_000)
    status = _start_live(page, min_faces=1)
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
