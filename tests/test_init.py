"""Starting a run from saved weights (``--init``): used to anneal a run that was stopped before
its schedule ended. The run must really start there, pin the file by hash, and refuse a mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fer_core.evaluation.cache import weights_hash
from fer_core.models.checkpoint import load_checkpoint
from fer_core.training.loop import train
from tests.conftest import QUIET
from tests.test_training import _cfg


@pytest.fixture(scope="module")
def start(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(_cfg(data, tmp_path_factory.mktemp("s") / "start", epochs=1), **QUIET) / "model.safetensors"


def test_a_run_starts_from_the_given_weights_and_pins_them(data: Path, start: Path, tmp_path: Path) -> None:
    # a learning rate too small to move anything: the trained weights must still be the starting ones
    run = train(_cfg(data, tmp_path / "run", init=str(start), lr=1e-12, schedule="none", seed=5), **QUIET)
    before, _ = load_checkpoint(start)
    after, _ = load_checkpoint(run / "model.safetensors")
    fresh = train(_cfg(data, tmp_path / "fresh", lr=1e-12, schedule="none", seed=5), **QUIET)
    random_start, _ = load_checkpoint(fresh / "model.safetensors")
    weights = [k for k, v in before.state_dict().items() if v.ndim > 1]
    assert weights and all(torch.allclose(before.state_dict()[k], after.state_dict()[k], atol=1e-6) for k in weights)
    assert not all(torch.allclose(before.state_dict()[k], random_start.state_dict()[k], atol=1e-3) for k in weights)
    pinned = json.loads((run / "config.json").read_text())["init"]
    assert pinned == {"weights": str(start), "sha256": weights_hash(start)}
    assert json.loads((fresh / "config.json").read_text())["init"] is None


@pytest.mark.parametrize(("override", "message"), [
    ({"arch": "paper"}, "holds a tiny, not a paper"),
    ({"init": "/nonexistent/w.safetensors"}, "init: no weights file"),
])
def test_bad_starting_weights_are_refused_before_any_work(data: Path, start: Path, tmp_path: Path,
                                                          override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train(_cfg(data, tmp_path / "run", **{"init": str(start), **override}), **QUIET)
    assert not (tmp_path / "run").exists()
