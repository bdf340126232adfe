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
    assert card.test is not None and card.test.per_class is not None
    assert set(card.test.per_class) == set(card.classes or EMOTIONS)  # a card scores its model's own classes
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


# --------------------------------------------------------------------------- models with their own label space


def ferplus_card() -> dict:
    """A shipped card of an 8-class FER+ model, scored on FER+ valid and also on FER-2013's test split."""
    from fer_core.common.labels import FERPLUS_EMOTIONS

    d = json.loads((WEIGHTS_DIR / "model.json").read_text())
    k = len(FERPLUS_EMOTIONS)
    per_class = {c: {"precision": 0.5, "recall": 0.1 * (i + 1), "f1": 0.4, "support": 10 + i}
                 for i, c in enumerate(FERPLUS_EMOTIONS)}
    test = {"split": "val", "accuracy": 0.81, "macro_f1": 0.6, "weighted_f1": 0.8, "per_class": per_class,
            "confusion_matrix": [[int(i == j) * 10 for j in range(k)] for i in range(k)], "n": 3000, "tta": False,
            "classes": list(FERPLUS_EMOTIONS), "agreement": 0.712, "vote_cross_entropy": 0.845}
    also = {"data": "fer2013", "split": "test", "n": 3589, "accuracy": 0.55, "macro_f1": 0.5,
            "per_class": {c: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 9} for c in EMOTIONS},
            "classes": list(EMOTIONS)}
    return {**d, "name": "ferplus", "classes": list(FERPLUS_EMOTIONS),
            "eval_command": "fer-evaluate --data data/ferplus --split val --weights weights/ferplus.safetensors",
            "test_set": "FER+ valid (FER-2013 PublicTest, majority protocol)",
            "test": test, "test_tta": {**test, "tta": True, "accuracy": 0.82}, "also": [also]}


def test_an_eight_class_card_reads_its_classes_fer_plus_measures_and_extra_evaluations() -> None:
    from fer_core.common.labels import FERPLUS_EMOTIONS

    d = ferplus_card()
    card = ModelCard.from_dict(d)
    assert card.to_dict() == d
    assert card.model_classes == card.test_classes == FERPLUS_EMOTIONS
    assert card.test is not None and card.test.agreement == 0.712 and card.test.vote_cross_entropy == 0.845
    assert card.test.extra == {} and card.extra == {}  # every new field is a known one
    assert card.test_words == "FER+ valid (FER-2013 PublicTest, majority protocol)"
    assert card.also is not None and card.also[0].data == "fer2013" and card.also[0].label_space() == EMOTIONS
    assert card.also[0].per_class is not None and "contempt" not in card.also[0].per_class


def test_the_shipped_ferplus_cards_say_what_they_were_scored_on() -> None:
    from fer_core.runs.ship import card_markdown

    for name in ("ferplus_accurate", "ferplus_fast"):
        card = read_card(WEIGHTS_DIR / f"{name}.json")
        assert card is not None and card.classes == [*EMOTIONS, "contempt"]
        text = card_markdown(card)
        assert "FER+ valid" in text and "annotator agreement" in text and "| contempt |" in text


def test_an_old_card_is_fer2013s_seven_classes_on_publictest() -> None:
    card = read_card(WEIGHTS_DIR / "model.json")
    assert card is not None and card.classes is None and card.also is None
    assert card.model_classes == card.test_classes == EMOTIONS
    assert card.test_words == "FER-2013 PublicTest"
    assert card.test is not None and card.test.agreement is None
    run = ModelCard.from_dict({"name": "r", "arch": "tiny", "source": "run", "test": {"split": "test"}})
    assert run.test_words is None  # a run's card knows its split's name only


@pytest.mark.parametrize(("change", "message"), [
    ({"classes": "angry"}, "expected a list"),
    ({"classes": [1, 2]}, "list of class names"),
    ({"also": {"data": "x"}}, "expected a list of TestMetrics"),
    ({"also": [{"accuracy": "55%"}]}, "TestMetrics.accuracy: expected a number"),
])
def test_malformed_classes_or_extra_evaluations_are_clear_errors(change: dict, message: str) -> None:
    with pytest.raises(CardError, match=message):
        ModelCard.from_dict({**ferplus_card(), **change})


def test_an_eight_class_card_renders_contempt_fer_plus_measures_and_its_extra_evaluations() -> None:
    from fer_core.runs.ship import card_markdown

    text = card_markdown(ModelCard.from_dict(ferplus_card()))
    assert "**Test (FER+ valid (FER-2013 PublicTest, majority protocol), n=3000)**: FER+ majority accuracy" in text
    assert "| contempt | 0.500 | 0.800 | 0.400 | 17 |" in text  # the per-class table
    assert "| **contempt** | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 10 |" in text  # the confusion matrix's row
    assert "rows: true majority label" in text
    assert "annotator agreement **0.712**" in text and "cross-entropy vs votes **0.845 nats**" in text
    assert "Also measured on" in text and "| fer2013 | test | 3589 | 55.00% | 0.5000 | angry 0.50 · " in text
    assert "lowest recall on **angry**" in text and "FER+ labels are the majority of ten annotators" in text
    assert "- Classes (8): angry, disgust, fear, happy, sad, surprise, neutral, contempt" in text


def test_a_seven_class_model_scored_on_fer_plus_says_what_it_cannot_answer() -> None:
    from fer_core.runs.ship import card_markdown

    d = ferplus_card()
    del d["classes"]  # FER-2013's seven
    d["test"]["per_class"]["contempt"]["recall"] = 0.0
    text = card_markdown(ModelCard.from_dict(d))
    assert "lowest recall on **contempt** (0%)" in text and "does not answer contempt" in text
    assert "| contempt |" in text and "- Classes" not in text


def test_old_cards_render_as_fer2013_without_fer_plus_parts() -> None:
    from fer_core.runs.ship import card_markdown

    for path in [p for p in SHIPPED_CARDS if "classes" not in json.loads(p.read_text())]:
        text = card_markdown(ModelCard.from_dict(json.loads(path.read_text())))
        assert "(FER-2013 PublicTest, n=" in text and "contempt" not in text
        assert "annotator agreement" not in text and "Also measured on" not in text
