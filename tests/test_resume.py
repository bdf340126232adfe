"""Resuming a stopped run: it must end exactly as an uninterrupted run, and refuse what it cannot do."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from fer_core.training.history import read_history
from fer_core.training.loop import TrainingError, resume, train
from fer_core.training.resume import _META_KEY as META_KEY
from fer_core.training.resume import STATE_FILE
from tests.conftest import write_folder_dataset
from tests.test_training import _cfg

# Everything that carries state across epochs: one-cycle schedule, Nesterov momentum,
# per-sample augmentation (data generator) and dropout (global generator; tiny has it too).
RECIPE = dict(arch="tiny", epochs=3, augment=True, schedule="onecycle", optimizer="sgd_nesterov", lr=0.05)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("d") / "fer", {"train": 24, "test": 6})


def _stop_after_epochs(n: int, run: Path):
    """Cancels the run during the first step of epoch n + 1, as the app's Cancel or a Ctrl-C would."""
    return lambda: len(read_history(run)) >= n


def _rows(run: Path) -> list[list[str]]:
    return [r[:-1] for r in csv.reader((run / "history.csv").open())]  # all but wall-clock seconds


def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(data: Path, tmp_path: Path) -> None:
    quiet = dict(log=lambda _: None, show_bar=False)
    whole = train(_cfg(data, tmp_path / "whole", **RECIPE), **quiet)
    cut = train(_cfg(data, tmp_path / "cut", **RECIPE), should_stop=_stop_after_epochs(1, tmp_path / "cut"), **quiet)
    assert json.loads((cut / "progress.json").read_text())["status"] == "cancelled"
    assert len(_rows(cut)) == 1 + 1 and (cut / STATE_FILE).is_file()

    resume(cut, **quiet)
    assert _rows(cut) == _rows(whole)
    assert json.loads((cut / "progress.json").read_text())["status"] == "finished"
    assert not (cut / STATE_FILE).exists()  # a finished run needs no resume state
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert all(a[k].equal(b[k]) for k in a)
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (whole, cut)]
    assert metrics[0]["accuracy"] == metrics[1]["accuracy"]


def test_resume_refuses_what_it_cannot_continue(data: Path, tmp_path: Path) -> None:
    quiet = dict(log=lambda _: None, show_bar=False)
    with pytest.raises(TrainingError, match="not a run folder"):
        resume(tmp_path, **quiet)
    done = train(_cfg(data, tmp_path / "done", epochs=1), **quiet)
    with pytest.raises(TrainingError, match="already finished"):
        resume(done, **quiet)

    early = train(_cfg(data, tmp_path / "early"), should_stop=lambda: True, **quiet)
    with pytest.raises(TrainingError, match="before finishing its first epoch"):
        resume(early, **quiet)

    cut = train(_cfg(data, tmp_path / "cut"), should_stop=_stop_after_epochs(1, tmp_path / "cut"), **quiet)
    state = (cut / STATE_FILE).read_bytes()
    (cut / STATE_FILE).write_bytes(b"not safetensors")
    with pytest.raises(TrainingError, match="unreadable"):
        resume(cut, **quiet)

    # a state from an older writer: readable, but without what restoring needs
    from safetensors import safe_open
    from safetensors.torch import save_file

    (cut / STATE_FILE).write_bytes(state)
    with safe_open(str(cut / STATE_FILE), framework="pt") as fh:
        meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    old = json.loads(meta[META_KEY])
    del old["opt_scalars"]
    save_file(tensors, str(cut / STATE_FILE), metadata={META_KEY: json.dumps(old)})
    with pytest.raises(TrainingError, match="lacks opt_scalars"):
        resume(cut, **quiet)


def test_resume_refuses_data_that_changed(tmp_path: Path) -> None:
    quiet = dict(log=lambda _: None, show_bar=False)
    data = write_folder_dataset(tmp_path / "fer", {"train": 24, "test": 6})
    cut = train(_cfg(data, tmp_path / "cut"), should_stop=_stop_after_epochs(1, tmp_path / "cut"), **quiet)
    best = (cut / "model.safetensors").read_bytes()
    write_folder_dataset(tmp_path / "fer", {"train": 24, "test": 6}, seed=1)  # other faces, same layout
    with pytest.raises(TrainingError, match="not the ones this run started on"):
        resume(cut, **quiet)
    assert (cut / "model.safetensors").read_bytes() == best and (cut / STATE_FILE).is_file()


def test_cli_resume_takes_no_other_settings(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import train as train_cli

    cut = train(_cfg(data, tmp_path / "cut", epochs=2), should_stop=_stop_after_epochs(1, tmp_path / "cut"),
                log=lambda _: None, show_bar=False)
    with pytest.raises(SystemExit):
        train_cli.main(["--resume", str(cut), "--lr", "0.1"])
    assert "drop --lr" in capsys.readouterr().err
    assert train_cli.main(["--resume", str(cut)]) == 0
    assert json.loads((cut / "progress.json").read_text())["status"] == "finished"
    assert train_cli.main(["--resume", str(cut)]) == 2
    assert "already finished" in capsys.readouterr().err


def test_ctrl_c_marks_the_run_cancelled_and_it_resumes(data: Path, tmp_path: Path, capsys) -> None:
    import train as train_cli

    run = tmp_path / "run"

    def ctrl_c_in_epoch_2() -> bool:
        if len(read_history(run)) >= 1:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data, run, **RECIPE), should_stop=ctrl_c_in_epoch_2, show_bar=False)
    assert json.loads((run / "progress.json").read_text())["status"] == "cancelled"
    assert f"python train.py --resume {run}" in capsys.readouterr().out
    assert train_cli.main(["--resume", str(run)]) == 0
    assert [int(r["epoch"]) for r in read_history(run)] == [1, 2, 3]
