"""Distillation: targets blend label and teacher, the teacher is pinned by hash, bad teachers are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fer_core import EMOTIONS
from fer_core.data.dataset import load_split
from fer_core.evaluation.evaluate import predict_probs
from fer_core.models.checkpoint import load_checkpoint, save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model
from fer_core.training.distill import teacher_probs
from fer_core.training.loop import TrainingError, resume, train
from fer_core.training.resume import STATE_FILE
from fer_core.training.targets import step_targets
from tests.conftest import QUIET
from tests.test_resume import _rows, _stop_after_epochs
from tests.test_training import _cfg


@pytest.fixture(scope="module")
def teacher(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(_cfg(data, tmp_path_factory.mktemp("t") / "teacher"), **QUIET) / "model.safetensors"


def test_targets_blend_one_hot_labels_with_the_teachers_probabilities() -> None:
    labels = torch.tensor([0, 3])
    soft = torch.tensor([[0.1, 0.2, 0.0, 0.7, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5, 0.0, 0.5, 0.0]])
    g = torch.Generator()

    def blended(teacher: torch.Tensor | None, weight: float) -> torch.Tensor:
        return step_targets("majority", labels, None, teacher, weight, g)

    assert blended(None, 0.5) is labels  # no teacher: plain class indices
    assert blended(soft, 0.0).argmax(1).tolist() == [0, 3]
    assert torch.equal(blended(soft, 1.0), soft)
    mixed = blended(soft, 0.5)
    assert torch.allclose(mixed[0], torch.tensor([0.55, 0.1, 0, 0.35, 0, 0, 0]))
    assert torch.allclose(mixed.sum(1), torch.ones(2))


def test_teacher_answers_are_its_probabilities_averaged_with_the_mirror(data: Path, teacher: Path) -> None:
    images = (torch.rand(5, 1, 48, 48) * 255).to(torch.uint8)
    soft = teacher_probs(teacher, images, torch.device("cpu"), "fp32", batch_size=2)
    model, _ = load_checkpoint(teacher)
    plain, mirror = (predict_probs(model, x, precision="fp32") for x in (images, images.flip(3)))
    assert soft.shape == (5, 7)
    assert torch.allclose(soft, torch.from_numpy((plain + mirror) / 2), atol=1e-5)
    assert torch.allclose(teacher_probs(teacher, images.flip(3), torch.device("cpu"), "fp32"), soft, atol=1e-5)


def test_the_student_follows_its_teacher_and_its_config_pins_the_teacher(data: Path, tmp_path: Path) -> None:
    # A teacher that answers "happy" for every face: a student taught by it alone must say "happy"
    # too, whatever the labels say; a student taught by the labels alone must not.
    opinionated = create_model("tiny")
    with torch.no_grad():
        opinionated[-1].bias[EMOTIONS.index("happy")] = 20.0
    teacher = save_checkpoint(opinionated, ModelConfig("tiny"), tmp_path / "happy.safetensors")
    test = load_split(data, "test").images

    def share_happy(run: Path) -> float:
        model, _ = load_checkpoint(run / "model.safetensors")
        return float((predict_probs(model, test).argmax(1) == EMOTIONS.index("happy")).mean())

    student = train(_cfg(data, tmp_path / "student", teacher=str(teacher), distill=1.0), **QUIET)
    plain = train(_cfg(data, tmp_path / "plain"), **QUIET)
    assert share_happy(student) > 0.9 and share_happy(plain) < 0.5
    config = json.loads((student / "config.json").read_text())
    assert config["train"]["teacher"] == str(teacher) and config["train"]["distill"] == 1.0
    assert len(config["teacher"]["sha256"]) == 64
    assert json.loads((plain / "config.json").read_text())["teacher"] is None


@pytest.mark.parametrize(("override", "message"), [
    ({"teacher": "/nonexistent/w.safetensors"}, "teacher: no weights file"),
    ({"teacher": "PICKLE"}, "pickled checkpoints are refused"),
    ({"teacher": "CORRUPT"}, "not a readable safetensors file"),
    ({"distill": 1.5}, "distillation weight must lie in"),
])
def test_bad_teachers_are_refused_before_any_work(data: Path, tmp_path: Path, override: dict, message: str) -> None:
    if override.get("teacher") in ("PICKLE", "CORRUPT"):
        bad = tmp_path / ("t.pt" if override["teacher"] == "PICKLE" else "t.safetensors")
        bad.write_bytes(b"garbage")
        override = {"teacher": str(bad)}
    with pytest.raises(ValueError, match=message):
        train(_cfg(data, tmp_path / "run", **override), **QUIET)
    assert not (tmp_path / "run").exists()


def test_a_distilled_run_resumes_exactly_but_not_with_another_teacher(data: Path, teacher: Path,
                                                                      tmp_path: Path) -> None:
    own = tmp_path / "teacher.safetensors"
    shutil.copy(teacher, own)
    kw = dict(teacher=str(own), epochs=3)
    whole = train(_cfg(data, tmp_path / "whole", **kw), **QUIET)
    cut = train(_cfg(data, tmp_path / "cut", **kw), should_stop=_stop_after_epochs(1, tmp_path / "cut"), **QUIET)
    other = train(_cfg(data, tmp_path / "other", seed=1, epochs=1), **QUIET) / "model.safetensors"
    shutil.copy(own, tmp_path / "kept.safetensors")
    shutil.copy(other, own)  # the teacher file changed under the run
    with pytest.raises(TrainingError, match="not the file this run started with"):
        resume(cut, **QUIET)
    assert (cut / STATE_FILE).is_file()
    shutil.copy(tmp_path / "kept.safetensors", own)
    resume(cut, **QUIET)
    assert _rows(cut) == _rows(whole)
