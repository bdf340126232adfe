"""Unshipping: a shipped ensemble becomes run folders that rank and ship exactly as the file did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fer_core.models import zoo as models
from fer_core.models.checkpoint import load_checkpoint, round_to_storage
from fer_core.runs import ship
from fer_core.tools import unship
from fer_core.tools.choose_ensemble import candidates
from fer_core.training.loop import TrainConfig, train
from tests.conftest import write_folder_dataset

MIXED = "test_tiny_s_tiny"  # slots differ from the run order below, as fernet_lmms's did


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory):
    models.register_ensemble(MIXED, ("fernet_s", "tiny", "tiny"), "test only")
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
    yield data, runs, weights_dir / "accurate.safetensors", card
    for registry in (models.ENSEMBLES, models._REGISTRY, models._DESCRIPTIONS):
        registry.pop(MIXED)


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
    best = [c for c in candidates(rebuilt, str(data)) if c.arch == MIXED]
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
