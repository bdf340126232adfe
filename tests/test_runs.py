"""Running training from the app (``fer_core.runs``: store, launcher, lock, control): the lock, a stale
lock, cancel, promote, and what a crash leaves behind.

The slow tests start the real worker process (``python -m fer_core.runs.worker``) on a tiny
generated data set and then cancel it or ``kill -9`` it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from fer_core.common.atomic import write_json
from fer_core.common.paths import runs_dir
from fer_core.common.process import pid_alive
from fer_core.models.active import DEFAULT_WEIGHTS, active_weights
from fer_core.models.checkpoint import load_checkpoint, save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model
from fer_core.runs.app_settings import AppSettings
from fer_core.runs.control import cancel_run, promote, restore_default
from fer_core.runs.duration import STARTUP_SECONDS, estimate
from fer_core.runs.errors import RunBusy, RunError
from fer_core.runs.launcher import LOG_NAME, resume_run, start_run
from fer_core.runs.lock import (
    LOCK_NAME,
    HeldLock,
    acquire,
    current_lock,
    holder_alive,
    identity,
    lock_path,
    read_lock,
    release_lock,
)
from fer_core.runs.store import LAUNCH_NAME, list_runs, load_run
from fer_core.training.history import read_history
from fer_core.training.loop import TrainConfig, TrainingError
from fer_core.training.resume import STATE_FILE
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
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    assert not pid_alive(None) and not pid_alive("12") and not pid_alive(-1)


def test_live_lock_refuses_a_second_start(tiny_data: Path) -> None:
    write_json(lock_path(), {"pid": os.getpid(), "run": str(runs_dir() / "other")})
    with pytest.raises(RunBusy, match="already in progress"):
        start_run(tiny_cfg(tiny_data))
    assert read_lock()["pid"] == os.getpid()  # the holder's lock is untouched
    assert [p.name for p in runs_dir().iterdir()] == [LOCK_NAME]  # and no run folder was made


@pytest.mark.parametrize("content", ["dead", "garbage"])
def test_stale_or_corrupt_lock_is_cleared(content: str) -> None:
    lock_path().parent.mkdir(parents=True, exist_ok=True)
    lock_path().write_text(json.dumps({"pid": dead_pid(), "run": "x"}) if content == "dead" else "{not json")
    assert current_lock() is None
    assert not lock_path().exists()


def test_release_lock_only_by_its_holder() -> None:
    write_json(lock_path(), {"pid": os.getpid(), "run": "x"})
    release_lock(os.getpid() + 1)
    assert lock_path().exists()
    release_lock(os.getpid())
    assert not lock_path().exists()


def sleeper(**kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], **kw)


def test_a_reused_pid_does_not_look_like_the_holder() -> None:
    """The lock names a PID that now belongs to another process (started later): stale, not busy."""
    bystander = sleeper()
    try:
        real = identity(bystander.pid)
        assert real["started"] is not None and holder_alive(real)
        write_json(lock_path(), {**real, "started": real["started"] - 1, "run": str(runs_dir() / "a")})
        assert not holder_alive(read_lock())
        with pytest.raises(RunError, match="no launched run"):
            cancel_run()
        assert current_lock() is None and not lock_path().exists()
        assert bystander.poll() is None  # never signalled
    finally:
        bystander.kill()
        bystander.wait()


def test_concurrent_starts_take_the_lock_once() -> None:
    """Many starts at the same moment over a stale lock: exactly one gets it (no check-then-create race)."""
    write_json(lock_path(), {"pid": dead_pid(), "run": "crashed"})
    barrier = threading.Barrier(8)
    won: list[HeldLock] = []
    refused: list[str] = []

    def start(i: int) -> None:
        barrier.wait()
        try:
            won.append(acquire({**identity(), "run": f"run-{i}"}, wait_s=5))
        except RunBusy as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7
    assert all("already in progress (run-" in m for m in refused)  # each names the run that won
    assert current_lock()["run"] == read_lock()["run"] != "crashed"
    won[0].release()
    assert current_lock() is None and not lock_path().exists()


HOLD = """
import os, sys, time
from filelock import lock_descriptor
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
assert lock_descriptor(fd, blocking=False)
os.write(fd, b"{not a record yet")
print("held", flush=True)
time.sleep(60)
"""


def test_the_os_lock_is_never_taken_from_a_live_holder_and_dies_with_it() -> None:
    """A holder whose record is unreadable still holds the lock; killed with -9, it holds nothing."""
    lock_path().parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_path())], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusy, match="busy; try again"):
            acquire({**identity(), "run": "mine"}, wait_s=0.3)
        assert current_lock() is None and lock_path().exists()  # stale-looking, but held: not removed
    finally:
        holder.kill()
        holder.wait()
    acquire({**identity(), "run": "mine"}, wait_s=0).release()  # the OS freed it with the holder


def test_the_lock_is_handed_to_the_process_that_inherits_it() -> None:
    """What ``start_run`` does with its worker: the child keeps the lock after the parent lets go."""
    held = acquire({**identity(), "run": None, "state": "starting"})
    child = sleeper(pass_fds=(held.fd,))
    try:
        held.write({**identity(child.pid), "run": "handed", "state": "running"})
        held.hand_over()
        assert current_lock()["pid"] == child.pid
        with pytest.raises(RunBusy, match=r"already in progress \(handed, PID"):
            acquire({**identity(), "run": "mine"}, wait_s=0)
    finally:
        child.kill()
        child.wait()
    assert current_lock() is None  # the holder died: its record is stale and cleared
    acquire({**identity(), "run": "mine"}, wait_s=0).release()


# --------------------------------------------------------------------------- refusing before starting


def test_bad_settings_are_refused_before_anything_is_made(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        start_run(tiny_cfg(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="learning rate"):
        start_run(tiny_cfg(tiny_data, lr=-1.0))
    with pytest.raises(ValueError, match="at most 3 epochs"):
        start_run(tiny_cfg(tiny_data, epochs=5), AppSettings(max_epochs=3))
    with pytest.raises(ValueError, match="full data set is not allowed"):
        start_run(tiny_cfg(tiny_data, subset=None), AppSettings(max_subset=50))
    with pytest.raises(ValueError, match="disabled"):
        start_run(tiny_cfg(tiny_data), AppSettings(allow_training=False))
    assert read_lock() is None
    assert not runs_dir().exists() or not any(runs_dir().iterdir())


def test_unwritable_run_folder_gives_a_clear_error(tiny_data: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(TrainingError, match="cannot write the run folder"):
        start_run(tiny_cfg(tiny_data, out=str(blocker / "run")))
    assert read_lock() is None  # the lock is given back


def test_unwritable_runs_folder_gives_a_clear_error(tiny_data: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "runs-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("FER_RUNS_DIR", str(blocker))
    with pytest.raises(TrainingError, match="cannot write the runs folder"):
        start_run(tiny_cfg(tiny_data))
    assert list_runs() == []


def test_full_disk_is_refused_with_a_clear_error(tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda _: SimpleNamespace(total=10**9, used=10**9, free=2**20))
    with pytest.raises(TrainingError, match=r"\(nearly\) full: 1 MB free"):
        start_run(tiny_cfg(tiny_data))
    assert read_lock() is None


# --------------------------------------------------------------------------- listing and status


def test_list_runs_newest_first_with_interrupted_detected() -> None:
    fake_run("old-finished", "finished", started="2026-01-01T00:00:00+00:00", test_acc=0.5)
    fake_run("mid-crashed", "running", pid=dead_pid(), started="2026-01-02T00:00:00+00:00")
    fake_run("new-failed", "failed", started="2026-01-03T00:00:00+00:00", error="TrainingError: loss became nan")
    listed = list_runs()
    assert [r.name for r in listed] == ["new-failed", "mid-crashed", "old-finished"]
    assert [r.status for r in listed] == ["failed", "interrupted", "finished"]
    assert "loss became nan" in listed[0].error and "died" in listed[1].error
    assert listed[2].test_acc == 0.5 and listed[2].config["optimizer"] == "adam"
    assert read_history(listed[2].path)[0]["val_acc"] == pytest.approx(0.3)


def test_estimate_uses_measured_throughput(tiny_data: Path) -> None:
    fake_run("measured", "finished", images_per_s=100.0)
    est = estimate(tiny_cfg(tiny_data, epochs=10))
    assert est.source == "previous runs" and est.images_per_s == 100.0
    assert est.images_per_epoch == 7 * 18  # 20 per class less the 10% validation slice
    assert est.seconds == pytest.approx(STARTUP_SECONDS + 10 * 126 / 100 + (10 * 14 + 35) / 300)


# --------------------------------------------------------------------------- promote / restore


def test_promote_finished_run_and_restore_default() -> None:
    done = fake_run("done", "finished")
    assert promote(done) == (done / "model.safetensors").resolve()
    assert active_weights() == (done / "model.safetensors").resolve()
    load_checkpoint(active_weights())
    restore_default()
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
    promote(done)
    assert active.accurate_weights() == active_weights() == (done / "model.safetensors").resolve()


@pytest.mark.parametrize("status", ["running", "cancelled", "failed"])
def test_promote_refuses_unfinished_runs(status: str) -> None:
    run = fake_run(f"r-{status}", status, pid=dead_pid() if status == "running" else None)
    with pytest.raises(RunError, match="only a finished run"):
        promote(run)
    assert active_weights() == DEFAULT_WEIGHTS


# --------------------------------------------------------------------------- cancel


def test_cancel_without_a_run_or_of_another_run_is_refused() -> None:
    with pytest.raises(RunError, match="no launched run"):
        cancel_run()
    write_json(lock_path(), {"pid": os.getpid(), "run": str(runs_dir() / "a")})
    with pytest.raises(RunError, match="is not the run in progress"):
        cancel_run(runs_dir() / "b")


def test_cancel_never_signals_a_process_that_is_not_a_worker() -> None:
    """PID reuse: the lock names a live process that is not ours; it must survive."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_json(lock_path(), {"pid": bystander.pid, "run": str(runs_dir() / "a")})
        with pytest.raises(RunError, match="no longer a training worker"):
            cancel_run()
        time.sleep(0.2)
        assert bystander.poll() is None
        assert read_lock() is None
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.slow
def test_real_run_cancel_keeps_best_checkpoint_and_frees_the_lock(tiny_data: Path) -> None:
    out = start_run(tiny_cfg(tiny_data, epochs=100))
    pid = read_lock()["pid"]
    assert pid_alive(pid) and out.parent == runs_dir()
    with pytest.raises(RunBusy):
        start_run(tiny_cfg(tiny_data))
    wait_for(lambda: (out / "model.safetensors").exists(), 90, "the first checkpoint")
    assert load_run(out).status == "running"
    assert cancel_run(out, wait_s=30) == pid
    assert not pid_alive(pid)
    run = load_run(out)
    assert run.status == "cancelled" and run.has_model
    load_checkpoint(out)
    assert read_lock() is None  # the worker released it on its way out
    assert "cancelled; the best checkpoint so far is kept" in (out / LOG_NAME).read_text()


