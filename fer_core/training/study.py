"""The paper's experiment: which optimizer and which learning rate, as an Optuna grid study.

The paper-scale study (the paper's network and recipe: weight decay 0, no label smoothing, no
augmentation, constant learning rate, batch 64; the three best cells get a second seed):

    fer-study --data data/fer2013 --arch paper \\
        --optimizers sgd,sgd_nesterov,adam,amsgrad,rmsprop --lrs 0.1,0.01,0.001 \\
        --epochs 8 --batch-size 64 --no-augment --label-smoothing 0 --weight-decay 0 \\
        --top-seeds 3 --extra-seed 1 --out reports/study-paper

Every cell of the grid is an ordinary run (``OUT/cells/<optimizer>-lr<lr>``, ``-seed<s>`` added
for seeds other than the first) made by ``fer_core.training.loop.train`` with the same architecture,
data, epochs, subset, batch size and recipe: only optimizer, learning rate and seed differ. The
learning rate is held constant (schedule ``none`` by default) so that "lr" means the same thing for
every optimizer. A seed changes the initialisation and the batch order, and with ``--subset`` which
images are drawn; every run is validated on the same slice of train/ (the first seed's, as
``train.py --val-seed`` draws it), so the cells' validation accuracies compare like with like.

The grid is an Optuna study (``GridSampler`` over optimizer × lr × seed, no pruning, one trial per
cell) kept in ``OUT/study.db`` (SQLite) or in the database given by ``--storage``: the same command
started on several machines against one PostgreSQL database shares one grid, each cell trained
exactly once (``fer_core.training.study_storage`` says how). Resumable by construction: running the
command again continues the grid. A cell that diverged is a result (failed, with its error), never
retried; a cell whose worker died (its heartbeat stopped) or was stopped (SIGTERM, Ctrl-C) is
trained again from scratch. Each trial trains in a folder of its own and moves it into the cell's
folder when it ends, so two workers never write into one folder. With ``--top-seeds K``, once the
grid is done the K best cells on validation are trained again with ``--extra-seed``, so the top of
the ranking has error bars.

After every cell the summary (``study.csv``: one row per run; ``study.json``: one entry per cell,
mean and min/max over its seeds) and the heatmap (``heatmap.html``, plus ``heatmap.png`` when
kaleido is installed) are rewritten atomically from the database, so any worker's copy is complete.
The winner is chosen on validation accuracy; the test accuracy is reported, never tuned on.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from fer_core.common.atomic import read_json, write_atomic, write_json, write_text
from fer_core.common.formatting import percent
from fer_core.common.paths import PROJECT_ROOT, runs_dir
from fer_core.common.values import is_count, is_number
from fer_core.data.prepare import PreparedData
from fer_core.models.zoo import list_models
from fer_core.training import loop as training
from fer_core.training import study_storage as store
from fer_core.training.history import run_scores
from fer_core.training.loop import OPTIMIZERS, SCHEDULES, TrainConfig, TrainingError

if TYPE_CHECKING:  # plotly is imported where a figure is drawn: the study itself does not need it
    import plotly.graph_objects as go

PAPER_LRS = (0.1, 0.01, 0.001, 0.0001)
RUN_FIELDS = ("seed", "status", "best_val_acc", "test_acc", "macro_f1", "final_train_loss", "train_seconds",
              "wall_seconds", "error")
FIELDS = ("optimizer", "lr", *RUN_FIELDS)
BUDGET_KEYS = ("data", "arch", "epochs", "subset", "seed", "batch_size", "schedule", "augment", "weight_decay",
               "momentum", "label_smoothing", "val_fraction", "clean", "precision", "device", "patience")
TERMINAL = ("finished", "failed", "lost")
MEANS = ("best_val_acc", "test_acc", "macro_f1", "final_train_loss")


@dataclass
class Cell:
    """One optimizer × learning-rate cell; its figures are means over the seeds that finished."""

    optimizer: str
    lr: float
    status: str = "pending"
    best_val_acc: float | None = None
    test_acc: float | None = None
    macro_f1: float | None = None
    final_train_loss: float | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    error: str | None = None
    seeds: list[int] = field(default_factory=list)  # the seeds that finished
    val_acc_min: float | None = None  # spread over seeds, when more than one finished
    val_acc_max: float | None = None
    test_acc_min: float | None = None
    test_acc_max: float | None = None
    runs: list[dict] = field(default_factory=list)  # one per seed, RUN_FIELDS each

    @property
    def name(self) -> str:
        return cell_name(self.optimizer, self.lr)


def cell_name(optimizer: str, lr: float, seed: int | None = None) -> str:
    return f"{optimizer}-lr{lr:g}" + (f"-seed{seed}" if seed is not None else "")


def read_cell(folder: Path, optimizer: str, lr: float) -> Cell:
    """What a cell folder says about itself; ``pending`` when it never ran or did not end."""
    cell = Cell(optimizer, lr)
    progress = read_json(folder / "progress.json")
    status = progress.get("status")
    if status == "finished":
        metrics = read_json(folder / "metrics.json")
        cell.status = "finished"
        cell.best_val_acc, cell.test_acc = run_scores(metrics, progress)
        cell.macro_f1 = metrics.get("macro_f1")
        cell.train_seconds = metrics.get("train_seconds")
    elif status == "failed":
        cell.status = "failed"
        cell.error = progress.get("error")
        cell.best_val_acc = progress.get("best_val_acc")
    else:
        return cell
    if isinstance(progress.get("train_loss"), int | float):
        cell.final_train_loss = round(float(progress["train_loss"]), 5)
    cell.wall_seconds = read_json(folder / "study_cell.json").get("wall_seconds")
    return cell


# --------------------------------------------------------------------------- the study's settings


@dataclass
class StudyConfig:
    """One study: a training budget shared by every cell (``base``) and the grid laid over it. The
    budget, not the folder, identifies the study, so any worker given the same settings joins it."""

    base: TrainConfig
    optimizers: list[str]
    lrs: list[float]
    out: Path
    seeds: list[int] | None = None  # None: the base config's seed alone
    top_seeds: int = 0  # after the grid, train the best K cells again with extra_seed
    extra_seed: int | None = None  # None: one above the largest seed
    storage: str | None = None  # SQLAlchemy URL; None: OUT/study.db
    study_name: str | None = None  # None: derived from the budget
    n_trials: int | None = None  # runs this worker trains before it exits; None: until the study is done
    heartbeat: int = 30  # seconds; a run silent for 4 heartbeats is taken for dead and trained again

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.seeds is None:
            self.seeds = [self.base.seed]
        elif self.seeds:  # the budget's seed is the first; the others are replicas (the caller's config is kept)
            self.base = replace(self.base, seed=self.seeds[0])
        if self.top_seeds and self.extra_seed is None and self.seeds:
            self.extra_seed = max(self.seeds) + 1

    @property
    def primary_seed(self) -> int:
        return self.seeds[0]  # type: ignore[index]

    def budget(self) -> dict:
        d = asdict(self.base)
        return {k: d[k] for k in BUDGET_KEYS}

    def storage_url(self) -> str:
        return self.storage or store.default_storage(self.out)

    def name(self) -> str:
        return self.study_name or store.study_name(self.budget())

    def all_seeds(self) -> list[int]:
        return list(self.seeds or []) + ([self.extra_seed] if self.top_seeds and self.extra_seed is not None else [])

    def main_keys(self) -> list[store.Key]:
        return [(o, float(lr), s) for o in self.optimizers for lr in self.lrs for s in self.seeds or []]

    def folder(self, key: store.Key) -> Path:
        opt, lr, seed = key
        return self.out / "cells" / cell_name(opt, lr, None if seed == self.primary_seed else seed)

    def validate(self) -> None:
        problems = self._grid_problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.base.validate()
        stored = read_json(self.out / "study.json").get("budget")
        if stored:
            store.check_budget({k: stored.get(k) for k in BUDGET_KEYS}, self.budget(), str(self.out))

    def _grid_problems(self) -> list[str]:
        problems = []
        unknown = [o for o in self.optimizers if o not in OPTIMIZERS]
        if unknown:
            problems.append(f"unknown optimizer(s) {', '.join(unknown)} (known: {', '.join(OPTIMIZERS)})")
        if not self.optimizers:
            problems.append("give at least one optimizer")
        if not self.lrs or any(not (math.isfinite(lr) and lr > 0) for lr in self.lrs):
            problems.append(f"learning rates must be positive numbers, got {self.lrs}")
        if len(set(self.optimizers)) != len(self.optimizers) or len(set(self.lrs)) != len(self.lrs):
            problems.append("optimizers and learning rates must not repeat")
        seeds = self.seeds or []
        if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(s, int) or s < 0 for s in seeds):
            problems.append(f"seeds must be distinct whole numbers >= 0, got {seeds}")
        if self.top_seeds < 0:
            problems.append(f"--top-seeds must be >= 0, got {self.top_seeds}")
        if self.top_seeds and (self.extra_seed is None or self.extra_seed < 0 or self.extra_seed in seeds):
            problems.append(f"--extra-seed must be a whole number >= 0 not among --seeds, got {self.extra_seed}")
        if self.n_trials is not None and self.n_trials < 1:
            problems.append(f"--n-trials must be >= 1, got {self.n_trials}")
        if self.heartbeat < 1:
            problems.append(f"--heartbeat must be >= 1 second, got {self.heartbeat}")
        return problems


# --------------------------------------------------------------------------- the study


class CellFailed(Exception):
    """The cell ended without a model (the loss diverged): a result, recorded as a failed trial."""


class CellCancelled(Exception):
    """The worker was asked to stop (or its trial was taken for dead) in the middle of a cell."""


def run_study(sc: StudyConfig, log: Callable[[str], None] = print,
              should_stop: Callable[[], bool] = lambda: False) -> list[Cell]:
    """Join (or start) the study and train cells until it is done, ``n_trials`` runs were trained or
    ``should_stop``; returns every cell in grid order, as the database has them."""
    sc.validate()
    try:
        (sc.out / "cells").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"cannot write the study folder {sc.out}: {exc.strerror or exc}") from None
    with _optuna_quiet():
        return Worker(sc, log, should_stop).run()


@contextlib.contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna logs every failed or pruned trial with a traceback; the worker's own lines say it better."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


class Worker:
    """One process's share of the study: asks the storage for cells and trains them."""

    def __init__(self, sc: StudyConfig, log: Callable[[str], None], should_stop: Callable[[], bool]) -> None:
        self.sc, self.log, self.should_stop = sc, log, should_stop
        self.grace = store.grace(sc.heartbeat)
        try:
            self.storage = store.open_storage(sc.storage_url(), sc.heartbeat)
        except Exception as exc:  # bad URL, unreachable server, missing driver
            raise ValueError(f"cannot open the study storage {store.display_url(sc.storage_url())}: {exc}") from None
        self.sampler = store.CellGridSampler(
            {"optimizer": sc.optimizers, "lr": [float(x) for x in sc.lrs], "seed": sc.seeds})
        self.sampler.reseed_rng()  # the grid order is fixed (seed 0) for every worker; the picks differ
        self.study = store.open_study(self.storage, sc.name(), sc.budget(), self.sampler)
        self.trained = 0
        self.data: dict[int, PreparedData] = {}  # prepared data per seed, shared by this process's cells
        self._exported: object = None
        import_legacy_cells(self.study, sc)

    # ---- the loop

    def run(self) -> list[Cell]:
        states = self.plan()
        done = sum(s.settled for s in states.values())
        self.log(f"study {self.sc.out} ({self.sc.name()} in {store.display_url(self.sc.storage_url())}): "
                 f"{len(states)} cells, {done} already done, {len(states) - done} to run")
        if done < len(states):  # refuse data other than the study's before claiming any cell
            first = self.sc.main_keys()[0]
            self._data_for(self.cell_config(first, self.sc.folder(first)))
        try:
            self._loop()
        finally:
            with contextlib.suppress(Exception):  # a stopped cell is queued again at once, for the other workers
                self.plan()
        cells = self.export(force=True)
        best = winner(cells)
        if best:
            self.log(f"best on validation: {best.optimizer} lr {best.lr:g} (val {percent(best.best_val_acc):>6}, "
                     f"test {percent(best.test_acc):>6})")
        return cells

    def _loop(self) -> None:
        waiting_for: set = set()
        while True:
            if self.should_stop():
                self.log("stopped; run the same command again to resume")
                return
            if self.sc.n_trials is not None and self.trained >= self.sc.n_trials:
                self.log(f"trained {self.trained} run(s) (--n-trials); the study goes on with the next command")
                return
            store.reap_lost(self.study, self.storage, self.grace)
            states = self.plan()
            self.export()
            if self.has_work(states):
                if not self.run_one():
                    return
                continue
            running = {k for k, s in states.items() if s.live}
            if not running:
                return
            if running != waiting_for:
                self.log(f"waiting for {len(running)} run(s) on other workers: "
                         + ", ".join(self.sc.folder(k).name for k in sorted(running)))
                waiting_for = running
            self._sleep(self.sc.heartbeat)

    def plan(self) -> dict[store.Key, store.CellState]:
        """The runs this study wants now, with what the storage says of each; queues the ones that
        need a worker and will not get one from the grid sampler."""
        main = self.sc.main_keys()
        states, extra = survey_runs(self.sc, self.study.get_trials(deepcopy=False))
        exhausted = self.sampler.is_exhausted(self.study)
        queued = store.requeue(self.study, {k: states[k] for k in main}, also_untried=exhausted)
        queued += store.requeue(self.study, {k: states[k] for k in extra}, also_untried=True)
        if queued:
            trials = self.study.get_trials(deepcopy=False)
            states = store.survey(trials, [*main, *extra])
        return states

    def has_work(self, states: dict[store.Key, store.CellState]) -> bool:
        """A queued trial to pop, or a cell nobody tried that the grid sampler can still hand out."""
        if self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return True
        untried = any(not s.tried for k, s in states.items() if k[2] in (self.sc.seeds or []))
        return untried and not self.sampler.is_exhausted(self.study)

    def run_one(self) -> bool:
        """One trial; False when the worker must stop."""
        try:
            self.study.optimize(self.objective, n_trials=1, catch=(CellFailed,), gc_after_trial=False)
        except CellCancelled:
            self.log("stopped in the middle of a cell; it is queued again. Run the same command to resume")
            return False
        except (ValueError, RuntimeError) as exc:
            if not _taken_over(exc):
                raise
            self.log("this worker's trial was taken for dead by another worker (missed heartbeats); going on")
        return True

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.should_stop():
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))

    # ---- one trial

    def objective(self, trial: optuna.Trial) -> float:
        """Claim a cell and train it. The claim comes first: a heartbeat (so a death from here on is seen),
        then the key; a cell another live trial already owns is given up (pruned), so that two workers
        racing for one grid point never both train it."""
        self.storage.record_heartbeat(trial._trial_id)  # so a worker that dies from here on is seen as dead
        trial.set_user_attr("heartbeat_by", trial.number)
        key = store.suggest(trial, OPTIMIZERS, self.sc.lrs, self.sc.all_seeds())
        owner = store.owner_of(self.study, self.storage, trial.number, key, self.grace)
        if owner is not None:
            trial.set_user_attr("status", "duplicate")
            trial.set_user_attr("duplicate_of", owner.number)
            raise optuna.TrialPruned(f"{cell_name(*key)} belongs to trial {owner.number}")
        trial.set_user_attr("training_by", trial.number)
        for k, v in {"status": "running", "worker": f"{socket.gethostname()}:{os.getpid()}",
                     "folder": str(self.sc.folder(key))}.items():
            trial.set_user_attr(k, v)
        self.trained += 1
        result = self.train_cell(trial, key)
        for k, v in result.items():
            trial.set_user_attr(k, v)
        self._log_run(key, result)
        if result["status"] == "finished":
            return float(result["best_val_acc"])
        if result["status"] == "cancelled":
            raise CellCancelled(cell_name(*key))
        raise CellFailed(result["error"])

    def train_cell(self, trial: optuna.Trial, key: store.Key) -> dict:
        """Train one run from scratch; what it gave, as the trial's user attributes.

        The run trains in a folder of this trial's own (``cells/.<cell>.trial<N>``) and replaces the
        cell's folder only when it ends while this worker still owns the trial: a worker taken for
        dead (missed heartbeats) may write on for a moment before it notices, and must never write
        into the folder of the worker that took the cell over."""
        opt, lr, _ = key
        final = self.sc.folder(key)
        folder = final.with_name(f".{final.name}.trial{trial.number}")
        self._remove_dead_workers_folders(final)
        shutil.rmtree(folder, ignore_errors=True)
        cfg = self.cell_config(key, folder)
        cell_log = _cell_logger(folder)
        t0, error = time.monotonic(), None
        try:
            training.train(cfg, log=cell_log, should_stop=self._stop_check(trial), show_bar=False,
                           data=self._data_for(cfg))
        except TrainingError as exc:  # e.g. the loss diverged: a result, recorded as failed
            cell_log(f"failed: {exc}")
            error = str(exc)
        wall = round(time.monotonic() - t0, 1)
        result = run_result(folder, opt, lr, wall, error)
        if self.storage.get_trial(trial._trial_id).state != TrialState.RUNNING:  # taken over: not ours to keep
            shutil.rmtree(folder, ignore_errors=True)
            return result
        shutil.rmtree(final, ignore_errors=True)
        folder.rename(final)
        config = read_json(final / "config.json")
        if isinstance(config.get("train"), dict):  # the run's config names the folder it now lives in
            write_json(final / "config.json", {**config, "train": {**config["train"], "out": str(final)}})
        return result

    def _remove_dead_workers_folders(self, final: Path) -> None:
        """The private folders of earlier trials of this cell whose worker died (killed mid-run)."""
        orphans = list(final.parent.glob(f".{final.name}.trial*"))
        states = {t.number: t.state for t in self.study.get_trials(deepcopy=False)} if orphans else {}
        for orphan in orphans:
            number = orphan.name.rsplit(".trial", 1)[-1]
            if number.isdigit() and states.get(int(number)) != TrialState.RUNNING:
                shutil.rmtree(orphan, ignore_errors=True)

    def cell_config(self, key: store.Key, folder: Path) -> TrainConfig:
        """A cell's run: the study's budget with the cell's optimizer, lr and seed. Every run, whatever
        its seed, is validated on the first seed's slice of train/."""
        opt, lr, seed = key
        base = self.sc.base
        return TrainConfig.from_dict({**asdict(base), "optimizer": opt, "lr": lr, "seed": seed, "out": str(folder),
                                      "val_seed": base.val_seed if base.val_seed is not None else base.seed})

    def _data_for(self, cfg: TrainConfig) -> PreparedData:
        """The data of a run with this seed, prepared once per process: identical for every cell, and
        checked against what the study's other workers trained on."""
        if cfg.seed not in self.data:
            data = training.prepare_data(cfg)
            store.check_data(self.study, cfg.seed, {"train": data.train.content_hash(), "val": data.val.content_hash()})
            self.data[cfg.seed] = data
        return self.data[cfg.seed]

    def _stop_check(self, trial: optuna.Trial) -> Callable[[], bool]:
        """Stop when asked, or when another worker took this trial for dead: two workers must never
        train one cell, so the one that lost its trial gives way."""
        last = [time.monotonic()]
        taken = [False]

        def check() -> bool:
            if self.should_stop() or taken[0]:
                return True
            if time.monotonic() - last[0] > self.sc.heartbeat:
                last[0] = time.monotonic()
                taken[0] = self.storage.get_trial(trial._trial_id).state != TrialState.RUNNING
            return taken[0]

        return check

    def _log_run(self, key: store.Key, r: dict) -> None:
        states = store.survey(self.study.get_trials(deepcopy=False), [*self.sc.main_keys(), key])
        done = sum(s.settled for k, s in states.items() if k != key) + (r["status"] in TERMINAL)
        self.log(f"[{done}/{len(states)}] {self.sc.folder(key).name:<28} {r['status']:<9} "
                 f"val {percent(r['best_val_acc']):>6} test {percent(r['test_acc']):>6}  {r['wall_seconds']:.0f}s"
                 + (f"  ({r['error']})" if r["error"] else ""))

    # ---- outputs

    def export(self, force: bool = False) -> list[Cell]:
        """Rewrite study.csv / study.json / heatmap.html from the database when it changed."""
        trials = self.study.get_trials(deepcopy=False)
        fingerprint = [(t.number, t.state, t.user_attrs.get("status")) for t in trials]
        cells = cells_from_trials(self.sc, trials)
        if force or fingerprint != self._exported:
            write_summary(self.sc, cells, study_meta(self.sc, trials, cells))
            self._exported = fingerprint
        return cells


