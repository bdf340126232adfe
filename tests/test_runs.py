"""The run manager: lock, stale lock, cancel, promote, and what a crash leaves behind.

The slow tests start the real worker process (``python -m fer_core.runs.worker``) on a tiny
generated data set and then cancel it or ``kill -9`` it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from fer_core.common.atomic import write_json
from fer_core.common.paths import runs_dir
from fer_core.models.active import DEFAULT_WEIGHTS, active_weights
from fer_core.models.checkpoint import load_checkpoint, save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model
from fer_core.runs import manager as runs
from fer_core.runs.app_settings import AppSettings
from fer_core.training.loop import TrainConfig, TrainingError
from tests.conftest import write_folder_dataset


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_folder_dataset(tmp_path / "fer", {"train": 20, "test": 5})


def tiny_cfg(data: Path, **kw) -> TrainConfig:
    return TrainConfig(**{"data": str(data), "arch": "tiny", "epochs": 1, "batch_size": 16, "optimizer": "amsgrad",
                          "lr": 0.01, "schedule": "none", **kw})


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def fake_run(name: str, status: str, pid: int | None = None, with_model: bool = True, **progress) -> Path:
    """A run folder as ``train`` leaves it, without training."""
    out = runs_dir() / name
    out.mkdir(parents=True)
    write_json(out / "progress.json", {"status": status, "pid": pid or os.getpid(),
                                       "started": "2026-01-01T00:00:00+00:00", **progress})
    write_json(out / "config.json", {"train": {"arch": "tiny", "optimizer": "adam", "lr": 0.01}})
    (out / "history.csv").write_text("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n"
                                     "1,1.9,0.2,1.8,0.3,0.01,1\n")
    if with_model:
        save_checkpoint(create_model("tiny"), ModelConfig(arch="tiny"), out / "model.safetensors")
    return out


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# --------------------------------------------------------------------------- lock


def test_pid_alive_sees_dead_and_live_processes() -> None:
    assert runs.pid_alive(os.getpid())
    assert not runs.pid_alive(dead_pid())
    assert not runs.pid_alive(None) and not runs.pid_alive("12") and not runs.pid_alive(-1)


def test_live_lock_refuses_a_second_start(tiny_data: Path) -> None:
    write_json(runs.lock_path(), {"pid": os.getpid(), "run": str(runs_dir() / "other")})
    with pytest.raises(runs.RunBusy, match="already in progress"):
        runs.start_run(tiny_cfg(tiny_data))
    assert runs.read_lock()["pid"] == os.getpid()  # the holder's lock is untouched
    assert [p.name for p in runs_dir().iterdir()] == [runs.LOCK_NAME]  # and no run folder was made


@pytest.mark.parametrize("content", ["dead", "garbage"])
def test_stale_or_corrupt_lock_is_cleared(content: str) -> None:
    runs.lock_path().parent.mkdir(parents=True, exist_ok=True)
    runs.lock_path().write_text(json.dumps({"pid": dead_pid(), "run": "x"}) if content == "dead" else "{not json")
    assert runs.current_lock() is None
    assert not runs.lock_path().exists()


def test_release_lock_only_by_its_holder() -> None:
    write_json(runs.lock_path(), {"pid": os.getpid(), "run": "x"})
    runs.release_lock(os.getpid() + 1)
    assert runs.lock_path().exists()
    runs.release_lock(os.getpid())
    assert not runs.lock_path().exists()


# --------------------------------------------------------------------------- refusing before starting


def test_bad_settings_are_refused_before_anything_is_made(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        runs.start_run(tiny_cfg(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="learning rate"):
        runs.start_run(tiny_cfg(tiny_data, lr=-1.0))
    with pytest.raises(ValueError, match="at most 3 epochs"):
        runs.start_run(tiny_cfg(tiny_data, epochs=5), AppSettings(max_epochs=3))
    with pytest.raises(ValueError, match="full data set is not allowed"):
        runs.start_run(tiny_cfg(tiny_data, subset=None), AppSettings(max_subset=50))
    with pytest.raises(ValueError, match="disabled"):
        runs.start_run(tiny_cfg(tiny_data), AppSettings(allow_training=False))
    assert runs.read_lock() is None
    assert not runs_dir().exists() or not any(runs_dir().iterdir())


def test_unwritable_run_folder_gives_a_clear_error(tiny_data: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(TrainingError, match="cannot write the run folder"):
        runs.start_run(tiny_cfg(tiny_data, out=str(blocker / "run")))
    assert runs.read_lock() is None  # the lock is given back


def test_unwritable_runs_folder_gives_a_clear_error(tiny_data: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "runs-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("FER_RUNS_DIR", str(blocker))
    with pytest.raises(TrainingError, match="cannot write the runs folder"):
        runs.start_run(tiny_cfg(tiny_data))
    assert runs.list_runs() == []


def test_full_disk_is_refused_with_a_clear_error(tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda _: SimpleNamespace(total=10**9, used=10**9, free=2**20))
    with pytest.raises(TrainingError, match=r"\(nearly\) full: 1 MB free"):
        runs.start_run(tiny_cfg(tiny_data))
    assert runs.read_lock() is None


# --------------------------------------------------------------------------- listing and status


def test_list_runs_newest_first_with_interrupted_detected() -> None:
    fake_run("old-finished", "finished", started="2026-01-01T00:00:00+00:00", test_acc=0.5)
    fake_run("mid-crashed", "running", pid=dead_pid(), started="2026-01-02T00:00:00+00:00")
    fake_run("new-failed", "failed", started="2026-01-03T00:00:00+00:00", error="TrainingError: loss became nan")
    listed = runs.list_runs()
    assert [r.name for r in listed] == ["new-failed", "mid-crashed", "old-finished"]
    assert [r.status for r in listed] == ["failed", "interrupted", "finished"]
    assert "loss became nan" in listed[0].error and "died" in listed[1].error
    assert listed[2].test_acc == 0.5 and listed[2].config["optimizer"] == "adam"
    assert runs.read_history(listed[2].path)[0]["val_acc"] == pytest.approx(0.3)


def test_estimate_uses_measured_throughput(tiny_data: Path) -> None:
    fake_run("measured", "finished", images_per_s=100.0)
    est = runs.estimate(tiny_cfg(tiny_data, epochs=10))
    assert est.source == "previous runs" and est.images_per_s == 100.0
    assert est.images_per_epoch == 7 * 18  # 20 per class less the 10% validation slice
    assert est.seconds == pytest.approx(runs.STARTUP_SECONDS + 10 * 126 / 100 + (10 * 14 + 35) / 300)


# --------------------------------------------------------------------------- promote / restore


def test_promote_finished_run_and_restore_default() -> None:
    done = fake_run("done", "finished")
    assert runs.promote(done) == (done / "model.safetensors").resolve()
    assert active_weights() == (done / "model.safetensors").resolve()
    load_checkpoint(active_weights())
    runs.restore_default()
    assert active_weights() == DEFAULT_WEIGHTS


def test_photos_use_the_accurate_model_unless_the_user_promoted_one(tmp_path, monkeypatch) -> None:
    import fer_core.models.active as active

    monkeypatch.setattr(active, "ACCURATE_WEIGHTS", tmp_path / "accurate.safetensors")
    assert active.accurate_weights() == DEFAULT_WEIGHTS  # none shipped: the fast model everywhere
    (tmp_path / "accurate.safetensors").write_bytes(b"")
    assert active.accurate_weights() == tmp_path / "accurate.safetensors"
    assert active_weights() == DEFAULT_WEIGHTS  # live video keeps the fast one
    monkeypatch.setenv("FER_WEIGHTS", str(DEFAULT_WEIGHTS))  # an explicit choice, even of the fast one, wins
    assert active.accurate_weights() == active_weights() == DEFAULT_WEIGHTS
    monkeypatch.delenv("FER_WEIGHTS")
    done = fake_run("mine", "finished")
    runs.promote(done)
    assert active.accurate_weights() == active_weights() == (done / "model.safetensors").resolve()


@pytest.mark.parametrize("status", ["running", "cancelled", "failed"])
def test_promote_refuses_unfinished_runs(status: str) -> None:
    run = fake_run(f"r-{status}", status, pid=dead_pid() if status == "running" else None)
    with pytest.raises(runs.RunError, match="only a finished run"):
        runs.promote(run)
    assert active_weights() == DEFAULT_WEIGHTS


# --------------------------------------------------------------------------- cancel


def test_cancel_without_a_run_or_of_another_run_is_refused() -> None:
    with pytest.raises(runs.RunError, match="no launched run"):
        runs.cancel_run()
    write_json(runs.lock_path(), {"pid": os.getpid(), "run": str(runs_dir() / "a")})
    with pytest.raises(runs.RunError, match="is not the run in progress"):
        runs.cancel_run(runs_dir() / "b")


def test_cancel_never_signals_a_process_that_is_not_a_worker() -> None:
    """PID reuse: the lock names a live process that is not ours; it must survive."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_json(runs.lock_path(), {"pid": bystander.pid, "run": str(runs_dir() / "a")})
        with pytest.raises(runs.RunError, match="no longer a training worker"):
            runs.cancel_run()
        time.sleep(0.2)
        assert bystander.poll() is None
        assert runs.read_lock() is None
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.slow
def test_real_run_cancel_keeps_best_checkpoint_and_frees_the_lock(tiny_data: Path) -> None:
    out = runs.start_run(tiny_cfg(tiny_data, epochs=100))
    pid = runs.read_lock()["pid"]
    assert runs.pid_alive(pid) and out.parent == runs_dir()
    with pytest.raises(runs.RunBusy):
        runs.start_run(tiny_cfg(tiny_data))
    wait_for(lambda: (out / "model.safetensors").exists(), 90, "the first checkpoint")
    assert runs.load_run(out).status == "running"
    assert runs.cancel_run(out, wait_s=30) == pid
    assert not runs.pid_alive(pid)
    run = runs.load_run(out)
    assert run.status == "cancelled" and run.has_model
    load_checkpoint(out)
    assert runs.read_lock() is None  # the worker released it on its way out
    assert "cancelled; the best checkpoint so far is kept" in (out / runs.LOG_NAME).read_text()


