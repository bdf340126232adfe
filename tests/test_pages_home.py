"""The app entry (navigation + home page) renders with and without a model card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from fer_core.common.paths import WEIGHTS_DIR
from fer_core.models.checkpoint import save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model


def _run() -> AppTest:
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "streamlit_app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.skipif(not (WEIGHTS_DIR / "model.json").is_file(), reason="no shipped model card")
def test_home_shows_the_shipped_model_card() -> None:
    at = _run()
    labels = {m.label: m.value for m in at.metric}
    assert labels["Architecture"] and labels["Test accuracy"].endswith("%")
    assert at.dataframe  # the side-by-side table of shipped models
    captions = " ".join(c.value for c in at.caption)
    assert "`weights/" in captions and str(WEIGHTS_DIR) not in captions  # no server path shown to visitors


def test_home_explains_a_model_without_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = save_checkpoint(create_model("tiny"), ModelConfig("tiny"), tmp_path / "m.safetensors")
    monkeypatch.setenv("FER_WEIGHTS", str(weights))
    at = _run()
    assert any("No model card" in w.value for w in at.warning)


def test_home_shows_an_eight_class_fer_plus_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_core.common.labels import FERPLUS_EMOTIONS

    cfg = ModelConfig(arch="tiny", num_classes=8, classes=list(FERPLUS_EMOTIONS))
    weights = save_checkpoint(create_model("tiny", 8), cfg, tmp_path / "m8.safetensors")
    (tmp_path / "m8.json").write_text(json.dumps({
        "name": "m8", "arch": "tiny", "classes": list(FERPLUS_EMOTIONS), "date": "2026-01-01",
        "test_set": "FER+ valid (FER-2013 PublicTest, majority protocol)",
        "test": {"split": "val", "accuracy": 0.8123, "macro_f1": 0.61, "n": 3000, "classes": list(FERPLUS_EMOTIONS),
                 "agreement": 0.7, "vote_cross_entropy": 0.9}}))
    monkeypatch.setenv("FER_WEIGHTS", str(weights))
    at = _run()
    labels = {m.label: m.value for m in at.metric}
    assert labels["FER+ majority accuracy"] == "81.2%"
    captions = " ".join(c.value for c in at.caption)
    assert "3000 images of FER+ valid (FER-2013 PublicTest, majority protocol)" in captions
    assert "answers 8 emotions, with contempt" in captions