def _taken_over(exc: BaseException) -> bool:
    """Whether optimize failed because another worker failed this trial first: the trial's own writes
    then raise UpdateFinishedTrialError, or Optuna cannot tell a result to a finished trial (a message
    of Optuna 5.0's, pinned by tests/test_study.py)."""
    return isinstance(exc, optuna.exceptions.UpdateFinishedTrialError) or str(exc).startswith("Cannot tell a ")


def run_facts(config: dict) -> dict:
    """What a run's config.json says it ran on (device, precision, data sizes and hashes): recorded with
    each trial, so the study's summary can state it without the run folders."""
    return {"device": config.get("device"), "precision": config.get("precision"), "data": config.get("data")}


def ran_on(facts: dict) -> dict:
    """``run_facts`` as study.json states them for the whole study."""
    return {"device": facts.get("device"), "precision": facts.get("precision"), "data_sizes": facts.get("data")}


def run_result(folder: Path, optimizer: str, lr: float, wall: float, error: str | None) -> dict:
    """A trained (or failed, or cancelled) run folder as the trial's user attributes."""
    cell = read_cell(folder, optimizer, lr)
    status = cell.status
    if status == "pending":  # stopped midway, or failed before writing its progress
        status = "cancelled" if read_json(folder / "progress.json").get("status") == "cancelled" else "failed"
    if status == "finished" and not isinstance(cell.best_val_acc, int | float):
        status, error = "failed", "finished without a validation accuracy in metrics.json"
    if status in TERMINAL:
        write_json(folder / "study_cell.json", {"wall_seconds": wall})
    config = read_json(folder / "config.json")
    return {"status": status, "best_val_acc": cell.best_val_acc, "test_acc": cell.test_acc,
            "macro_f1": cell.macro_f1, "final_train_loss": cell.final_train_loss,
            "train_seconds": cell.train_seconds, "wall_seconds": wall,
            "error": cell.error or (error if status == "failed" else None),
            **run_facts(config)}


