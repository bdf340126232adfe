"""Real browser: open Training, start a short run on a tiny data set, watch it, cancel it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from fer_core.common.process import pid_alive
from fer_core.runs.control import cancel_run
from fer_core.runs.lock import current_lock, read_lock
from fer_core.runs.store import load_run
from tests.browser_support import open_page, screenshot, wait_ready
from tests.conftest import write_folder_dataset


@pytest.fixture
def tiny_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Must come before ``app_url`` in a test's arguments: the app inherits this environment."""
    data = write_folder_dataset(tmp_path / "fer", {"train": 300, "test": 5})  # long enough to cancel mid-run
    monkeypatch.setenv("FER_DATA", str(data))
    monkeypatch.delenv("FER_ALLOW_TRAINING", raising=False)
    return data


@pytest.mark.browser
def test_start_watch_and_cancel_a_run(tiny_env: Path, app_url: str, chromium) -> None:
    page = chromium.new_page(viewport={"width": 1400, "height": 1100})
    try:
        page.goto(app_url)
        wait_ready(page)
        open_page(page, "Training")
        assert page.get_by_label("Dataset: a FER-2013 folder (train/ test/) or fer2013.csv").input_value() == str(
            tiny_env)
        arch = page.get_by_role("combobox", name=re.compile("Architecture"))
        arch.click()
        arch.fill("tiny")
        arch.press("Enter")
        wait_ready(page)
        epochs = page.get_by_label("Epochs")
        epochs.fill("100")
        epochs.press("Enter")
        wait_ready(page)
        page.get_by_text("Estimated duration").wait_for(timeout=30_000)
        assert "tiny-amsgrad" not in page.content()  # nothing started yet
        page.get_by_role("button", name="Start training").click()
        page.get_by_text("Run in progress").wait_for(timeout=30_000)
        page.get_by_text(re.compile(r"epoch \d+/100 · step")).first.wait_for(timeout=90_000)
        lock = read_lock()
        assert lock and pid_alive(lock["pid"])
        time.sleep(2)  # let a few refreshes of the live curves land
        screenshot(page, "training-running", doc="training")
        page.get_by_role("button", name="Cancel this run").click()
        page.get_by_text(re.compile(r"ended: cancelled")).first.wait_for(timeout=60_000)
        wait_ready(page)
        screenshot(page, "training-cancelled")
        run = load_run(Path(lock["run"]))
        assert run.status == "cancelled" and run.config["arch"] == "tiny" and run.config["epochs"] == 100
        assert read_lock() is None  # released before the page said "ended"
        deadline = time.monotonic() + 20  # the interpreter itself may take a moment to exit
        while pid_alive(lock["pid"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not pid_alive(lock["pid"])
        start = page.get_by_role("button", name="Start training")  # enabled by the rerun that follows "ended"
        deadline = time.monotonic() + 30
        while not start.is_enabled() and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        assert start.is_enabled()
    finally:
        held = current_lock()  # never leave a worker behind, whatever failed above
        if held and held.get("run"):
            cancel_run(wait_s=20)
        page.close()


@pytest.fixture
def training_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_ALLOW_TRAINING", "0")


@pytest.mark.browser
def test_training_page_is_hidden_when_disallowed(training_off: None, app_url: str, chromium) -> None:
    page = chromium.new_page()
    page.goto(app_url)
    wait_ready(page)
    links = [a.inner_text() for a in page.locator("[data-testid=stSidebarNav] a").all()]
    assert any("Optimizer study" in t for t in links) and not any("Training" in t for t in links)
    page.goto(f"{app_url}/training")  # even a direct link only says it is off
    wait_ready(page)
    page.get_by_text("Training is disabled on this deployment").wait_for(timeout=30_000)
    assert page.get_by_role("button", name="Start training").count() == 0
    page.close()
