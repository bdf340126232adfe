"""The optimizer × learning-rate study as an Optuna grid: outputs, resume, diverged and lost cells,
replica seeds, and several workers sharing one database (SQLite, and PostgreSQL when it can be started)."""

from __future__ import annotations

import csv
import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from fer_core.training import loop as training
from fer_core.training import study
from fer_core.training import study_storage as store
from fer_core.training.loop import TrainConfig
from tests.conftest import write_folder_dataset

ROOT = Path(__file__).resolve().parents[1]
START_LINE = " params | train "  # the line fit() logs once when a run starts training


def grid(data: Path, out: Path, optimizers=("sgd", "amsgrad"), lrs=(0.01, 1e30), **kw) -> study.StudyConfig:
    base = TrainConfig(data=str(data), arch="tiny", epochs=1, batch_size=16, subset=10, schedule="none", seed=3,
                       augment=False)
    return study.StudyConfig(base=base, optimizers=list(optimizers), lrs=list(lrs), out=out, heartbeat=1, **kw)


def trials_of(sc: study.StudyConfig) -> list[optuna.trial.FrozenTrial]:
    storage = store.open_storage(sc.storage_url(), sc.heartbeat)
    return optuna.load_study(study_name=sc.name(), storage=storage).get_trials(deepcopy=False)


def starts(folder: Path) -> int:
    """How many times a run folder was trained (since it was last wiped)."""
    log = folder / "train.log"
    return log.read_text().count(START_LINE) if log.is_file() else 0


def quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- one worker