def import_legacy_cells(study: optuna.Study, sc: StudyConfig) -> int:
    """A study folder written before the study moved to Optuna keeps its finished and failed cells:
    they enter an empty study as trials instead of being trained again."""
    if study.get_trials(deepcopy=False) or not (sc.out / "cells").is_dir():
        return 0
    dists = store.distributions(OPTIMIZERS, sc.lrs, sc.all_seeds())
    budget = sc.budget()
    n = 0
    for key in sc.main_keys():
        if key[2] != sc.primary_seed:
            continue
        cell = read_cell(sc.folder(key), key[0], key[1])
        if cell.status not in ("finished", "failed") or (cell.status == "finished" and cell.best_val_acc is None):
            continue
        config = read_json(sc.folder(key) / "config.json")
        trained = config.get("train") if isinstance(config.get("train"), dict) else {}
        if any(k in trained and trained[k] != budget[k] for k in BUDGET_KEYS if k != "data"):  # as check_budget
            continue  # trained with another budget: not a result of this study, so it is trained again
        attrs = {**{k: getattr(cell, k) for k in RUN_FIELDS if k != "seed"}, "imported": True, **run_facts(config)}
        finished = cell.status == "finished"
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE if finished else TrialState.FAIL,
            value=cell.best_val_acc if finished else None,
            params={"optimizer": key[0], "lr": key[1], "seed": key[2]}, distributions=dists, user_attrs=attrs))
        n += 1
    return n


