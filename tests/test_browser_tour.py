"""Every page of the real app in headless Chromium, as a first-time visitor walks through them:
each renders without an error. With ``FER_DOC_SCREENSHOTS=1`` (``make screenshots``) the
pages that other browser tests do not already photograph are saved for the README."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.browser_support import open_page, screenshot, wait_ready
from tests.conftest import REAL_DATA, write_folder_dataset
from tests.test_detect import FIXTURES

pytestmark = [pytest.mark.browser]


@pytest.fixture
def tour_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Must come before ``app_url``: the app inherits FER_DATA (the real data when present, under a
    neutral name, as a user's ``data/fer2013`` would be)."""
    if (REAL_DATA / "train").is_dir():
        data = tmp_path / "data" / "fer2013"
        data.parent.mkdir()
        data.symlink_to(REAL_DATA, target_is_directory=True)
    else:
        data = write_folder_dataset(tmp_path / "data" / "fer2013", {"train": 8, "test": 4})
    monkeypatch.setenv("FER_DATA", str(data))
    return data


def test_every_page_renders(tour_env, app_url, chromium, tmp_path):
    from fer_core.recognition.scenes import load_pictures, photo_group
    from tests.conftest import write_test_video

    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(app_url)
    wait_ready(page)
    page.get_by_text("facial emotion recognition").first.wait_for(timeout=30_000)
    screenshot(page, "tour_home", doc="home")

    scene = photo_group(load_pictures(FIXTURES))
    clip = tmp_path / "group.mp4"
    write_test_video(clip, [np.roll(scene.image, 3 * i, axis=1) for i in range(20)], fps=10, codec="mpeg4")
    open_page(page, "Video")
    page.locator("input[type=file]").first.set_input_files(str(clip))
    page.get_by_text("face tracks found").wait_for(timeout=120_000)
    wait_ready(page)
    page.locator("[data-testid=stPlotlyChart] .main-svg").first.wait_for(timeout=30_000)
    screenshot(page, "tour_video", doc="video")

    # the shipped accurate model on test/: evaluated once (about 20 s on 2 idle cores), then cached
    open_page(page, "Metrics", timeout_ms=600_000)
    page.get_by_text("Classification report").first.wait_for(timeout=60_000)
    page.locator("[data-testid=stPlotlyChart] .main-svg").first.wait_for(timeout=60_000)
    page.wait_for_timeout(1500)
    screenshot(page, "tour_metrics", doc="metrics")
    assert page.locator("[data-testid=stException]").count() == 0

    for title, doc in (("Dataset", "dataset"), ("Optimizer study", "study")):
        open_page(page, title)
        page.wait_for_timeout(1500)  # charts draw after the script has finished
        screenshot(page, f"tour_{doc}", doc=doc)
        assert page.locator("[data-testid=stException]").count() == 0, title
    context.close()