@pytest.mark.slow
def test_kill_9_leaves_a_consistent_state(tiny_data: Path) -> None:
    promote(fake_run("earlier", "finished"))
    before = active_weights()
    out = start_run(tiny_cfg(tiny_data, epochs=100))
    pid = read_lock()["pid"]
    wait_for(lambda: len(read_history(out)) >= 2, 90, "two finished epochs")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 10, "the killed worker to be gone")
    (out / ".history.csv.orphan.tmp").write_text("half")  # as a kill in the middle of a write leaves
    run = load_run(out)
    assert run.status == "interrupted" and "died" in run.error
    load_checkpoint(out)  # the best checkpoint is whole
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written files
    assert json.loads((out / "progress.json").read_text())["status"] == "running"  # readable, just stale
    assert active_weights() == before
    load_checkpoint(active_weights())  # the app's model still loads
    assert current_lock() is None  # the stale lock is detected and cleared
    again = start_run(tiny_cfg(tiny_data, epochs=100))  # and a new run may start
    cancel_run(again, wait_s=30)


@pytest.mark.slow
def test_a_killed_run_resumes_in_the_background_and_finishes(tiny_data: Path) -> None:
    out = start_run(tiny_cfg(tiny_data, epochs=60))
    pid = read_lock()["pid"]
    wait_for(lambda: len(read_history(out)) >= 2, 90, "two finished epochs")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 10, "the killed worker to be gone")
    run = load_run(out)
    assert run.status == "interrupted" and run.resumable
    with pytest.raises(RunError, match="cannot be resumed"):
        resume_run(fake_run("done", "finished"))
    assert resume_run(out) == out
    with pytest.raises(RunBusy):
        resume_run(out)  # one run at a time, resumed or new
    wait_for(lambda: load_run(out).status == "finished", 180, "the resumed run to finish")
    assert [int(r["epoch"]) for r in read_history(out)] == list(range(1, 61))  # no gap, no repeat
    assert "resuming" in (out / LOG_NAME).read_text()
    assert not load_run(out).resumable
    wait_for(lambda: read_lock() is None, 10, "the worker to release the lock")


