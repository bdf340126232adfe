"""Shipping a run: the card is measured on what the float16 file holds, validation included."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fer_core.data.dataset import load_split
from fer_core.evaluation.evaluate import evaluate
from fer_core.models.checkpoint import load_checkpoint
from fer_core.runs import ship
from fer_core.training.loop import TrainConfig, train
from tests.conftest import write_folder_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ship")
    data = write_folder_dataset(root / "fer", {"train": 40, "test": 12})
    out = train(TrainConfig(data=str(data), arch="tiny", optimizer="adam", lr=0.01, epochs=2, batch_size=32,
                            schedule="none", augment=False, seed=0, out=str(root / "run"), device="cpu",
                            precision="fp32"), log=lambda _: None, show_bar=False)
    return data, out


def test_ship_writes_weights_and_a_card_that_matches_them(run, tmp_path: Path, monkeypatch) -> None:
    data, out = run
    monkeypatch.setattr(ship, "WEIGHTS_DIR", tmp_path)
    card = ship.ship([out], "candidate", str(data), "python train.py ...", "test machine")
    weights = tmp_path / "candidate.safetensors"
    assert json.loads((tmp_path / "candidate.json").read_text()) == card
    model, cfg = load_checkpoint(weights)
    assert cfg.arch == "tiny"
    shipped = evaluate(model, load_split(data, "test"))
    assert shipped.accuracy == card["test"]["accuracy"] and card["test"]["n"] == 7 * 12
    held_out = card["val"]
    assert held_out["n"] > 0 and 0 <= held_out["tta_accuracy"] <= 1
    best_val = max(float(row["val_acc"]) for row in csv.DictReader((out / "history.csv").open()))
    assert held_out["accuracy"] == pytest.approx(best_val, abs=1.01 / held_out["n"])  # float16 may flip one face
    text = ship.write_model_card_md().read_text()
    assert "`candidate` — tiny" in text and "with TTA (14 views)" in text and "Validation slice" in text


def test_members_validated_on_different_slices_get_no_validation_figure(run) -> None:
    data, out = run
    other = json.loads((out / "config.json").read_text())
    other["data"] = {**other["data"], "val_hash": "something else"}
    model, _ = load_checkpoint(out)
    configs = [json.loads((out / "config.json").read_text()), other]
    assert ship.validation_scores(model, configs, str(data)) is None


def test_a_card_counts_the_training_of_the_run_a_network_started_from(run, tmp_path: Path) -> None:
    data, first = run
    cfg = TrainConfig(data=str(data), arch="tiny", optimizer="adam", lr=0.001, epochs=1, batch_size=32,
                      schedule="none", augment=False, seed=0, out=str(tmp_path / "anneal"), device="cpu",
                      precision="fp32", init=str(first / "model.safetensors"))
    anneal = train(cfg, log=lambda _: None, show_bar=False)
    before, after = ship.run_summary(first), ship.run_summary(anneal)
    assert before["epochs"] == 2 and after["epochs"] == 2 + 1
    assert after["minutes"] > before["minutes"]
    rows = list(csv.DictReader((anneal / "history.csv").open()))
    assert after["best_val_acc"] == max(float(r["val_acc"]) for r in rows)  # the network's own, not its start's


def test_a_rebuilt_member_is_described_by_its_recorded_summary_and_nothing_else_is_guessed(run, tmp_path) -> None:
    _, first = run
    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    (rebuilt / "config.json").write_text((first / "config.json").read_text())
    with pytest.raises(ValueError, match=r"no history\.csv"):
        ship.run_summary(rebuilt)
    (rebuilt / "summary.json").write_text(json.dumps({"epochs": 200, "minutes": 177.0, "best_val_acc": 0.679}))
    assert ship.run_summary(rebuilt) == {"epochs": 200, "minutes": 177.0, "best_val_acc": 0.679}
