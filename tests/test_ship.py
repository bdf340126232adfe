"""Shipping a run: the card is measured on what the float16 file holds, validation included."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fer_core.common.labels import EMOTIONS
from fer_core.data.dataset import load_split
from fer_core.evaluation.evaluate import evaluate
from fer_core.models.checkpoint import load_checkpoint, read_int8_calibration
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
    assert card["test_set"] == "FER-2013 PublicTest" and card["test"]["split"] == "test"
    assert card["classes"] == list(EMOTIONS) and "also" not in card and "agreement" not in card["test"]
    assert card["eval_command"] == f"fer-evaluate --data data/{data.name} --split test --weights " \
                                   "weights/candidate.safetensors"
    held_out = card["val"]
    assert held_out["n"] > 0 and 0 <= held_out["tta_accuracy"] <= 1
    best_val = max(float(row["val_acc"]) for row in csv.DictReader((out / "history.csv").open()))
    assert held_out["accuracy"] == pytest.approx(best_val, abs=1.01 / held_out["n"])  # float16 may flip one face
    # the int8 form: calibrated, checked on the same slice, saved in the file, every form measured
    assert card["int8"]["val_faces"] == held_out["n"] and read_int8_calibration(weights) is not None
    assert card["int8"]["val_accuracy_fp32"] == pytest.approx(held_out["accuracy"], abs=1.01 / held_out["n"])
    assert {(f["kernels"], f["form"]) for f in card["forms"]} >= {("native", "fp32"), ("avx2", "fp32"),
                                                                  ("avx2", "int8")}
    assert sum(f["chosen"] for f in card["forms"] if f["kernels"] == "avx2") == 1
    text = ship.write_model_card_md().read_text()
    assert "`candidate` — tiny" in text and "with TTA (14 views)" in text and "Validation slice" in text
    assert "Inference forms" in text and "int8 on the validation slice" in text


def test_members_validated_on_different_slices_get_no_validation_figure(run) -> None:
    data, out = run
    other = json.loads((out / "config.json").read_text())
    other["data"] = {**other["data"], "val_hash": "something else"}
    model, _ = load_checkpoint(out)
    configs = [json.loads((out / "config.json").read_text()), other]
    assert ship.validation_scores(model, ship.shared_validation_slice(configs, str(data))) is None


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


# --------------------------------------------------------------------------- an 8-class FER+ model


def ferplus_run(root: Path) -> Path:
    """A run folder of an untrained 8-class network, as far as ship reads one."""
    import torch

    from fer_core.common.labels import FERPLUS_EMOTIONS
    from fer_core.models.checkpoint import save_checkpoint
    from fer_core.models.zoo import ModelConfig, create_model

    run = root / "run8"
    torch.manual_seed(0)
    cfg = ModelConfig(arch="tiny", num_classes=8, classes=list(FERPLUS_EMOTIONS))
    save_checkpoint(create_model("tiny", 8), cfg, run / "model.safetensors")
    (run / "config.json").write_text(json.dumps({
        "train": {"arch": "tiny", "seed": 0}, "model": cfg.to_dict(),
        "data": {"train_hash": "t", "val_hash": "not this data's", "test_hash": "v", "train": 1, "val": 1, "test": 1}}))
    (run / "history.csv").write_text("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n"
                                     "1,2.0,0.2,2.0,0.25,0.01,30.0\n")
    return run


def test_an_eight_class_model_ships_on_fer_plus_valid_with_extra_evaluations(tmp_path: Path, monkeypatch) -> None:
    from fer_core.common.labels import FERPLUS_EMOTIONS
    from fer_core.models.card import ModelCard
    from tests.conftest import write_ferplus_folders

    ferplus = write_ferplus_folders(tmp_path / "ferplus", {"FER2013Train": 3, "FER2013Valid": 3})
    fer2013 = write_folder_dataset(tmp_path / "fer2013", {"test": 2})
    run = ferplus_run(tmp_path)
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    monkeypatch.setattr(ship, "WEIGHTS_DIR", weights_dir)
    assert ship.main([str(run), "--name", "cand8", "--data", str(ferplus), "--command", "python train.py ...",
                      "--also", f"{fer2013}:test", "--also", f"again={ferplus}"]) == 0
    card = json.loads((weights_dir / "cand8.json").read_text())
    assert ModelCard.from_dict(card).to_dict() == card
    assert card["classes"] == list(FERPLUS_EMOTIONS)
    assert card["test_set"] == "FER+ valid (FER-2013 PublicTest, majority protocol)"  # FER+ here has no test split
    test = card["test"]
    assert test["split"] == "val" and test["classes"] == list(FERPLUS_EMOTIONS) and "contempt" in test["per_class"]
    assert len(test["confusion_matrix"]) == 8 and test["n"] == 8 * 3  # the ambiguous faces are left out
    model, cfg = load_checkpoint(weights_dir / "cand8.safetensors")
    valid = evaluate(model, load_split(ferplus, "val"), classes=cfg.classes)
    assert test["accuracy"] == valid.accuracy
    assert test["agreement"] == pytest.approx(valid.metrics()["agreement"])
    assert test["vote_cross_entropy"] == pytest.approx(valid.metrics()["vote_cross_entropy"])
    assert test["vote_cross_entropy"] > 0
    assert card["eval_command"] == "fer-evaluate --data data/ferplus --split val --weights weights/cand8.safetensors"
    assert card["val"] is None  # the run held out another slice than this data gives
    assert card.get("int8") is None and read_int8_calibration(weights_dir / "cand8.safetensors") is None  # no check

    on_fer2013, again = card["also"]
    assert (on_fer2013["data"], on_fer2013["split"], on_fer2013["n"]) == ("fer2013", "test", 7 * 2)
    assert on_fer2013["classes"] == list(EMOTIONS) and "contempt" not in on_fer2013["per_class"]
    assert "agreement" not in on_fer2013 and "confusion_matrix" not in on_fer2013
    # the cross-label rule: contempt is left out of the model's choice on 7-class data
    crossed = evaluate(model, load_split(fer2013, "test"), classes=cfg.classes)
    assert on_fer2013["accuracy"] == crossed.accuracy and on_fer2013["macro_f1"] == crossed.metrics()["macro_f1"]
    assert (again["data"], again["split"], again["accuracy"]) == ("again", "val", test["accuracy"])
    assert "agreement" in again

    text = (weights_dir / "MODEL_CARD.md").read_text()
    assert "**Test (FER+ valid (FER-2013 PublicTest, majority protocol), n=24)**: FER+ majority accuracy" in text
    assert "| contempt |" in text and "| **contempt** |" in text and "annotator agreement" in text
    assert "Also measured on" in text and "| fer2013 | test | 14 |" in text and "| again | val | 24 |" in text


@pytest.mark.parametrize(("spec", "expected"), [
    ("data/fer2013:test", ship.Also("fer2013", "data/fer2013", "test")),
    ("/data/ckplus48:test", ship.Also("ckplus48", "/data/ckplus48", "test")),
    ("ck=/data/ckplus48:test", ship.Also("ck", "/data/ckplus48", "test")),
    ("data/ferplus", ship.Also("ferplus", "data/ferplus", None)),  # its report split
    ("data/fer2013.csv:val", ship.Also("fer2013.csv", "data/fer2013.csv", "val")),
])
def test_also_specs(spec: str, expected: ship.Also) -> None:
    assert ship.parse_also(spec) == expected

