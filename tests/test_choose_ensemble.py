"""Choosing the shipped ensemble: every shippable subset of runs, scored on validation exactly as
the shipped file would score there, best first; runs that cannot be compared are refused. Any
subset is an ensemble (no registry of them), so two tiny runs make one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fer_core.evaluation.evaluate import evaluate
from fer_core.models import checkpoint
from fer_core.models.checkpoint import load_checkpoint, round_to_storage, stored_bytes
from fer_core.runs import ship
from fer_core.tools import choose_ensemble
from fer_core.training.loop import TrainConfig, train
from tests.conftest import write_folder_dataset


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("choose")
    data = write_folder_dataset(root / "fer", {"train": 40, "test": 4})
    return data, [train(TrainConfig(data=str(data), arch="tiny", optimizer="adam", lr=0.01, epochs=2, batch_size=32,
                                    schedule="none", augment=False, seed=seed, val_seed=0, out=str(root / f"run{seed}"),
                                    device="cpu", precision="fp32"), log=lambda _: None, show_bar=False)
                  for seed in (0, 1)]


def test_every_subset_is_scored_as_its_shipped_file_scores_on_validation(runs) -> None:
    data, (a, b) = runs
    found = choose_ensemble.candidates([a, b], str(data))
    assert sorted(c.runs for c in found) == sorted([(a,), (b,), (a, b)])
    assert [(-c.tta_accuracy, c.params) for c in found] == sorted((-c.tta_accuracy, c.params) for c in found)
    pair = next(c for c in found if len(c.runs) == 2)
    assert pair.members == ("tiny", "tiny") and pair.params == 2 * found[0].params
    assert {c.storage for c in found} == {"float16"}
    model, _ = ship.build_model(list(pair.runs))
    round_to_storage(model, "float16")
    configs = [json.loads((r / "config.json").read_text()) for r in pair.runs]
    val = ship.shared_validation_slice(configs, str(data))
    assert evaluate(model, val).accuracy == pair.accuracy
    assert evaluate(model, val, tta=True).accuracy == pair.tta_accuracy


def test_a_subset_too_big_to_ship_is_not_a_candidate(runs, monkeypatch) -> None:
    data, (a, b) = runs
    monkeypatch.setattr(checkpoint, "SHIPPED_FILE_LIMIT", stored_bytes(load_checkpoint(a)[0], "int8"))
    found = choose_ensemble.candidates([a, b], str(data))
    assert sorted(c.runs for c in found) == [(a,), (b,)] and {c.storage for c in found} == {"int8"}


def test_a_subset_too_big_for_float16_is_scored_as_its_int8_file(runs, monkeypatch) -> None:
    data, (a, b) = runs
    one = load_checkpoint(a)[0]
    pair, _ = ship.build_model([a, b])
    assert stored_bytes(one, "float16") <= stored_bytes(pair, "int8") < stored_bytes(pair, "float16")
    monkeypatch.setattr(checkpoint, "SHIPPED_FILE_LIMIT", stored_bytes(pair, "int8"))
    found = {c.runs: c for c in choose_ensemble.candidates([a, b], str(data))}
    assert found[(a,)].storage == "float16" and found[(a, b)].storage == "int8"
    assert ship.shipped_storage(pair) == "int8"
    configs = [json.loads((r / "config.json").read_text()) for r in (a, b)]
    val = ship.shared_validation_slice(configs, str(data))
    round_to_storage(pair, "int8")
    assert evaluate(pair, val).accuracy == found[(a, b)].accuracy
    assert evaluate(pair, val, tta=True).accuracy == found[(a, b)].tta_accuracy


def test_the_command_line_names_the_winner_and_its_ship_command(runs, capsys) -> None:
    data, (a, b) = runs
    assert choose_ensemble.main([str(a), str(b), "--data", str(data)]) == 0
    best = choose_ensemble.candidates([a, b], str(data))[0]
    out = capsys.readouterr().out
    assert f"python -m fer_core.runs.ship {' '.join(map(str, best.runs))} --name accurate" in out


def test_runs_validated_on_different_slices_are_refused(runs, tmp_path: Path, capsys) -> None:
    data, (a, _) = runs
    other = tmp_path / "other"
    shutil.copytree(a, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["data"]["val_hash"] = "another slice"
    (other / "config.json").write_text(json.dumps(cfg))
    assert choose_ensemble.main([str(a), str(other), "--data", str(data)]) == 2
    assert "same --val-seed" in capsys.readouterr().err


def test_a_folder_that_is_not_a_run_is_refused(runs, tmp_path: Path, capsys) -> None:
    data, (a, _) = runs
    assert choose_ensemble.main([str(a), str(tmp_path), "--data", str(data)]) == 2
    assert "not a training run folder" in capsys.readouterr().err


def test_a_second_comparison_reuses_each_runs_cached_probabilities(runs, monkeypatch) -> None:
    data, (a, b) = runs
    first = choose_ensemble.candidates([a, b], str(data))

    def no_evaluation(*_args, **_kwargs):
        raise AssertionError("a run already scored on this slice was evaluated again")

    monkeypatch.setattr(choose_ensemble, "predict_probs", no_evaluation)
    assert choose_ensemble.candidates([a, b], str(data)) == first
