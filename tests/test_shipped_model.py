"""The shipped models still score what their model cards claim (no silently worse model,
no broken preprocessing). Needs the real FER-2013 test split; skipped without it."""

from __future__ import annotations

import json

import pytest

from fer_core.common.paths import WEIGHTS_DIR
from fer_core.data.dataset import load_split
from fer_core.evaluation.evaluate import evaluate
from fer_core.models.active import shipped_models
from fer_core.models.checkpoint import load_checkpoint

pytestmark = pytest.mark.data


def test_the_default_model_is_shipped_with_its_card() -> None:
    assert (WEIGHTS_DIR / "model.safetensors").is_file()
    card = json.loads((WEIGHTS_DIR / "model.json").read_text())
    assert card["test"]["n"] == 3589 and card["params"] > 0 and card["latency"]["latency_b1_ms"] > 0
    assert all(p.stat().st_size < 20 * 1024 * 1024 for p in shipped_models().values())  # fits in git


def test_photos_default_to_the_accurate_model_and_it_is_more_accurate() -> None:
    from fer_core.models.active import ACCURATE_WEIGHTS, accurate_weights

    assert accurate_weights() == ACCURATE_WEIGHTS
    fast, accurate = (json.loads(p.with_suffix(".json").read_text())["test"]["accuracy"]
                      for p in (WEIGHTS_DIR / "model.safetensors", ACCURATE_WEIGHTS))
    assert accurate > fast


@pytest.mark.parametrize("name", sorted(shipped_models()))
def test_shipped_model_scores_its_card_on_test(name: str, request: pytest.FixtureRequest) -> None:
    """Each card on the data it names: FER-2013's PublicTest, or FER+'s valid split for a FER+ model."""
    weights = shipped_models()[name]
    card = json.loads(weights.with_suffix(".json").read_text())
    model, cfg = load_checkpoint(weights)
    ferplus = "FER+" in (card.get("test_set") or "")
    split = (load_split(request.getfixturevalue("real_ferplus"), "val", use_cache=False) if ferplus
             else load_split(request.getfixturevalue("real_data"), "test", use_cache=False))
    result = evaluate(model, split, classes=cfg.classes)
    assert result.n == card["test"]["n"]
    assert result.accuracy >= card["test"]["accuracy"] - 0.005
    assert result.metrics()["macro_f1"] >= card["test"]["macro_f1"] - 0.005
