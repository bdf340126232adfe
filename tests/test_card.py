"""Model cards: one typed ``ModelCard`` that reads every shipped card back exactly as written, keeps what
it does not know, names the architecture readably, and turns a missing or broken card into None."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fer_core.common.labels import EMOTIONS
from fer_core.common.paths import WEIGHTS_DIR
from fer_core.models.card import CardError, ModelCard, TestMetrics, load_card, read_card
from fer_core.models.checkpoint import save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model

SHIPPED_CARDS = sorted(p for p in WEIGHTS_DIR.glob("*.json") if not p.name.endswith("_config.json"))


@pytest.mark.parametrize("path", SHIPPED_CARDS, ids=lambda p: p.name)
def test_every_shipped_card_round_trips_to_the_same_file(path: Path) -> None:
    d = json.loads(path.read_text())
    card = ModelCard.from_dict(d)
    assert card.to_dict() == d
    assert json.dumps(card.to_dict(), indent=2) + "\n" == path.read_text()  # same keys in the same order
    assert card.test is not None and card.test.per_class is not None and set(card.test.per_class) == set(EMOTIONS)
    assert card.latency is not None and card.latency.latency_b1_ms > 0 and card.data is not None


def test_the_shipped_cards_read_as_typed_parts() -> None:
    accurate = read_card(WEIGHTS_DIR / "accurate.json")
    fast = read_card(WEIGHTS_DIR / "model.json")
    assert accurate is not None and fast is not None
    assert accurate.architecture == "ensemble of fernet_l + 3 fernet_m + fernet_s"  # its card keeps "fernet_lmmms"
    assert accurate.ensemble_members == ["fernet_l", "fernet_m", "fernet_m", "fernet_m", "fernet_s"]
    assert accurate.stored_as == "int8" and fast.stored_as == "float16"  # older cards say nothing: float16
    assert fast.architecture == "fernet_s" and fast.ensemble_members is None and fast.members is None
    assert accurate.members is not None and len(accurate.members) == len(accurate.config or []) == 5
    assert accurate.data is not None and accurate.data.test_hash is None  # null in the card, kept as null
    assert accurate.test is not None and accurate.test_tta is not None and accurate.test_tta.tta is True
    assert accurate.test.per_class is not None and accurate.test.per_class["fear"].support == 496


def test_a_new_ensemble_card_names_its_members_from_its_configs() -> None:
    card = ModelCard.from_dict({"name": "e", "arch": "ensemble",
                                "config": [{"arch": "fernet_s"}, {"arch": "fernet_m"}, {"arch": "fernet_m"}]})
    assert card.ensemble_members == ["fernet_m", "fernet_m", "fernet_s"]  # slot order: by architecture name
    assert card.architecture == "ensemble of 2 fernet_m + fernet_s"
    assert ModelCard.from_dict({"name": "e", "arch": "ensemble"}).architecture == "ensemble"


def test_unknown_keys_are_kept_at_every_level() -> None:
    """A card from a newer writer: a reader neither crashes nor, rewriting it, loses anything."""
    d = json.loads((WEIGHTS_DIR / "model.json").read_text())
    newer = copy.deepcopy(d)
    newer["license"] = "MIT"
    newer["test"]["ece"] = 0.03
    newer["test"]["per_class"]["fear"]["auc"] = 0.9
    newer["latency"]["os"] = "linux"
    newer["data"]["source"] = "kaggle"
    card = ModelCard.from_dict(newer)
    assert card.extra == {"license": "MIT"} and card.test is not None and card.test.extra == {"ece": 0.03}
    assert card.to_dict() == newer


@pytest.mark.parametrize(("change", "message"), [
    ({"name": None}, "ModelCard"),  # a required field missing (None drops it here)
    ({"test": [1, 2]}, "TestMetrics: expected a JSON object"),
    ({"latency": {"precision": "bf16"}}, "Latency"),
    ({"members": {"epochs": 1}}, "expected a list of MemberTraining"),
    ({"test": {"per_class": {"fear": {"precision": 1.0}}}}, "ClassScores"),
    ({"params": "4.47 M"}, "ModelCard.params: expected a number"),  # every page formats it as a number
    ({"test": {"accuracy": "61%"}}, "TestMetrics.accuracy: expected a number"),
    ({"test": {"accuracy": True}}, "TestMetrics.accuracy: expected a number"),
    ({"test": {"confusion_matrix": [[1, 2], [3]]}}, "square matrix of counts"),
    ({"test": {"confusion_matrix": [["1"]]}}, "square matrix of counts"),
])
def test_a_malformed_card_is_a_clear_error_and_load_card_gives_none(tmp_path: Path, change: dict,
                                                                      message: str) -> None:
    d = {**json.loads((WEIGHTS_DIR / "paper.json").read_text()), **change}
    d = {k: v for k, v in d.items() if v is not None}
    with pytest.raises(CardError, match=message):
        ModelCard.from_dict(d)
    weights = save_checkpoint(create_model("tiny"), ModelConfig("tiny"), tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text(json.dumps(d))
    assert load_card(weights) is None


def test_missing_or_unreadable_cards_give_none(tmp_path: Path) -> None:
    assert load_card(tmp_path / "nothing.safetensors") is None
    weights = save_checkpoint(create_model("tiny"), ModelConfig("tiny"), tmp_path / "m.safetensors")
    assert load_card(weights) is None  # no card, no run folder around it
    (tmp_path / "m.json").write_text("{not json")
    assert load_card(weights) is None and read_card(tmp_path / "m.json") is None
    (tmp_path / "m.json").write_text("[1, 2]")
    assert load_card(weights) is None


def test_a_run_folder_gives_the_card_it_can(tmp_path: Path) -> None:
    run = tmp_path / "r1"
    weights = save_checkpoint(create_model("tiny"), ModelConfig("tiny"), run / "model.safetensors")
    metrics = {"split": "test", "train_seconds": 12.5, "best_val_acc": 0.4, "accuracy": 0.5, "macro_f1": 0.25,
               "n": 84, "tta": False}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.json").write_text(json.dumps({"train": {"lr": 0.1}, "model": {"arch": "tiny"}, "params": 9}))
    card = load_card(weights)
    assert card is not None and card.source == "run" and card.name == "r1" and card.architecture == "tiny"
    assert card.params == 9 and card.config == [{"lr": 0.1}] and card.data is None
    assert card.test == TestMetrics(split="test", accuracy=0.5, macro_f1=0.25, n=84, tta=False,
                                    extra={"train_seconds": 12.5, "best_val_acc": 0.4})
    assert card.test is not None and card.test.to_dict() == metrics
    (run / "config.json").write_text(json.dumps({"train": {"lr": 0.1}}))  # no model part: not a run's config
    assert load_card(weights) is None


def test_every_shipped_card_renders_in_the_model_card_markdown() -> None:
    from fer_core.runs.ship import card_markdown

    for path in SHIPPED_CARDS:
        card = ModelCard.from_dict(json.loads(path.read_text()))
        text = card_markdown(card)
        assert text.startswith(f"## `{card.name}` — {card.architecture}\n") and "| **neutral** |" in text