def _cell_logger(folder: Path) -> Callable[[str], None]:
    def log(message: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "train.log", "a") as fh:
            fh.write(message + "\n")

    return log


def ranked(cells: list[Cell]) -> list[Cell]:
    """The finished cells, best on validation first (test breaks ties, then grid order)."""
    done = [c for c in cells if c.status == "finished" and c.best_val_acc is not None]
    return sorted(done, key=lambda c: (c.best_val_acc, c.test_acc or 0), reverse=True)  # stable: grid order


def winner(cells: list[Cell]) -> Cell | None:
    """The best cell on validation, never on test: test accuracy is reported, not chosen on."""
    return next(iter(ranked(cells)), None)


# --------------------------------------------------------------------------- from the database to cells


def extra_keys(sc: StudyConfig, states: dict[store.Key, store.CellState]) -> list[store.Key]:
    """The replica runs: once every run of the grid is settled, the ``top_seeds`` best cells on
    validation (ranked on the grid's seeds only, so the choice does not move as replicas finish)."""
    if not sc.top_seeds or sc.extra_seed is None or not all(states[k].settled for k in sc.main_keys()):
        return []
    grid = [aggregate(opt, lr, [run_from_state(states[(opt, lr, s)], s) for s in sc.seeds or []])
            for opt in sc.optimizers for lr in (float(x) for x in sc.lrs)]
    return [(c.optimizer, c.lr, sc.extra_seed) for c in ranked(grid)[: sc.top_seeds]]


