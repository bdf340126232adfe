"""The GPU batch driver: epochs sized from periods measured under full load, runs packed for the trip back."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fer_core.models.checkpoint import load_checkpoint
from fer_core.tools import gpu_batch
from tests.conftest import write_folder_dataset


def _job(arch: str, ends: list[float]) -> gpu_batch.Job:
    return gpu_batch.Job(arch, 0, Path(arch), epoch_ends=ends)


def test_periods_count_only_epochs_run_while_every_job_was_running() -> None:
    # the small job starts fast and is done before the big one's first epoch ends: the big one's
    # later epochs ran alone and look fast (1 s); only its epochs beside the others count (3 s)
    small = _job("fernet_s", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    big = _job("fernet_l", [5, 8, 9, 10])
    other = _job("fernet_m", [2, 4, 6, 8, 10, 11])
    periods = gpu_batch.concurrent_periods([small, big, other])
    assert periods == {"fernet_s": 1, "fernet_l": 3, "fernet_m": 2}


def test_a_probe_job_that_died_early_stops_the_batch() -> None:
    with pytest.raises(RuntimeError, match="before its second epoch"):
        gpu_batch.concurrent_periods([_job("fernet_s", [1, 2]), _job("fernet_l", [5])])


def test_the_wrap_up_after_the_last_epoch_is_the_slowest_finished_jobs() -> None:
    # a run killed between its last epoch and its exit keeps no metrics: that gap is planned for
    done = gpu_batch.Job("fernet_l", 0, Path("l"), epoch_ends=[5, 8, 9], exited=21)
    quick = gpu_batch.Job("fernet_s", 0, Path("s"), epoch_ends=[1, 2, 3], exited=4)
    running = gpu_batch.Job("fernet_m", 0, Path("m"), epoch_ends=[2, 4])
    killed = gpu_batch.Job("fernet_m", 1, Path("k"), epoch_ends=[2, 4], exited=60, killed=True)
    assert gpu_batch.wrap_up_seconds([done, quick, running, killed]) == 12
    assert gpu_batch.wrap_up_seconds([running, killed]) == 0


def test_epochs_fit_the_time_left_with_a_margin_and_a_cap() -> None:
    assert gpu_batch.plan_epochs({"fernet_l": 5.0, "fernet_s": 0.01}, 500, cap=300) == {"fernet_l": 85, "fernet_s": 300}


@pytest.mark.slow
def test_a_batch_trains_every_run_and_packs_it_with_float16_weights(tmp_path: Path, monkeypatch) -> None:
    data = write_folder_dataset(tmp_path / "fer", {"train": 30})
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # train.py is run from the project root
    code = gpu_batch.main(["--data", str(data), "--runs", "tiny:1", "tiny:2", "--budget", "120",
                           "--out-dir", str(tmp_path / "runs"), "--pack-dir", str(tmp_path / "out"),
                           "--probe-epochs", "3", "--max-epochs", "2", "--pack-seconds", "5", "--",
                           "--device", "cpu", "--batch-size", "16", "--val-seed", "0"])
    assert code == 0
    for seed in (1, 2):
        with tarfile.open(tmp_path / "out" / f"gpu-tiny-seed{seed}.tar") as tar:
            names = tar.getnames()
            tar.extractall(tmp_path / "back", filter="data")
        assert f"gpu-tiny-seed{seed}/train.log" in names and f"gpu-tiny-seed{seed}/config.json" in names
        assert not any(n.endswith("resume.safetensors") for n in names)
        run = tmp_path / "back" / f"gpu-tiny-seed{seed}"
        assert len((run / "history.csv").read_text().splitlines()) == 1 + 2  # header + the capped 2 epochs
        assert (run / "metrics.json").is_file() and (run / "report.txt").is_file()  # not killed while wrapping up
        stored = load_file(run / "model.safetensors")
        assert {t.dtype for t in stored.values() if t.ndim > 1} == {torch.float16}
        load_checkpoint(run)  # and it still loads


