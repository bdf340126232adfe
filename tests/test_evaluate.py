"""The evaluation CLI prints the paper-style report and writes the documented JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_core import EMOTIONS
from fer_core.evaluation.evaluate import Evaluation, evaluate, main
from fer_core.models.checkpoint import save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model


def test_metrics_of_a_known_prediction() -> None:
    labels = np.array([0, 0, 1, 2, 3, 3, 4, 5, 6, 6])
    probs = np.eye(7)[[0, 1, 1, 2, 3, 3, 4, 5, 6, 0]]
    m = Evaluation(probs=probs, labels=labels, tta=False).metrics()
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["per_class"]["angry"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["confusion_matrix"][6] == [1, 0, 0, 0, 0, 0, 1]
    assert set(m) >= {"accuracy", "macro_f1", "weighted_f1", "per_class", "confusion_matrix", "n"}


def test_cli_prints_report_and_writes_json(folder_data: Path, tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    weights = save_checkpoint(create_model("tiny"), ModelConfig("tiny"), tmp_path / "m.safetensors")
    out = tmp_path / "m.json"
    assert main(["--data", str(folder_data), "--split", "test", "--weights", str(weights), "--tta",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "macro avg" in text and "confusion matrix" in text and "tta=on" in text
    m = json.loads(out.read_text())
    assert m["n"] == 70 and sum(map(sum, m["confusion_matrix"])) == 70 and list(m["per_class"]) == list(EMOTIONS)


def test_cli_reports_bad_paths_without_traceback(folder_data: Path, tmp_path: Path, capsys) -> None:
    assert main(["--data", str(folder_data), "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "error: no weights file" in capsys.readouterr().err


def test_cli_val_is_the_slice_training_held_out(folder_data: Path, tmp_path: Path, capsys) -> None:
    from fer_core.training.loop import TrainConfig, prepare_data

    weights = save_checkpoint(create_model("tiny"), ModelConfig("tiny"), tmp_path / "m.safetensors")
    out = tmp_path / "val.json"
    assert main(["--data", str(folder_data), "--split", "val", "--seed", "3", "--weights", str(weights),
                 "--json", str(out)]) == 0
    assert "validation slice of train/ for seed 3" in capsys.readouterr().out
    held_out = prepare_data(TrainConfig(data=str(folder_data), seed=3)).val
    assert json.loads(out.read_text())["n"] == len(held_out) > 0


def test_cli_unseen_leaves_out_test_faces_copied_into_train(folder_data: Path, tmp_path: Path, capsys) -> None:
    import shutil

    weights = save_checkpoint(create_model("tiny"), ModelConfig("tiny"), tmp_path / "m.safetensors")
    copied = sorted((folder_data / "test").rglob("*.*"))[:3]
    for i, face in enumerate(copied):
        shutil.copy(face, folder_data / "train" / face.parent.name / f"copy{i}{face.suffix}")
    out = tmp_path / "unseen.json"
    assert main(["--data", str(folder_data), "--split", "test", "--weights", str(weights), "--unseen",
                 "--json", str(out)]) == 0
    assert "3 of 70 faces have a copy in train/" in capsys.readouterr().out
    assert json.loads(out.read_text())["n"] == 67
    with pytest.raises(SystemExit):
        main(["--data", str(folder_data), "--split", "train", "--weights", str(weights), "--unseen"])
    assert main(["--data", str(folder_data), "--split", "val", "--weights", str(weights), "--unseen"]) == 2
    assert "--unseen applies to test" in capsys.readouterr().err


@pytest.mark.data
def test_the_inference_form_in_bf16_scores_as_fp32(real_data: Path) -> None:
    """Every score runs the folded network in bf16 where the CPU has it; on the shipped fast model
    that moves test accuracy by under 0.1 point against the fp32 training form."""
    from fer_core.data.dataset import load_split
    from fer_core.models.active import DEFAULT_WEIGHTS
    from fer_core.models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(DEFAULT_WEIGHTS)
    test = load_split(real_data, "test")
    auto, fp32 = evaluate(model, test), evaluate(model, test, precision="fp32")
    assert auto.n == fp32.n == 3589
    assert abs(auto.accuracy - fp32.accuracy) < 0.001
    assert (auto.probs.argmax(1) == fp32.probs.argmax(1)).mean() > 0.99