def survey_runs(sc: StudyConfig, trials: list[optuna.trial.FrozenTrial]
                ) -> tuple[dict[store.Key, store.CellState], list[store.Key]]:
    """What the storage says of every run the study wants now (the grid's, then the replicas chosen
    from it), and which replicas those are."""
    states = store.survey(trials, sc.main_keys())
    extra = extra_keys(sc, states)
    states.update(store.survey(trials, extra))
    return states, extra


def run_from_state(s: store.CellState, seed: int) -> dict:
    """One run's row: its result, or where it stands."""
    if s.result is not None:
        a = s.result.user_attrs
        finished = s.result.state == TrialState.COMPLETE
        row = {k: a.get(k) for k in RUN_FIELDS}
        row.update(seed=seed, status="finished" if finished else "failed")
        if finished and row["best_val_acc"] is None:
            row["best_val_acc"] = s.result.value
        return row
    row = dict.fromkeys(RUN_FIELDS)
    if s.lost > store.MAX_RETRY:
        row.update(status="lost", error=f"its worker died {s.lost} times")
    else:
        row["status"] = "running" if s.training is not None else "pending"
    row["seed"] = seed
    return row


def cells_from_trials(sc: StudyConfig, trials: list[optuna.trial.FrozenTrial]) -> list[Cell]:
    """Every cell of the grid in grid order, with one run per seed it has (grid seeds, then the replica)."""
    states, _ = survey_runs(sc, trials)
    cells = []
    for opt in sc.optimizers:
        for lr in (float(x) for x in sc.lrs):
            seeds = [s for s in sc.all_seeds() if (opt, lr, s) in states]
            cells.append(aggregate(opt, lr, [run_from_state(states[(opt, lr, s)], s) for s in seeds]))
    return cells


