"""Unshipping: a shipped ensemble becomes run folders that rank and ship exactly as the file did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fer_core.models.card import ModelCard
from fer_core.models.checkpoint import load_checkpoint, round_to_storage
from fer_core.runs import ship
from fer_core.tools import unship
from fer_core.tools.choose_ensemble import candidates
from fer_core.training.loop import TrainConfig, train
from tests.conftest import write_folder_dataset

MIXED = ("fernet_s", "tiny", "tiny")  # slots (by architecture name) differ from the run order, as fernet_lmms's did


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("unship")
    data = write_folder_dataset(root / "fer", {"train": 30, "test": 6})
    runs = [train(TrainConfig(data=str(data), arch=arch, optimizer="adam", lr=0.01, epochs=1, batch_size=32,
                              schedule="none", augment=False, seed=seed, val_seed=0, out=str(root / name),
                              device="cpu", precision="fp32"), log=lambda _: None, show_bar=False)
            for arch, seed, name in (("tiny", 1, "tiny-a"), ("fernet_s", 2, "small"), ("tiny", 3, "tiny-b"))]
    weights_dir = root / "weights"
    weights_dir.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ship, "WEIGHTS_DIR", weights_dir)
        card = ship.ship(runs, "accurate", str(data), "python train.py ...", "test machine")
    return data, runs, weights_dir / "accurate.safetensors", card


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0].state_dict()


def test_every_network_comes_back_as_the_file_stores_it_in_its_own_folder(shipped, tmp_path: Path) -> None:
    _, runs, weights, card = shipped
    rebuilt = unship.unship(weights, tmp_path)
    assert [p.name for p in rebuilt] == ["shipped-small", "shipped-tiny-a", "shipped-tiny-b"]  # slot order
    for original in runs:
        folder = tmp_path / f"shipped-{original.name}"
        expected = round_to_storage(load_checkpoint(original)[0], card["storage"]).state_dict()
        got = _state(folder)
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k]) for k in got), original.name
        config = json.loads((folder / "config.json").read_text())
        assert config["train"]["seed"] == json.loads((original / "config.json").read_text())["train"]["seed"]
        assert ship.run_summary(folder) == ship.run_summary(original)


def test_rebuilt_folders_rank_and_ship_exactly_as_the_shipped_file(shipped, tmp_path: Path, monkeypatch) -> None:
    data, _, weights, card = shipped
    rebuilt = unship.unship(weights, tmp_path / "runs")
    best = [c for c in candidates(rebuilt, str(data)) if c.members == MIXED]
    assert best and best[0].accuracy == card["val"]["accuracy"]
    assert best[0].tta_accuracy == card["val"]["tta_accuracy"]
    monkeypatch.setattr(ship, "WEIGHTS_DIR", tmp_path)
    again = ship.ship(rebuilt, "accurate", str(data), "python train.py ...", "test machine")
    for key in ("epochs", "train_minutes", "val", "test"):
        assert again[key] == card[key], key
    assert sorted(again["val_acc"]) == sorted(card["val_acc"])
    shipped_again, first = _state(tmp_path / "accurate.safetensors"), _state(weights)
    assert all(torch.equal(v, first[k]) for k, v in shipped_again.items())


def test_existing_folders_are_never_overwritten(shipped, tmp_path: Path) -> None:
    _, _, weights, _ = shipped
    (tmp_path / "shipped-tiny-b").mkdir()
    (tmp_path / "shipped-tiny-b" / "model.safetensors").write_bytes(b"a user's run")
    with pytest.raises(ValueError, match="already exist"):
        unship.unship(weights, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shipped-tiny-b"]
    assert (tmp_path / "shipped-tiny-b" / "model.safetensors").read_bytes() == b"a user's run"


def test_a_file_without_a_card_or_costs_gets_a_clear_message(shipped, tmp_path: Path, capsys) -> None:
    _, _, weights, card = shipped
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(weights.read_bytes())
    assert unship.main([str(lone), "--out-dir", str(tmp_path / "runs")]) == 2
    assert "no model card" in capsys.readouterr().err
    (tmp_path / "lone.json").write_text(json.dumps({k: v for k, v in card.items() if k != "members"}))
    assert unship.main([str(lone), "--out-dir", str(tmp_path / "runs")]) == 2
    assert "does not record" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_the_shipped_file_holds_its_members_config_and_the_card_says_ensemble(shipped) -> None:
    _, _, weights, card = shipped
    _, cfg = load_checkpoint(weights)
    assert cfg.arch == "ensemble" and tuple(cfg.members) == MIXED
    assert card["arch"] == "ensemble" and [c["arch"] for c in card["config"]] == ["tiny", "fernet_s", "tiny"]
    assert ModelCard.from_dict(card).architecture == "ensemble of fernet_s + 2 tiny"


def test_slots_are_matched_to_the_cards_networks_by_architecture() -> None:
    """The shipped accurate file: slots l, m, m, m, s (its old code); its card lists the runs as shipped."""
    slots = ["fernet_l", "fernet_m", "fernet_m", "fernet_m", "fernet_s"]
    trained = ["fernet_m", "fernet_l", "fernet_s", "fernet_m", "fernet_m"]
    assert unship.slot_sources(slots, trained) == [1, 0, 3, 4, 2]
    assert unship.slot_sources(["tiny"], ["tiny"]) == [0]
    with pytest.raises(ValueError, match="the card lists fernet_m \\+ fernet_s but the file holds"):
        unship.slot_sources(["fernet_m", "fernet_m"], ["fernet_m", "fernet_s"])


def test_the_shipped_accurate_model_unships_by_its_old_letter_code(tmp_path: Path) -> None:
    """weights/accurate.safetensors names its ensemble fernet_lmmms; each slot comes back in the folder of
    the run the card says trained it, holding exactly that slot's weights."""
    from fer_core.common.paths import WEIGHTS_DIR

    weights = WEIGHTS_DIR / "accurate.safetensors"
    if not weights.is_file():
        pytest.skip("no shipped accurate model")
    rebuilt = unship.unship(weights, tmp_path)
    assert [p.name for p in rebuilt] == ["shipped-anneal-fernet_l-seed23", "shipped-gpu-fernet_m-seed32",
                                         "shipped-gpu2-fernet_m-seed22", "shipped-long-fernet_m",
                                         "shipped-ens-fernet_s-seed3"]
    model, _ = load_checkpoint(weights)
    for slot, folder in zip(model.members, rebuilt, strict=True):
        got, expected = _state(folder), slot.state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected), folder.name
        assert json.loads((folder / "config.json").read_text())["model"]["arch"] in folder.name
