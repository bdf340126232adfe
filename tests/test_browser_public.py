"""Real browser against ``FER_PUBLIC=1 streamlit run``: a visitor who types the Training page's URL
gets no control and no server path; only the admin password opens it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from fer_core.common.paths import runs_dir
from tests.browser_support import open_page, screenshot, wait_ready
from tests.conftest import write_folder_dataset

PASSWORD = "a long admin passphrase"


@pytest.fixture
def public_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Must come before ``app_url`` in a test's arguments: the app inherits this environment."""
    data = write_folder_dataset(tmp_path / "fer", {"train": 20, "test": 5})
    monkeypatch.setenv("FER_DATA", str(data))
    monkeypatch.setenv("FER_PUBLIC", "1")
    monkeypatch.setenv("FER_ADMIN_PASSWORD", PASSWORD)
    return data


@pytest.mark.browser
def test_public_mode_refuses_training_by_url_without_the_password(public_env: Path, app_url: str,
                                                                  chromium) -> None:
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(app_url)
        wait_ready(page)
        nav = page.locator("[data-testid=stSidebarNav]").inner_text()
        assert "Photo" in nav and "Training" not in nav  # not listed for a visitor
        page.goto(f"{app_url}/training")  # typed by hand
        wait_ready(page)
        page.get_by_text("for its admin only").wait_for(timeout=30_000)
        page.get_by_label("Admin password").wait_for(timeout=30_000)  # the sign-in form ends the page
        wait_ready(page)
        assert page.get_by_role("button", name="Start training").count() == 0
        assert page.get_by_role("button", name="Promote to active model").count() == 0
        assert page.get_by_label("Dataset: a FER-2013 folder (train/ test/) or fer2013.csv").count() == 0
        page.get_by_label("Admin password").fill("not it")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Wrong password").wait_for(timeout=30_000)
        assert page.get_by_role("button", name="Start training").count() == 0
        screenshot(page, "public-training-refused")
        page.get_by_label("Admin password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Start training").wait_for(timeout=30_000)
        wait_ready(page)
        assert page.get_by_label("Dataset: a FER-2013 folder (train/ test/) or fer2013.csv").count() == 0
        assert "Training" in page.locator("[data-testid=stSidebarNav]").inner_text()  # listed for the admin
        assert not runs_dir().exists() or not any(runs_dir().iterdir())  # nothing was started on the way
    finally:
        page.close()


@pytest.mark.browser
def test_video_stop_button_ends_the_analysis_and_keeps_its_part(public_env: Path, app_url: str, chromium,
                                                               tmp_path: Path) -> None:
    import numpy as np

    from fer_core.recognition.scenes import load_pictures, photo_group
    from tests.conftest import write_test_video
    from tests.test_detect import FIXTURES

    scene = photo_group(load_pictures(FIXTURES))
    clip = tmp_path / "long.mp4"  # every frame analysed: minutes of work unless stopped
    write_test_video(clip, [np.roll(scene.image, 2 * i, axis=1) for i in range(400)], fps=10, codec="mpeg4")
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(app_url)
        wait_ready(page)
        open_page(page, "Video")
        every = page.get_by_label("Analyse every Nth frame", exact=True)
        every.fill("1")
        every.press("Enter")
        wait_ready(page)
        page.locator("input[type=file]").first.set_input_files(str(clip))
        page.get_by_text(re.compile(r"Analysing… [1-9]\d*%")).wait_for(timeout=120_000)
        page.locator(".st-key-video-stop button:visible").click()  # the page's own, not the toolbar's Stop
        page.get_by_text(re.compile(r"stopped at [\d.]+ s by your request")).wait_for(timeout=60_000)
        wait_ready(page)
        caption = page.get_by_text(re.compile(r"stopped at [\d.]+ s by your request")).first.inner_text()
        analysed, read = map(int, re.search(r"(\d+) of (\d+) frames analysed", caption).groups())
        assert 0 < analysed == read < 400  # really stopped, and the part before it is kept
        assert page.get_by_text("face tracks found").count() + page.get_by_text("No face found").count() == 1
        time.sleep(3)  # nothing goes on in the background: the page stays as it is
        assert page.get_by_text(re.compile(r"Analysing…")).count() == 0
        assert page.locator("[data-testid=stException]").count() == 0
        screenshot(page, "video-stopped")
    finally:
        page.close()


@pytest.mark.browser
def test_a_first_visit_straight_to_the_training_url_is_refused(public_env: Path, app_url: str, chromium) -> None:
    """The first request a fresh server gets runs the page script alone (Streamlit's pages/ folder mode),
    without streamlit_app.py: the page must refuse by itself."""
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{app_url}/training")
        wait_ready(page)
        page.get_by_text("for its admin only").wait_for(timeout=30_000)
        page.get_by_label("Admin password").wait_for(timeout=30_000)  # the sign-in form ends the page
        wait_ready(page)
        assert page.get_by_role("button", name="Start training").count() == 0
        assert page.get_by_role("button", name="Cancel this run").count() == 0
        assert page.get_by_role("button", name="Restore shipped default").count() == 0
        assert page.get_by_role("textbox").count() == 1  # the password, nothing else
    finally:
        page.close()
