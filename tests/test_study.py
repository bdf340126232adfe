"""The optimizer × learning-rate study on a tiny grid: outputs, identical budgets, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fer_core.training import loop as training
from fer_core.training import study
from fer_core.training.loop import TrainConfig
from tests.conftest import write_folder_dataset


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_folder_dataset(tmp_path / "fer", {"train": 12, "test": 4})


def grid(data: Path, out: Path, optimizers=("sgd", "amsgrad"), lrs=(0.01, 1e12), **kw) -> study.StudyConfig:
    base = TrainConfig(data=str(data), arch="tiny", epochs=1, batch_size=16, schedule="none", seed=3, **kw)
    return study.StudyConfig(base=base, optimizers=list(optimizers), lrs=list(lrs), out=out)


def test_tiny_grid_writes_table_json_and_heatmap(tiny_data: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "study"
    prepared = []
    original = training.prepare_data
    monkeypatch.setattr(training, "prepare_data", lambda cfg: prepared.append(cfg) or original(cfg))
    counting = training.prepare_data
    cells = study.run_study(grid(tiny_data, out), log=lambda _: None)
    assert len(prepared) == 1  # four cells, one data preparation
    assert training.prepare_data is counting  # the study's memo is removed afterwards
    assert [(c.optimizer, c.lr) for c in cells] == [("sgd", 0.01), ("sgd", 1e12), ("amsgrad", 0.01), ("amsgrad", 1e12)]
    # a learning rate of 1e12 makes SGD diverge: recorded as a failed cell, the study goes on
    sgd_huge = cells[1]
    assert sgd_huge.status == "failed" and "loss became" in sgd_huge.error
    finished = [c for c in cells if c.status == "finished"]
    assert finished and all(0 <= c.best_val_acc <= 1 and 0 <= c.test_acc <= 1 for c in finished)
    rows = list(csv.DictReader((out / "study.csv").open()))
    assert [r["optimizer"] for r in rows] == ["sgd", "sgd", "amsgrad", "amsgrad"]
    meta = json.loads((out / "study.json").read_text())
    assert meta["cells_done"] == meta["cells_total"] == 4
    assert meta["winner"]["best_val_acc"] == max(c.best_val_acc for c in finished)
    assert meta["budget"]["epochs"] == 1 and meta["budget"]["seed"] == 3
    assert "plotly" in (out / "heatmap.html").read_text().lower()
    # every cell is an ordinary run with the same budget: only optimizer and lr differ
    configs = [json.loads((out / "cells" / c.name / "config.json").read_text()) for c in cells]
    budgets = [{k: v for k, v in cfg["train"].items() if k not in ("optimizer", "lr", "out")} for cfg in configs]
    assert all(b == budgets[0] for b in budgets)
    assert len({cfg["data"]["train_hash"] for cfg in configs}) == 1
    # what the app's study page reads back
    meta, loaded = study.load_study(out)
    assert [c.status for c in loaded] == [c.status for c in cells] and meta["optimizers"] == ["sgd", "amsgrad"]
    fig = study.heatmap_figure(loaded)
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    assert list(fig.data[0].y) == ["sgd", "amsgrad"] and list(fig.data[0].x) == ["1e+12", "0.01"]
    assert fig.data[1].z[1][1] == pytest.approx(cells[2].test_acc * 100)  # amsgrad, lr 0.01
    assert fig.data[0].text[0][0] == "failed"  # sgd, lr 1e12
    with pytest.raises(ValueError, match="holds no study"):
        study.load_study(tmp_path)


def test_resume_skips_finished_cells_and_reruns_interrupted_ones(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    sc = grid(tiny_data, out, optimizers=("amsgrad",), lrs=(0.01, 0.001))
    study.run_study(sc, log=lambda _: None)
    kept = out / "cells" / "amsgrad-lr0.01" / "model.safetensors"
    kept_mtime = kept.stat().st_mtime_ns
    # simulate a study killed in the middle of a cell
    progress = out / "cells" / "amsgrad-lr0.001" / "progress.json"
    progress.write_text(json.dumps({**json.loads(progress.read_text()), "status": "running"}))
    (out / "cells" / "amsgrad-lr0.001" / "metrics.json").unlink()
    lines: list[str] = []
    cells = study.run_study(sc, log=lines.append)
    assert "2 cells, 1 already done, 1 to run" in lines[0]
    assert any("amsgrad-lr0.001" in line and "finished" in line for line in lines)
    assert all(c.status == "finished" for c in cells)
    assert kept.stat().st_mtime_ns == kept_mtime  # finished cells were not retrained


def test_resume_with_another_budget_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    study.run_study(grid(tiny_data, out, optimizers=("adam",), lrs=(0.01,)), log=lambda _: None)
    other = grid(tiny_data, out, optimizers=("adam",), lrs=(0.01,))
    other.base.epochs = 2
    with pytest.raises(ValueError, match=r"different budget \(epochs\)"):
        study.run_study(other, log=lambda _: None)


def test_cli_refuses_bad_grids(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--data", str(tiny_data), "--arch", "tiny", "--out", str(tmp_path / "s")]
    assert study.main([*args, "--optimizers", "sgd,lion"]) == 2
    assert "unknown optimizer(s) lion" in capsys.readouterr().err
    assert study.main([*args, "--lrs", "0.1,-1"]) == 2
    assert "learning rates must be positive" in capsys.readouterr().err
    assert study.main([*args, "--optimizers", "adam", "--lrs", "0.01", "--data", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