def aggregate(optimizer: str, lr: float, runs: list[dict]) -> Cell:
    """A cell from its runs: means over the seeds that finished, min/max when there are several."""
    done = [r for r in runs if r["status"] == "finished"]
    status = "finished" if done else next((s for s in ("failed", "lost", "running") if any(r["status"] == s
                                                                                           for r in runs)), "pending")
    cell = Cell(optimizer, lr, status, seeds=[r["seed"] for r in done], runs=runs)
    for k in MEANS:
        setattr(cell, k, _mean([r[k] for r in done]))
    for k in ("train_seconds", "wall_seconds"):
        values = [r[k] for r in runs if isinstance(r[k], int | float)]
        setattr(cell, k, round(sum(values), 1) if values else None)
    errors = [(r["seed"], r["error"]) for r in runs if r["error"]]
    if errors:
        cell.error = errors[0][1] if len(runs) == 1 else "; ".join(f"seed {s}: {e}" for s, e in errors)
    if len(done) > 1:
        vals, tests = [r["best_val_acc"] for r in done], [r["test_acc"] for r in done]
        cell.val_acc_min, cell.val_acc_max = _spread(vals)
        cell.test_acc_min, cell.test_acc_max = _spread(tests)
    return cell


def _mean(values: list) -> float | None:
    values = [float(v) for v in values if isinstance(v, int | float)]
    return sum(values) / len(values) if values else None


def _spread(values: list) -> tuple[float | None, float | None]:
    values = [float(v) for v in values if isinstance(v, int | float)]
    return (min(values), max(values)) if values else (None, None)


def study_meta(sc: StudyConfig, trials: list[optuna.trial.FrozenTrial], cells: list[Cell]) -> dict:
    """What study.json says besides the cells: where the study lives, what the runs ran on."""
    runs = [r for c in cells for r in c.runs]
    first = next((t for t in sorted(trials, key=lambda t: t.number) if t.state == TrialState.COMPLETE
                  and t.params.get("seed") == sc.primary_seed), None)
    attrs = first.user_attrs if first else {}
    storage = "study.db beside this file" if sc.storage is None else store.display_url(sc.storage_url())
    return {"study_name": sc.name(), "storage": storage,  # a report names no server path
            "runs_done": sum(r["status"] in TERMINAL for r in runs), "runs_total": len(runs),
            **ran_on(attrs)}


# --------------------------------------------------------------------------- outputs


