"""The metrics page in a real browser: clicking a confusion-matrix cell shows that cell's faces."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from fer_core import EMOTIONS
from fer_core.data.dataset import load_split
from fer_core.evaluation.evaluate import evaluate
from fer_core.models.checkpoint import load_checkpoint, save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model
from tests.browser_support import screenshot, wait_ready
from tests.conftest import write_folder_dataset


@pytest.fixture
def tiny_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Set before ``app_url`` starts the server, so the app sees the tiny model and data."""
    data = write_folder_dataset(tmp_path / "fer", {"train": 4, "test": 6})
    torch.manual_seed(3)
    weights = save_checkpoint(create_model("tiny"), ModelConfig(arch="tiny"), tmp_path / "tiny.safetensors")
    monkeypatch.setenv("FER_DATA", str(data))
    monkeypatch.setenv("FER_WEIGHTS", str(weights))
    return weights, data


@pytest.mark.browser
def test_click_on_heatmap_cell_shows_its_faces(tiny_env: tuple[Path, Path], app_url: str, chromium) -> None:
    weights, data = tiny_env
    model, _ = load_checkpoint(weights)
    torch.manual_seed(0)
    ev = evaluate(model, load_split(data, "test"))
    cm = ev.confusion()
    off = cm.astype(float)
    np.fill_diagonal(off, -1)
    default = np.unravel_index(int(off.argmax()), off.shape)  # the page opens on the most confused cell
    # click the fullest cell that is not the default one
    order = [np.unravel_index(int(k), cm.shape) for k in np.argsort(-cm, axis=None)]
    true, pred = next(c for c in order if c != default and cm[c] > 0)

    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{app_url}/metrics")
    wait_ready(page)
    page.get_by_text("Classification report").wait_for(timeout=60_000)
    wait_ready(page)  # the whole page is drawn, so the chart under the click is the final one
    chart = page.locator("[data-testid=stPlotlyChart]").first
    point = chart.locator(".scatterlayer .trace .point").nth(int(true) * len(EMOTIONS) + int(pred))
    point.wait_for(state="visible")
    heading = page.get_by_text(re.compile(re.escape(
        f"true {EMOTIONS[true]} → predicted {EMOTIONS[pred]}: {int(cm[true, pred])} images")))
    for _ in range(3):  # on a loaded machine plotly may bind its click handler after the point is drawn
        # the page can still scroll under load (a failed run had the point at y=-182), and a click
        # at coordinates outside the viewport reaches nothing: bring the point back before each click
        point.scroll_into_view_if_needed()
        box = point.bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:
            heading.wait_for(timeout=20_000)
            break
        except PlaywrightTimeoutError:
            continue
    heading.wait_for(timeout=1_000)
    wait_ready(page)
    # the heading is drawn from the true/predicted pickers, so they followed the click;
    # the gallery holds exactly that cell's faces
    gallery = page.locator("[data-testid=stImage] img")
    assert gallery.count() == int(cm[true, pred])
    screenshot(page, "metrics_cell_click")