@pytest.mark.slow
def test_kill_9_leaves_a_consistent_state(tiny_data: Path) -> None:
    runs.promote(fake_run("earlier", "finished"))
    before = active_weights()
    out = runs.start_run(tiny_cfg(tiny_data, epochs=100))
    pid = runs.read_lock()["pid"]
    wait_for(lambda: len(runs.read_history(out)) >= 2, 90, "two finished epochs")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not runs.pid_alive(pid), 10, "the killed worker to be gone")
    (out / ".history.csv.orphan.tmp").write_text("half")  # as a kill in the middle of a write leaves
    run = runs.load_run(out)
    assert run.status == "interrupted" and "died" in run.error
    load_checkpoint(out)  # the best checkpoint is whole
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written files
    assert json.loads((out / "progress.json").read_text())["status"] == "running"  # readable, just stale
    assert active_weights() == before
    load_checkpoint(active_weights())  # the app's model still loads
    assert runs.current_lock() is None  # the stale lock is detected and cleared
    again = runs.start_run(tiny_cfg(tiny_data, epochs=100))  # and a new run may start
    runs.cancel_run(again, wait_s=30)


@pytest.mark.slow
def test_a_killed_run_resumes_in_the_background_and_finishes(tiny_data: Path) -> None:
    out = runs.start_run(tiny_cfg(tiny_data, epochs=60))
    pid = runs.read_lock()["pid"]
    wait_for(lambda: len(runs.read_history(out)) >= 2, 90, "two finished epochs")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not runs.pid_alive(pid), 10, "the killed worker to be gone")
    run = runs.load_run(out)
    assert run.status == "interrupted" and run.resumable
    with pytest.raises(runs.RunError, match="cannot be resumed"):
        runs.resume_run(fake_run("done", "finished"))
    assert runs.resume_run(out) == out
    with pytest.raises(runs.RunBusy):
        runs.resume_run(out)  # one run at a time, resumed or new
    wait_for(lambda: runs.load_run(out).status == "finished", 180, "the resumed run to finish")
    assert [int(r["epoch"]) for r in runs.read_history(out)] == list(range(1, 61))  # no gap, no repeat
    assert "resuming" in (out / runs.LOG_NAME).read_text()
    assert not runs.load_run(out).resumable
    wait_for(lambda: runs.read_lock() is None, 10, "the worker to release the lock")