# --------------------------------------------------------------------------- the worker process's own ends


def test_worker_records_why_it_could_not_start(tmp_path: Path) -> None:
    from fer_core.runs import worker as run_worker

    out = tmp_path / "run"
    out.mkdir()
    cfg = json.dumps({"data": str(tmp_path / "missing"), "arch": "tiny", "out": str(out)})
    assert run_worker.main([cfg]) == 1
    progress = json.loads((out / "progress.json").read_text())
    assert progress["status"] == "failed" and "does not exist" in progress["error"]
    assert load_run(out).status == "failed"


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
    write_json(lock_path(), {"pid": os.getpid(), "run": str(out)})
    assert run_worker.main([json.dumps({**vars(tiny_cfg(tiny_data)), "out": str(out)})]) == 0
    assert json.loads((out / "progress.json").read_text())["status"] == "cancelled"
    assert read_lock() is None  # released by its holder on the way out


def failed_resume() -> Path:
    """A cancelled run whose resume fails (its saved state is damaged), as the app's worker runs it."""
    from fer_core.runs import worker as run_worker

    run = fake_run("20260102-cut", "cancelled", pid=dead_pid())
    (run / STATE_FILE).write_bytes(b"not safetensors")
    assert run_worker.main(["--resume", str(run)]) == 1
    return run