def write_summary(sc: StudyConfig, cells: list[Cell], meta: dict | None = None) -> None:
    """study.csv (one row per run), study.json (one entry per cell) and the heatmap, atomically."""
    write_text(sc.out / "study.csv", _csv(sc, cells))
    best = winner(cells)
    done = [c for c in cells if c.status in TERMINAL and not any(r["status"] in ("pending", "running")
                                                                  for r in c.runs)]
    meta = meta if meta is not None else _meta_from_folders(sc, done)
    write_json(sc.out / "study.json", {
        "budget": sc.budget(), "optimizers": sc.optimizers, "lrs": sc.lrs, "seeds": sc.seeds,
        "top_seeds": sc.top_seeds, "extra_seed": sc.extra_seed if sc.top_seeds else None,
        "cells_done": len(done), "cells_total": len(cells),
        "wall_seconds": round(sum(c.wall_seconds or 0 for c in cells), 1),
        **meta, "winner": asdict(best) if best else None, "cells": [asdict(c) for c in cells],
    })
    fig = heatmap_figure(cells)
    write_text(sc.out / "heatmap.html", fig.to_html(include_plotlyjs="cdn", full_html=True))
    with contextlib.suppress(Exception):  # needs kaleido (not a dependency); the HTML is the figure of record
        import kaleido  # noqa: F401

        write_atomic(sc.out / "heatmap.png",
                     lambda tmp: fig.write_image(str(tmp), format="png", width=1100, height=520))