# --------------------------------------------------------------------------- the worker process's own ends


def test_worker_records_why_it_could_not_start(tmp_path: Path) -> None:
    from fer_core.runs import worker as run_worker

    out = tmp_path / "run"
    out.mkdir()
    cfg = json.dumps({"data": str(tmp_path / "missing"), "arch": "tiny", "out": str(out)})
    assert run_worker.main([cfg]) == 1
    progress = json.loads((out / "progress.json").read_text())
    assert progress["status"] == "failed" and "does not exist" in progress["error"]
    assert runs.load_run(out).status == "failed"


def test_worker_turns_a_full_disk_into_a_clear_message(tiny_data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from fer_core.runs import worker as run_worker

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_worker, "train", full)
    out = tmp_path / "run"
    out.mkdir()
    assert run_worker.main([json.dumps({**vars(tiny_cfg(tiny_data)), "out": str(out)})]) == 1
    assert "the disk is full" in json.loads((out / "progress.json").read_text())["error"]


def test_worker_cancelled_before_training_started(tiny_data: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_core.runs import worker as run_worker

    monkeypatch.setattr(run_worker, "STOP", run_worker.threading.Event())
    run_worker.STOP.set()
    out = tmp_path / "run"
    out.mkdir()
    write_json(runs.lock_path(), {"pid": os.getpid(), "run": str(out)})
    assert run_worker.main([json.dumps({**vars(tiny_cfg(tiny_data)), "out": str(out)})]) == 0
    assert json.loads((out / "progress.json").read_text())["status"] == "cancelled"
    assert runs.read_lock() is None  # released by its holder on the way out


def test_a_launched_run_without_progress_is_starting_only_while_its_lock_lives() -> None:
    folder = runs_dir() / "just-launched"
    folder.mkdir(parents=True)
    write_json(folder / runs.LAUNCH_NAME, {"arch": "tiny"})
    write_json(runs.lock_path(), {"pid": os.getpid(), "run": str(folder)})
    assert runs.load_run(folder).status == "starting"
    write_json(runs.lock_path(), {"pid": os.getpid(), "run": str(runs_dir() / "another")})
    assert runs.load_run(folder).status == "interrupted"
    runs.lock_path().unlink()
    assert runs.load_run(folder).status == "interrupted"


# --------------------------------------------------------------------------- deployment settings


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_core.runs.app_settings import DEFAULT_MAX_EPOCHS, SettingsError, load_settings, training_allowed

    for var in ("FER_ALLOW_TRAINING", "FER_MAX_EPOCHS", "FER_MAX_SUBSET"):
        monkeypatch.delenv(var, raising=False)
    assert load_settings() == AppSettings(True, DEFAULT_MAX_EPOCHS, None)
    monkeypatch.setenv("FER_ALLOW_TRAINING", "false")
    monkeypatch.setenv("FER_MAX_EPOCHS", "5")
    monkeypatch.setenv("FER_MAX_SUBSET", "300")
    assert load_settings() == AppSettings(False, 5, 300) and not training_allowed()
    monkeypatch.setenv("FER_MAX_SUBSET", "0")
    with pytest.raises(SettingsError, match="FER_MAX_SUBSET must be >= 1"):
        load_settings()
    assert AppSettings(max_epochs=5, max_subset=300).check(5, 300) == []