def test_grid_exports_resumes_and_imports_a_pre_optuna_folder(data: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "study"
    prepared = []
    original = training.prepare_data
    monkeypatch.setattr(training, "prepare_data", lambda cfg: prepared.append(cfg) or original(cfg))
    sc = grid(data, out)
    cells = study.run_study(sc, log=quiet)
    assert len(prepared) == 1  # four cells, one data preparation
    assert [(c.optimizer, c.lr) for c in cells] == [("sgd", 0.01), ("sgd", 1e30), ("amsgrad", 0.01),
                                                    ("amsgrad", 1e30)]
    # a learning rate of 1e30 makes SGD diverge: recorded as a failed cell, the study goes on
    assert cells[1].status == "failed" and "loss became" in cells[1].error
    finished = [c for c in cells if c.status == "finished"]
    assert finished and all(0 <= c.best_val_acc <= 1 and 0 <= c.test_acc <= 1 for c in finished)
    assert (out / "study.db").is_file()  # the default storage: SQLite inside the study folder
    rows = list(csv.DictReader((out / "study.csv").open()))
    assert [(r["optimizer"], r["seed"]) for r in rows] == [("sgd", "3"), ("sgd", "3"), ("amsgrad", "3"),
                                                           ("amsgrad", "3")]
    meta = json.loads((out / "study.json").read_text())
    assert meta["cells_done"] == meta["cells_total"] == 4 and meta["runs_done"] == 4
    assert meta["winner"]["best_val_acc"] == max(c.best_val_acc for c in finished)
    assert meta["budget"]["epochs"] == 1 and meta["budget"]["seed"] == 3 and meta["study_name"] == sc.name()
    assert meta["data_sizes"]["train"] > 0 and meta["device"] == "cpu"
    assert "plotly" in (out / "heatmap.html").read_text().lower()
    # every cell is an ordinary run with the same budget: only optimizer and lr differ
    configs = [json.loads((out / "cells" / c.name / "config.json").read_text()) for c in cells]
    assert [cfg["train"]["out"] for cfg in configs] == [str(out / "cells" / c.name) for c in cells]
    assert not list((out / "cells").glob(".*"))  # each trial's private folder became its cell's
    budgets = [{k: v for k, v in cfg["train"].items() if k not in ("optimizer", "lr", "out")} for cfg in configs]
    assert all(b == budgets[0] for b in budgets)
    assert len({cfg["data"]["train_hash"] for cfg in configs}) == 1
    # one trial per cell: the value is the best validation accuracy, the rest are user attributes
    trials = trials_of(sc)
    status = {(c.optimizer, c.lr): c.status for c in cells}
    assert Counter((t.params["optimizer"], t.params["lr"]) for t in trials) == Counter(list(status))
    for t in trials:
        assert t.state == (TrialState.COMPLETE if status[t.params["optimizer"], t.params["lr"]] == "finished"
                           else TrialState.FAIL)
        if t.state == TrialState.COMPLETE:
            assert t.value == t.user_attrs["best_val_acc"] and t.user_attrs["test_acc"] is not None
            assert {"macro_f1", "train_seconds", "wall_seconds", "final_train_loss"} <= set(t.user_attrs)
    # what the app's study page reads back
    meta, loaded = study.load_study(out)
    assert [c.status for c in loaded] == [c.status for c in cells] and meta["optimizers"] == ["sgd", "amsgrad"]
    fig = study.heatmap_figure(loaded)
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    assert list(fig.data[0].y) == ["sgd", "amsgrad"] and list(fig.data[0].x) == ["1e+30", "0.01"]
    assert fig.data[1].z[1][1] == pytest.approx(cells[2].test_acc * 100)  # amsgrad, lr 0.01
    assert fig.data[0].text[0][0] == "failed"  # sgd, lr 1e30
    with pytest.raises(ValueError, match="holds no study"):
        study.load_study(tmp_path)

    # running the command again trains nothing
    kept = out / "cells" / "amsgrad-lr0.01" / "model.safetensors"
    mtime, n_trials = kept.stat().st_mtime_ns, len(trials)
    lines: list[str] = []
    again = study.run_study(sc, log=lines.append)
    assert "4 cells, 4 already done, 0 to run" in lines[0]
    assert len(trials_of(sc)) == n_trials and kept.stat().st_mtime_ns == mtime
    assert [asdict_runs(c) for c in again] == [asdict_runs(c) for c in cells]

    # a folder written before the study moved to Optuna (no study.db) keeps its cells
    (out / "study.db").unlink()
    lines.clear()
    imported = study.run_study(sc, log=lines.append)
    assert "4 cells, 4 already done, 0 to run" in lines[0]
    assert kept.stat().st_mtime_ns == mtime
    assert [(c.status, c.best_val_acc) for c in imported] == [(c.status, c.best_val_acc) for c in cells]

    # ... but not cells trained with another budget (study.json, which would say so, is gone too)
    (out / "study.db").unlink()
    (out / "study.json").unlink()
    other = grid(data, out)
    other.base.epochs = 2
    assert study.import_legacy_cells(optuna.create_study(), other) == 0


def asdict_runs(cell: study.Cell) -> list[tuple]:
    return [(r["seed"], r["status"], r["best_val_acc"], r["test_acc"]) for r in cell.runs]


def test_a_diverged_cell_is_a_failed_result_and_never_retried(data: Path, tmp_path: Path) -> None:
    sc = grid(data, tmp_path / "study", optimizers=("sgd",), lrs=(1e30,))
    [cell] = study.run_study(sc, log=quiet)
    [trial] = trials_of(sc)
    assert trial.state == TrialState.FAIL and trial.user_attrs["status"] == "failed"
    assert "loss became" in trial.user_attrs["error"] and cell.status == "failed"
    assert "loss became" in cell.error
    study.run_study(sc, log=quiet)
    assert len(trials_of(sc)) == 1


def test_resume_with_another_budget_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    study.run_study(grid(data, out, optimizers=("adam",), lrs=(0.01,)), log=quiet)
    other = grid(data, out, optimizers=("adam",), lrs=(0.01,))
    other.base.epochs = 2
    with pytest.raises(ValueError, match=r"different budget \(epochs\)"):
        study.run_study(other, log=quiet)
    # the same name in a shared database is refused too, naming what differs
    first = grid(data, out, optimizers=("adam",), lrs=(0.01,))
    named = grid(data, tmp_path / "elsewhere", optimizers=("adam",), lrs=(0.01,), storage=first.storage_url(),
                 study_name=first.name())
    named.base.label_smoothing = 0.0
    with pytest.raises(ValueError, match=r"different budget \(label_smoothing\)"):
        study.run_study(named, log=quiet)


def test_a_machine_with_the_data_elsewhere_joins_by_name_and_other_data_is_refused(data: Path, tmp_path: Path) -> None:
    first = grid(data, tmp_path / "study", optimizers=("adam",), lrs=(0.01, 0.001), n_trials=1)
    study.run_study(first, log=quiet)
    elsewhere = tmp_path / "mnt" / "fer2013"  # the same images at another path, as on another machine
    elsewhere.parent.mkdir()
    elsewhere.symlink_to(data, target_is_directory=True)
    joined = grid(elsewhere, tmp_path / "other", optimizers=("adam",), lrs=(0.01, 0.001),
                  storage=first.storage_url(), study_name=first.name())
    assert [c.status for c in study.run_study(joined, log=quiet)] == ["finished", "finished"]
    assert len(trials_of(first)) == 2  # one grid: the joined worker trained the one cell left
    other = write_folder_dataset(tmp_path / "other-data", {"train": 40, "test": 12}, seed=1)
    half = grid(data, tmp_path / "study3", optimizers=("sgd",), lrs=(0.01, 0.001), n_trials=1)
    study.run_study(half, log=quiet)
    stranger = grid(other, tmp_path / "x", optimizers=("sgd",), lrs=(0.01, 0.001), storage=half.storage_url(),
                    study_name=half.name())
    with pytest.raises(ValueError, match="this worker's data is not the study's"):
        study.run_study(stranger, log=quiet)
    assert len(trials_of(half)) == 1  # refused before it claimed a cell


def test_cli_refuses_bad_grids(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--data", str(data), "--arch", "tiny", "--out", str(tmp_path / "s")]
    assert study.main([*args, "--optimizers", "sgd,lion"]) == 2
    assert "unknown optimizer(s) lion" in capsys.readouterr().err
    assert study.main([*args, "--lrs", "0.1,-1"]) == 2
    assert "learning rates must be positive" in capsys.readouterr().err
    assert study.main([*args, "--seeds", "0,1", "--top-seeds", "1", "--extra-seed", "1"]) == 2
    assert "--extra-seed must be" in capsys.readouterr().err
    assert study.main([*args, "--optimizers", "adam", "--lrs", "0.01", "--data", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_cli_takes_the_papers_recipe(tmp_path: Path) -> None:
    sc = study.parse_args(["--out", str(tmp_path), "--arch", "paper", "--optimizers", "sgd,amsgrad",
                           "--lrs", "0.1,0.01",
                           "--epochs", "8", "--patience", "3", "--batch-size", "64", "--no-augment",
                           "--label-smoothing", "0", "--weight-decay", "0", "--seeds", "2,5", "--top-seeds", "3",
                           "--storage", "postgresql://me:secret@db/fer", "--n-trials", "4"])
    b = sc.budget()
    assert (b["arch"], b["epochs"], b["patience"], b["batch_size"], b["augment"]) == ("paper", 8, 3, 64, False)
    assert (b["label_smoothing"], b["weight_decay"], b["schedule"], b["seed"]) == (0.0, 0.0, "none", 2)
    assert sc.seeds == [2, 5] and sc.extra_seed == 6 and sc.n_trials == 4
    assert "secret" not in store.display_url(sc.storage_url())
    assert sc.name() == study.parse_args(["--out", str(tmp_path / "b"), "--arch", "paper", "--epochs", "8",
                                          "--patience", "3", "--batch-size", "64", "--no-augment",
                                          "--label-smoothing", "0", "--weight-decay", "0", "--seed", "2"]).name()


# --------------------------------------------------------------------------- seeds


def test_top_cells_get_a_second_seed_and_error_bars(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    sc = grid(data, out, optimizers=("adam",), lrs=(0.01, 0.001), top_seeds=1, extra_seed=7)
    cells = study.run_study(sc, log=quiet)
    twice = [c for c in cells if len(c.runs) == 2]
    assert len(twice) == 1 and [r["seed"] for r in twice[0].runs] == [3, 7]
    cell = twice[0]
    vals = [r["best_val_acc"] for r in cell.runs]
    assert cell.best_val_acc == pytest.approx(sum(vals) / 2) and cell.seeds == [3, 7]
    assert (cell.val_acc_min, cell.val_acc_max) == (min(vals), max(vals))
    assert (out / "cells" / f"{cell.name}-seed7" / "model.safetensors").is_file()
    val_hashes = {json.loads((f / "config.json").read_text())["data"]["val_hash"] for f in (out / "cells").iterdir()}
    assert len(val_hashes) == 1  # every seed is validated on the same held-out slice
    rows = list(csv.DictReader((out / "study.csv").open()))
    assert sorted(r["seed"] for r in rows) == ["3", "3", "7"]
    meta, loaded = study.load_study(out)
    assert meta["runs_total"] == meta["runs_done"] == 3 and meta["cells_done"] == 2
    assert [len(c.runs) for c in loaded] == [len(c.runs) for c in cells]
    col = sorted({c.lr for c in cells}, reverse=True).index(cell.lr)
    assert "±" in study.heatmap_figure(loaded).data[0].text[0][col]  # row 0: adam
    # the replica was chosen on the grid's seed alone: a rerun trains nothing more
    n = len(trials_of(sc))
    study.run_study(sc, log=quiet)
    assert len(trials_of(sc)) == n


def test_shipped_study_still_loads() -> None:
    meta, cells = study.load_study(ROOT / "reports" / "study")
    assert len(cells) == meta["cells_total"] == 36 and all(c.runs == [] and c.seeds == [] for c in cells)
    best = study.winner(cells)
    assert (best.optimizer, best.lr) == ("adam", 0.001)
    assert len(study.heatmap_figure(cells).data) == 2


# --------------------------------------------------------------------------- stopped, lost and raced cells


def test_a_stopped_cell_is_queued_again_and_finished_by_the_next_run(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    sc = grid(data, out, optimizers=("amsgrad",), lrs=(0.01, 0.001))
    sc.base.epochs = 2
    lines: list[str] = []
    study.run_study(sc, log=lines.append, should_stop=lambda: any((out / "cells").glob("*/history.csv")))
    assert any("queued again" in line for line in lines)
    [stopped, queued] = sorted(trials_of(sc), key=lambda t: t.number)
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["status"] == "cancelled"
    assert queued.state == TrialState.WAITING and store.key_of(queued) == store.key_of(stopped)
    # the queued cell ends while one grid point is left: the grid sampler must not need its grid point
    cells = study.run_study(sc, log=quiet)
    assert [c.status for c in cells] == ["finished", "finished"]
    assert all(starts(sc.folder(k)) == 1 for k in sc.main_keys())  # the stopped one trained again from scratch
    assert [t.state for t in sorted(trials_of(sc), key=lambda t: t.number)] == [TrialState.FAIL, *[
        TrialState.COMPLETE] * 2]


def test_sigterm_and_ctrl_c_ask_the_worker_to_stop() -> None:
    stop = threading.Event()
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        study._stop_on_signals(stop)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C does not wait for the cell
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def test_a_dead_workers_cells_are_trained_again(data: Path, tmp_path: Path) -> None:
    """One worker died mid-cell (its heartbeat stopped), another before its first heartbeat (so
    Optuna cannot see it): the next worker fails both and trains their cells, each once."""
    out = tmp_path / "study"
    sc = grid(data, out, optimizers=("amsgrad",), lrs=(0.01, 0.001))
    out.mkdir()
    storage = store.open_storage(sc.storage_url(), sc.heartbeat)
    sampler = store.CellGridSampler({"optimizer": sc.optimizers, "lr": sc.lrs, "seed": sc.seeds})
    s = store.open_study(storage, sc.name(), sc.budget(), sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        died = s.ask()
        storage.record_heartbeat(died._trial_id)
        died.set_user_attr("heartbeat_by", died.number)
        died.set_user_attr("training_by", died.number)
        died_key = store.suggest(died, study.OPTIMIZERS, sc.lrs, sc.seeds)
        silent = s.ask()  # holds a grid point, never said which, never beat
    final = sc.folder(died_key)
    orphan = final.with_name(f".{final.name}.trial{died.number}")  # where the dead worker was training
    for folder in (final, orphan):  # the cell's folder as an earlier version left it, and the private one
        folder.mkdir(parents=True)
        (folder / "train.log").write_text(f"tiny: 1{START_LINE}(half-trained by the dead worker)\n")
    with sqlite3.connect(out / "study.db") as db:
        db.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00.000000'")
        db.execute("UPDATE trials SET datetime_start = '2000-01-01 00:00:00.000000' WHERE number = ?",
                   (silent.number,))
    cells = study.run_study(sc, log=quiet)
    assert [c.status for c in cells] == ["finished", "finished"]
    trials = {t.number: t for t in trials_of(sc)}
    assert trials[died.number].state == trials[silent.number].state == TrialState.FAIL
    retry = [t for t in trials.values() if t.system_attrs.get("failed_trial") == died.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE  # Optuna's heartbeat retry
    done = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert sorted(store.key_of(t) for t in done) == sorted(sc.main_keys())
    assert all(starts(sc.folder(k)) == 1 for k in sc.main_keys())
    assert not orphan.exists() and not list((out / "cells").glob(".*"))


def test_of_two_trials_racing_for_one_cell_the_earlier_trains(tmp_path: Path) -> None:
    storage = store.open_storage(f"sqlite:///{tmp_path}/race.db", heartbeat=1)
    s = optuna.create_study(storage=storage, study_name="race", direction="maximize")
    key = ("adam", 0.01, 0)
    params = {"optimizer": "adam", "lr": 0.01, "seed": 0}
    for _ in range(2):  # two workers requeueing the same lost cell at once
        s.enqueue_trial(params, skip_if_exists=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, second = s.ask(), s.ask()
        late = s.ask()  # a trial that has not yet said which cell it holds
    for t in (first, second):
        store.suggest(t, ["adam"], [0.01], [0])
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the silent trial speaks while the second one waits for it
        slept.append(seconds)
        store.suggest(late, ["adam"], [0.01], [0])

    assert store.owner_of(s, storage, late.number + 1, key, grace_s=60, sleep=sleep).number == first.number
    assert slept  # it waited for the silent earlier trial instead of deciding without it
    assert store.owner_of(s, storage, second.number, key, grace_s=60).number == first.number
    assert store.owner_of(s, storage, first.number, key, grace_s=60) is None
    first.set_user_attr("training_by", first.number)
    s.tell(first, 0.5)
    assert store.owner_of(s, storage, late.number, key, grace_s=60).number == first.number  # a result owns it
    # an earlier trial silent past the grace period is failed, so it can never start training
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        silent = s.ask()
    with sqlite3.connect(tmp_path / "race.db") as db:
        db.execute("UPDATE trials SET datetime_start = '2000-01-01 00:00:00.000000' WHERE number = ?",
                   (silent.number,))
    assert store.owner_of(s, storage, silent.number + 1, ("sgd", 0.1, 0), grace_s=1) is None
    assert s.get_trials(deepcopy=False)[silent.number].state == TrialState.FAIL


# --------------------------------------------------------------------------- several workers, one database


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a unix socket (started as ``nobody`` when the tests run as
    root, since PostgreSQL refuses root); skips when PostgreSQL is not installed."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL (initdb, pg_ctl) is not installed")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="fer-pg-"))  # short, and reachable by nobody (pytest's tmp is 0700)
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        os.chown(root, pwd.getpwnam("nobody").pw_uid, -1)
        as_user = ["runuser", "-u", "nobody", "--"]
    port, pgdata = _free_port(), root / "data"
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(initdb, "-D", str(pgdata), "-A", "trust", "-U", "fer", "--no-sync", "-E", "UTF8")
        run(pg_ctl, "-D", str(pgdata), "-l", str(root / "log"), "-w", "-t", "60", "start", "-o",
            f"-k {root} -p {port} -c listen_addresses='' -c fsync=off")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {exc.stderr.strip()[-300:]}")
    try:
        import psycopg2

        conn = psycopg2.connect(host=str(root), port=port, user="fer", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE study")
        conn.close()
        yield f"postgresql+psycopg2://fer@/study?host={root}&port={port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(pgdata), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def queue_twice(sc: study.StudyConfig, keys: list[store.Key]) -> None:
    """Queue each cell twice, as two workers requeueing the same lost cells at once would."""
    sc.out.mkdir(parents=True, exist_ok=True)
    storage = store.open_storage(sc.storage_url(), sc.heartbeat)
    sampler = store.CellGridSampler({"optimizer": sc.optimizers, "lr": sc.lrs, "seed": sc.seeds})
    s = store.open_study(storage, sc.name(), sc.budget(), sampler)
    for opt, lr, seed in keys * 2:
        s.enqueue_trial({"optimizer": opt, "lr": lr, "seed": seed}, skip_if_exists=False)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_share_one_grid_and_train_each_cell_once(backend: str, data: Path, tmp_path: Path,
                                                             request: pytest.FixtureRequest) -> None:
    """Two ``fer-study`` processes started at once with the same command: on one machine they share
    the study folder's SQLite file; on PostgreSQL they stand for two machines (two study folders).
    Five cells are queued twice beforehand, so the workers race for queued trials and the grid
    sampler hands out points already taken: the duplicates must give way."""
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    outs = [tmp_path / "study"] * 2 if url is None else [tmp_path / "machine-a", tmp_path / "machine-b"]
    args = ["--data", str(data), "--arch", "tiny", "--optimizers", "sgd,adam,amsgrad", "--lrs", "0.01,0.001,0.0001",
            "--epochs", "1", "--subset", "8", "--batch-size", "16", "--heartbeat", "2"]
    args += ["--storage", url] if url else []
    sc = study.parse_args([*args, "--out", str(outs[0])])
    queue_twice(sc, sc.main_keys()[:5])
    workers = [subprocess.Popen([sys.executable, "-m", "fer_core.training.study", *args, "--out", str(out)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for out in outs]
    logs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    trials = trials_of(sc)
    trained = [t for t in trials if t.user_attrs.get("training_by") == t.number]
    assert sorted(store.key_of(t) for t in trained) == sorted(sc.main_keys())  # every cell trained exactly once
    assert all(t.state == TrialState.COMPLETE for t in trained)
    assert len({t.user_attrs["worker"] for t in trained}) == 2, logs  # both workers took part
    by_number = {t.number: t for t in trials}
    duplicates = [t for t in trials if t.user_attrs.get("status") == "duplicate"]
    assert len(duplicates) >= 5 and all(t.state == TrialState.PRUNED for t in duplicates)
    assert all(store.key_of(by_number[t.user_attrs["duplicate_of"]]) == store.key_of(t) for t in duplicates)
    assert len(trials) == len(trained) + len(duplicates)
    folders = [out / "cells" / study.cell_name(o, lr) for out in dict.fromkeys(outs) for o, lr, _ in sc.main_keys()]
    assert sorted(starts(f) for f in folders) == [0] * (len(folders) - 9) + [1] * 9
    for out in dict.fromkeys(outs):  # either worker's export is complete: it is written from the database
        meta, cells = study.load_study(out)
        assert meta["cells_done"] == meta["cells_total"] == 9 and all(c.status == "finished" for c in cells)


def test_load_study_checks_every_field_of_a_file_from_anywhere(tmp_path: Path) -> None:
    """study.json may be old, hand-edited or half-written: wrong types fall back to defaults, and a cell
    without its grid coordinates is refused with a message, never a TypeError on the Study page."""
    (tmp_path / "study.json").write_text(json.dumps({
        "budget": None, "data_sizes": [1], "cells": [
            {"optimizer": "adam", "lr": 0.001, "status": "finished", "best_val_acc": "0.59", "test_acc": 0.58,
             "seeds": None, "runs": [None, {"seed": 0}], "val_acc_min": True, "error": 3}]}))
    meta, (cell,) = study.load_study(tmp_path)
    assert meta["budget"] == {} and meta["data_sizes"] == {}
    assert (cell.best_val_acc, cell.test_acc, cell.seeds, cell.runs, cell.val_acc_min, cell.error) == (
        None, 0.58, [], [{"seed": 0}], None, None)
    for bad in ({"lr": 0.01}, {"optimizer": "sgd", "lr": "0.01"}, {"optimizer": "sgd", "lr": float("nan")}, [1]):
        (tmp_path / "study.json").write_text(json.dumps({"cells": [bad]}))
        with pytest.raises(ValueError, match="cell 1 has no optimizer name and learning rate"):
            study.load_study(tmp_path)


def test_a_database_that_fails_mid_study_is_a_message_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture) -> None:
    from sqlalchemy.exc import OperationalError

    def locked(*_, **__):
        raise OperationalError("UPDATE trials", {}, Exception("database is locked"))

    monkeypatch.setattr(study, "run_study", locked)
    rc = study.main(["--data", str(tmp_path), "--arch", "tiny", "--optimizers", "sgd", "--lrs", "0.1",
                     "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and "database is locked" in err and "run the same command again" in err


def test_a_worker_recognises_optunas_errors_for_a_trial_failed_by_another(tmp_path: Path) -> None:
    """``_taken_over`` reads Optuna's own errors (its message, for ``tell``): pinned by this test."""
    s = optuna.create_study(storage=f"sqlite:///{tmp_path}/t.db")
    t = s.ask()
    s._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # as the worker that reaped it does
    for write in (lambda: t.set_user_attr("status", "finished"), lambda: s.tell(t, 0.5)):
        with pytest.raises(Exception) as caught:
            write()
        assert study._taken_over(caught.value)
    assert not study._taken_over(ValueError("Cannot open the file"))


def test_a_study_folder_continues_from_a_machine_with_the_data_elsewhere(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    study.run_study(grid(data, out, optimizers=("adam",), lrs=(0.01, 0.001), n_trials=1), log=quiet)
    elsewhere = tmp_path / "mnt" / "fer2013"
    elsewhere.parent.mkdir()
    elsewhere.symlink_to(data, target_is_directory=True)
    moved = grid(elsewhere, out, optimizers=("adam",), lrs=(0.01, 0.001), study_name=grid(data, out).name())
    assert [c.status for c in study.run_study(moved, log=quiet)] == ["finished", "finished"]