def _csv(sc: StudyConfig, cells: list[Cell]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    for c in cells:
        runs = c.runs or [{**{k: getattr(c, k) for k in RUN_FIELDS if k != "seed"}, "seed": sc.primary_seed}]
        for r in runs:
            w.writerow({"optimizer": c.optimizer, "lr": c.lr, **{k: r.get(k) for k in RUN_FIELDS}})
    return buf.getvalue()


def _meta_from_folders(sc: StudyConfig, done: list[Cell]) -> dict:
    """Device and data of a summary written without the database (cells given by hand)."""
    return ran_on(run_facts(read_json(sc.out / "cells" / done[0].name / "config.json") if done else {}))


def known_studies() -> list[Path]:
    """Every study folder the app can show: the shipped ones in ``reports/`` (the paper-scale one
    first, as the headline), then those under the runs directory, by name."""
    reports = PROJECT_ROOT / "reports"
    found = sorted((p.parent for p in reports.glob("*/study.json")), key=lambda p: (p.name != "study-paper", p.name))
    root = runs_dir()
    if root.is_dir():
        found += sorted((p for p in root.iterdir() if (p / "study.json").is_file()), key=lambda p: p.name)
    return found


def load_study(folder: str | Path) -> tuple[dict, list[Cell]]:
    """A study folder's ``study.json`` and its cells; raises ValueError when it is not one.

    The file may come from anywhere (an older version, a hand edit, another machine), and the Study
    page lists every study it finds: each field is checked here, so that one malformed file is one
    clear message instead of a broken page."""
    folder = Path(folder).expanduser()
    data = read_json(folder / "study.json")
    if not data or not isinstance(data.get("cells"), list):
        raise ValueError(f"{folder.name} holds no study (no readable study.json)")
    for key in ("budget", "data_sizes"):
        if not isinstance(data.get(key), dict):
            data[key] = {}
    cells = []
    for i, c in enumerate(data["cells"], 1):
        if not isinstance(c, dict) or not isinstance(c.get("optimizer"), str) or not is_number(c.get("lr")):
            raise ValueError(f"{folder.name}/study.json: cell {i} has no optimizer name and learning rate")
        cells.append(_cell_from_json(c))
    return data, cells


def _cell_from_json(c: dict) -> Cell:
    """A cell as study.json stores it, with every field of the wrong type dropped to its default."""
    cell = Cell(c["optimizer"], float(c["lr"]))
    for f in Cell.__dataclass_fields__.values():  # type: ignore[attr-defined]
        value = c.get(f.name)
        if f.name in ("optimizer", "lr") or value is None:
            continue
        if f.name in ("status", "error"):
            ok = isinstance(value, str)
        elif f.name == "seeds":
            ok = isinstance(value, list) and all(is_count(s) for s in value)
        elif f.name == "runs":
            value = [r for r in value if isinstance(r, dict)] if isinstance(value, list) else None
            ok = value is not None
        else:
            ok = is_number(value)
        if ok:
            setattr(cell, f.name, value)
    return cell


def heatmap_figure(cells: list[Cell]) -> go.Figure:
    """Validation and test accuracy per optimizer (rows) × learning rate (columns); a cell with
    several seeds shows their mean ± half their range."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    optimizers = list(dict.fromkeys(c.optimizer for c in cells))
    lrs = sorted({c.lr for c in cells}, reverse=True)
    by_key = {(c.optimizer, c.lr): c for c in cells}
    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation accuracy (best epoch)", "test accuracy"),
                        horizontal_spacing=0.04, shared_yaxes=True)
    values = [getattr(c, a) * 100 for c in cells for a in ("best_val_acc", "test_acc")
              if c.status == "finished" and isinstance(getattr(c, a), int | float)]
    zmin, zmax = (math.floor(min(values)), math.ceil(max(values))) if values else (0, 100)  # contrast where it is
    for col, attr in enumerate(("best_val_acc", "test_acc"), start=1):
        z, text = [], []
        for o in optimizers:
            cells_row = [by_key.get((o, lr)) for lr in lrs]
            z.append([_z(c, attr) for c in cells_row])
            text.append([_label(c, attr) for c in cells_row])
        fig.add_trace(go.Heatmap(z=z, x=[f"{lr:g}" for lr in lrs], y=optimizers, text=text, texttemplate="%{text}",
                                 colorscale="Viridis", zmin=zmin, zmax=max(zmax, zmin + 1), showscale=col == 2,
                                 colorbar={"title": "%"}, hovertemplate="%{y} lr %{x}: %{text}<extra></extra>"),
                      row=1, col=col)
        fig.update_xaxes(title_text="learning rate", type="category", row=1, col=col)
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=col)
    fig.update_layout(height=120 + 42 * len(optimizers), margin={"t": 60, "b": 40, "l": 10, "r": 10})
    return fig


def _z(c: Cell | None, attr: str) -> float | None:
    v = getattr(c, attr) if c and c.status == "finished" else None
    return v * 100 if isinstance(v, int | float) else None


def _label(c: Cell | None, attr: str) -> str:
    v = _z(c, attr)
    if v is None:
        return c.status if c else ""
    lo, hi = (c.val_acc_min, c.val_acc_max) if attr == "best_val_acc" else (c.test_acc_min, c.test_acc_max)
    spread = f"±{(hi - lo) * 50:.1f}" if isinstance(lo, int | float) and isinstance(hi, int | float) else ""
    return f"{v:.1f}{spread}"


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> StudyConfig:
    d = TrainConfig()
    ap = argparse.ArgumentParser(prog="fer-study", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=d.data, help="FER-2013 folder or fer2013.csv")
    ap.add_argument("--arch", default=d.arch, choices=list_models())
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS), help=f"comma list from {', '.join(OPTIMIZERS)}")
    ap.add_argument("--lrs", default=",".join(f"{x:g}" for x in PAPER_LRS), help="comma list of learning rates")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--patience", type=int, default=None,
                    help="stop a cell once validation accuracy has not improved for this many epochs")
    ap.add_argument("--subset", type=int, default=None, help="images per class (the same for every cell)")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--schedule", default="none", choices=SCHEDULES,
                    help="none keeps the learning rate constant, so every optimizer gets the lr it is labelled with")
    ap.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d.augment)
    ap.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay)
    seeds = ap.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", default=None, help="comma list of seeds every cell is trained with (default 0)")
    seeds.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds N)")
    ap.add_argument("--top-seeds", type=int, default=0, metavar="K",
                    help="once the grid is done, train the K best cells on validation again with --extra-seed")
    ap.add_argument("--extra-seed", type=int, default=None, metavar="S", help="default: one above the largest seed")
    ap.add_argument("--precision", default=d.precision, choices=["auto", "fp32", "bf16"])
    ap.add_argument("--device", default=d.device)
    ap.add_argument("--out", required=True, help="study folder (cells go to OUT/cells/)")
    ap.add_argument("--storage", default=None,
                    help="SQLAlchemy database URL shared by several workers, e.g. postgresql://user@host/db "
                         "(default: sqlite file OUT/study.db)")
    ap.add_argument("--study-name", default=None, help="default: derived from the budget")
    ap.add_argument("--n-trials", type=int, default=None, help="train at most this many runs, then exit")
    ap.add_argument("--heartbeat", type=int, default=30,
                    help="seconds between a worker's signs of life (default 30); after 4 missed ones its cell is "
                         "failed and trained again by another worker")
    a = ap.parse_args(argv)
    lrs = _numbers(ap, "--lrs", a.lrs, float)
    seed_list = [a.seed] if a.seed is not None else _numbers(ap, "--seeds", a.seeds or "0", int)
    base = TrainConfig(data=a.data, arch=a.arch, epochs=a.epochs, subset=a.subset, batch_size=a.batch_size,
                       schedule=a.schedule, augment=a.augment, label_smoothing=a.label_smoothing,
                       weight_decay=a.weight_decay, patience=a.patience, seed=seed_list[0] if seed_list else 0,
                       precision=a.precision, device=a.device)
    return StudyConfig(base=base, optimizers=[o.strip() for o in a.optimizers.split(",") if o.strip()], lrs=lrs,
                       out=Path(a.out), seeds=seed_list, top_seeds=a.top_seeds, extra_seed=a.extra_seed,
                       storage=a.storage, study_name=a.study_name, n_trials=a.n_trials, heartbeat=a.heartbeat)


def _numbers(ap: argparse.ArgumentParser, flag: str, text: str, kind: type) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        ap.error(f"{flag} must be comma-separated numbers, got '{text}'")  # exits


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM or Ctrl-C cancel the current cell cleanly (it is queued again); a second Ctrl-C
    interrupts at once."""

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: list[str] | None = None) -> int:
    sc = parse_args(argv)
    stop = threading.Event()
    _stop_on_signals(stop)
    t0 = time.monotonic()
    from sqlalchemy.exc import SQLAlchemyError

    try:
        run_study(sc, should_stop=stop.is_set)
    except (ValueError, TrainingError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:  # the database went away or stayed locked: finished cells are kept in it
        print(f"error: the study's database ({store.display_url(sc.storage_url())}) failed: "
              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n"
              "Finished cells are kept; run the same command again to continue.", file=sys.stderr)
        return 2
    print(f"study folder: {sc.out}  ({time.monotonic() - t0:.0f} s this session)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