def test_a_failed_resume_leaves_the_run_failed_with_the_reason() -> None:
    run = failed_resume()
    progress = json.loads((run / "progress.json").read_text())
    assert progress["status"] == "failed" and "saved training state is unreadable" in progress["error"]
    info = load_run(run)
    assert info.status == "failed" and "unreadable" in info.error
    assert info.config["arch"] == "tiny" and info.resumable  # still described, and may be tried again


def test_a_refused_resume_changes_nothing_it_must_not(tmp_path: Path) -> None:
    from fer_core.runs import worker as run_worker

    done = fake_run("done", "finished")
    before = (done / "progress.json").read_text()
    assert run_worker.main(["--resume", str(done)]) == 1
    assert (done / "progress.json").read_text() == before  # a finished run stays finished
    assert run_worker.main(["--resume", str(tmp_path)]) == 1
    assert not (tmp_path / "progress.json").exists()  # not a run folder: nothing written into it


def test_a_launched_run_without_progress_is_starting_only_while_its_lock_lives() -> None:
    folder = runs_dir() / "just-launched"
    folder.mkdir(parents=True)
    write_json(folder / LAUNCH_NAME, {"arch": "tiny"})
    write_json(lock_path(), {"pid": os.getpid(), "run": str(folder)})
    assert load_run(folder).status == "starting"
    write_json(lock_path(), {"pid": os.getpid(), "run": str(runs_dir() / "another")})
    assert load_run(folder).status == "interrupted"
    lock_path().unlink()
    assert load_run(folder).status == "interrupted"


# --------------------------------------------------------------------------- deployment settings


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_core.runs.app_settings import DEFAULT_MAX_EPOCHS, SettingsError, load_settings, training_visible

    for var in ("FER_ALLOW_TRAINING", "FER_MAX_EPOCHS", "FER_MAX_SUBSET", "FER_PUBLIC"):
        monkeypatch.delenv(var, raising=False)
    assert load_settings(secrets={}) == AppSettings(allow_training=True, max_epochs=DEFAULT_MAX_EPOCHS)
    monkeypatch.setenv("FER_ALLOW_TRAINING", "false")
    monkeypatch.setenv("FER_MAX_EPOCHS", "5")
    monkeypatch.setenv("FER_MAX_SUBSET", "300")
    assert load_settings(secrets={}) == AppSettings(allow_training=False, max_epochs=5, max_subset=300)
    assert not training_visible()
    monkeypatch.setenv("FER_MAX_SUBSET", "0")
    with pytest.raises(SettingsError, match="FER_MAX_SUBSET must be > 0"):
        load_settings(secrets={})
    assert AppSettings(max_epochs=5, max_subset=300).check(5, 300) == []


def test_a_run_whose_saved_config_is_unreadable_is_refused_with_a_message() -> None:
    run = runs_dir() / "hand-edited"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"train": {"epochs": None, "subset": "all"}}))
    with pytest.raises(RunError, match="no valid epochs and subset"):
        resume_run(run)
