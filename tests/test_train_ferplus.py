"""Training on FER+'s votes: every target mode learns an 8-class model, FER-2013 networks start it, and
the settings that cannot work are refused before any work is done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fer_core.common.labels import EMOTIONS, FERPLUS_EMOTIONS
from fer_core.data.dataset import load_split
from fer_core.data.votes import TARGET_MODES
from fer_core.evaluation.evaluate import evaluate
from fer_core.models.checkpoint import load_checkpoint, save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model
from fer_core.training.cli import parse_args
from fer_core.training.loop import load_matching_classes, resume, train
from fer_core.training.targets import face_targets, step_targets, target_loss
from tests.conftest import QUIET, write_ferplus_folders
from tests.test_resume import _rows, _stop_after_epochs
from tests.test_training import _cfg


@pytest.fixture(scope="module")
def ferplus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ferplus_folders(tmp_path_factory.mktemp("fp") / "ferplus", {"FER2013Train": 40, "FER2013Valid": 8})


@pytest.mark.parametrize("mode", TARGET_MODES)
def test_every_target_mode_learns_an_eight_class_model(ferplus: Path, tmp_path: Path, mode: str) -> None:
    out = train(_cfg(ferplus, tmp_path / mode, target=mode, epochs=5), **QUIET)
    _, cfg = load_checkpoint(out)
    assert cfg.classes == list(FERPLUS_EMOTIONS) and cfg.num_classes == 8
    metrics = json.loads((out / "metrics.json").read_text())
    # FER+ reports on its valid split; the run chose its epochs on a slice of train
    assert metrics["split"] == "val" and metrics["n"] == 8 * 8
    assert metrics["accuracy"] > 0.6 and metrics["per_class"]["contempt"]["support"] == 8  # chance is 1/8
    assert 0 < metrics["agreement"] <= 1 and metrics["vote_cross_entropy"] > 0
    assert json.loads((out / "config.json").read_text())["train"]["target"] == mode


def test_probability_targets_are_drawn_from_the_votes() -> None:
    per_face = torch.tensor([[0.0, 0.25, 0.75] + [0.0] * 5] * 4000)
    drawn = step_targets("probability", torch.zeros(4000, dtype=torch.long), per_face, None, 0.0,
                         torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {1, 2}
    assert drawn.eq(2).float().mean().item() == pytest.approx(0.75, abs=0.03)


def test_multitarget_loss_accepts_any_emotion_with_enough_votes() -> None:
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    first = torch.tensor([[0.0, 9.0, 0.0, 0.0]])
    second = torch.tensor([[0.0, 0.0, 9.0, 0.0]])
    wrong = torch.tensor([[9.0, 0.0, 0.0, 0.0]])
    assert target_loss("multitarget", first, mask, 0.0) == pytest.approx(target_loss("multitarget", second, mask, 0.0))
    assert target_loss("multitarget", first, mask, 0.0) < 0.01 < target_loss("multitarget", wrong, mask, 0.0)


def test_vote_targets_need_votes(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs FER\\+'s votes"):
        train(_cfg(data, tmp_path / "r", target="probability"), **QUIET)
    with pytest.raises(ValueError, match="needs FER\\+'s votes"):
        face_targets(load_split(data, "test"), "crossentropy")


def test_a_fer2013_network_starts_a_ferplus_run_class_by_class(tmp_path: Path) -> None:
    seven = create_model("tiny", 7)
    eight = create_model("tiny", 8)
    load_matching_classes(eight, list(FERPLUS_EMOTIONS), seven, list(EMOTIONS))
    head7, head8 = seven[-1], eight[-1]
    assert torch.equal(head8.weight[:7], head7.weight) and torch.equal(head8.bias[:7], head7.bias)
    conv7, conv8 = (next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d)) for net in (seven, eight))
    assert torch.equal(conv8.weight, conv7.weight)


def test_fine_tuning_a_fer2013_model_with_a_fer2013_teacher_on_ferplus(data: Path, ferplus: Path,
                                                                       tmp_path: Path) -> None:
    start = train(_cfg(data, tmp_path / "fer2013", epochs=2), **QUIET)
    out = train(_cfg(ferplus, tmp_path / "tuned", init=str(start / "model.safetensors"), target="crossentropy",
                     teacher=str(start / "model.safetensors"), distill=0.3, epochs=2), **QUIET)
    model, cfg = load_checkpoint(out)
    assert cfg.classes == list(FERPLUS_EMOTIONS)
    # scored on FER-2013 data, the 8-class model answers among FER-2013's seven
    result = evaluate(model, load_split(data, "test"), classes=cfg.classes)
    assert result.probs.shape[1] == 7 and result.classes == EMOTIONS


def test_a_ferplus_run_resumes_to_the_same_history(ferplus: Path, tmp_path: Path) -> None:
    cfg = dict(target="probability", epochs=3, augment=True)
    whole = train(_cfg(ferplus, tmp_path / "whole", **cfg), **QUIET)
    part = tmp_path / "part"
    train(_cfg(ferplus, part, **cfg), should_stop=_stop_after_epochs(1, part), **QUIET)
    resume(part, **QUIET)
    assert _rows(part) == _rows(whole)


def test_the_cli_names_the_label_source_and_its_targets(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    assert "FER+" in text and all(mode in text for mode in TARGET_MODES)


def test_an_init_of_another_architecture_is_refused(ferplus: Path, tmp_path: Path) -> None:
    other = save_checkpoint(create_model("fernet_s", 7), ModelConfig("fernet_s"), tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match="holds a fernet_s"):
        train(_cfg(ferplus, tmp_path / "r", init=str(other)), **QUIET)
