"""``torchrun --nproc_per_node=2 train.py``: DistributedDataParallel on CPU (gloo). Two real processes
train one run, only rank 0 writes it, and a run interrupted mid-way resumes to exactly the history of
an uninterrupted one."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fer_core.training import cli as train_cli
from tests.conftest import write_folder_dataset

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.slow

FLAGS = ["--arch", "tiny", "--batch-size", "32", "--optimizer", "adam", "--lr", "0.01", "--schedule", "none",
         "--device", "cpu", "--precision", "fp32", "--augment"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("ddp") / "fer", {"train": 240, "test": 10})


def torchrun(*args: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def history(run: Path) -> list[list[str]]:
    """Every column but the wall-clock seconds."""
    return [row[:-1] for row in csv.reader((run / "history.csv").open())]


def test_two_processes_train_one_run_and_resume_it_exactly(data: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    done = torchrun("--data", str(data), *FLAGS, "--epochs", "4", "--out", str(whole))
    assert done.returncode == 0, done.stdout + done.stderr
    config = json.loads((whole / "config.json").read_text())
    assert config["world_size"] == 2 and config["train"]["batch_size"] == 32
    assert json.loads((whole / "progress.json").read_text())["status"] == "finished"
    assert (whole / "metrics.json").is_file() and not (whole / "resume.safetensors").exists()
    assert len(history(whole)) == 5  # header + 4 epochs, written once (by rank 0)
    assert done.stdout.count("run folder:") == 1  # one process speaks for the run

    cut = tmp_path / "cut"
    proc = torchrun("--data", str(data), *FLAGS, "--epochs", "4", "--out", str(cut), wait=False)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (cut / "history.csv").is_file() and len((cut / "history.csv").read_text().splitlines()) >= 3:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: torchrun and both ranks
            break
        time.sleep(0.05)
    proc.wait(60)
    stopped_at = len(history(cut)) - 1
    assert 2 <= stopped_at < 4 and (cut / "resume.safetensors").is_file(), proc.stdout.read().decode()

    resumed = torchrun("--resume", str(cut))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert history(cut) == history(whole)  # as if it had never stopped
    assert json.loads((cut / "progress.json").read_text())["status"] == "finished"


def test_a_two_process_run_is_not_resumed_by_one(data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"data": str(data), "arch": "tiny"}, "world_size": 2}))
    (run / "progress.json").write_text(json.dumps({"status": "cancelled"}))
    import torch

    from fer_core.models.zoo import create_model
    from fer_core.training.loop import TrainConfig, build_optimizer
    from fer_core.training.resume import save_state

    model = create_model("tiny")
    save_state(run, epoch=1, best_acc=0.5, elapsed_s=1.0, model=model,
               opt=build_optimizer(TrainConfig(arch="tiny"), model), sched=None, gen=torch.Generator())
    assert train_cli.main(["--resume", str(run)]) == 2
    assert "torchrun --nproc_per_node=2 train.py --resume" in capsys.readouterr().err
