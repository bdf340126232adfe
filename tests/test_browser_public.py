"""Real browser against ``FER_PUBLIC=1 streamlit run``: a visitor who types the Training page's URL
gets no control and no server path; only the admin password opens it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_core.common.paths import runs_dir
from tests.browser_support import screenshot, wait_ready
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
