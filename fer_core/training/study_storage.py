"""Where the optimizer study keeps its grid, and the rules that make every cell run exactly once.

The grid lives in an Optuna study inside an SQL database: an SQLite file in the study folder by
default, or any SQLAlchemy URL (``postgresql://user@host/db``) so that the same command started on
several machines shares one grid. Optuna gives the parts: ``GridSampler`` hands out grid points,
the storage's heartbeat marks a trial whose worker died (``RetryHeartbeatStaleTrialCallback``
queues it again), trial numbers are assigned in creation order under a lock.

Optuna does not promise that a grid point is trained once: two workers asking at the same moment
can be handed the same point, and a lost cell may be queued twice (the heartbeat retry and a requeue
racing). So a trial, once it knows its cell, asks ``owner_of`` whether another trial owns it, and
trains only if none does. Another trial of the same cell owns it when it

- holds a result (COMPLETE, or FAIL recorded as ``failed``, e.g. the loss diverged), or
- is queued or running and was created earlier (a lower trial number), or
- has already started training (``training_by`` set under its own number).

Of two trials that race for one cell, the later sees the earlier: before deciding it waits for
earlier running trials that have not said yet which cell they hold, and fails those that stay
silent past the grace period (their later writes then raise, so they can never start training).
Marks are keyed by the trial's own number because a retried trial inherits its predecessor's
user attributes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

Key = tuple[str, float, int]  # (optimizer, learning rate, seed): one training run of the study
MAX_RETRY = 3  # a cell whose worker died this many times is given up on (e.g. the machine runs out of memory)
POLL_S = 0.2


# --------------------------------------------------------------------------- opening


def default_storage(out: Path) -> str:
    return f"sqlite:///{out.resolve() / 'study.db'}"


def display_url(url: str) -> str:
    """The storage URL as it may be written to a report: without a password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: opening it will say so
        return url


def open_storage(url: str, heartbeat: int) -> RDBStorage:
    """An RDB storage whose running trials send a heartbeat; one that stops for ``grace(heartbeat)``
    seconds is failed by the next worker and queued again (at most ``MAX_RETRY`` times)."""
    sqlite = url.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": 120}} if sqlite else {"pool_pre_ping": True}
    with _quiet():
        storage = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                             grace_period=grace(heartbeat),
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
    if sqlite:
        _serialize_sqlite(storage)
    return storage


def grace(heartbeat: int) -> int:
    """Seconds without a heartbeat before a trial counts as lost: generous, since a worker on a busy
    CPU can be late."""
    return 4 * heartbeat


def _serialize_sqlite(storage: RDBStorage) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    Python's sqlite3 driver opens a transaction only at the first write, so Optuna's read-then-update
    steps (popping a queued trial, failing a stale one) are not atomic there and two processes could
    pop the same queued trial. ``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe) serializes them;
    PostgreSQL and MySQL get the same from Optuna's ``SELECT ... FOR UPDATE``."""
    from sqlalchemy import event

    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while Optuna created the tables lack the hooks


def study_name(budget: dict) -> str:
    """The same budget gives the same name on every machine, so the same command joins the same study."""
    digest = hashlib.sha256(json.dumps(budget, sort_keys=True).encode()).hexdigest()[:12]
    return f"fer-study-{budget.get('arch')}-{digest}"


def check_data(study: optuna.Study, seed: int, hashes: dict[str, str]) -> None:
    """The first worker to prepare a seed's data records its content hashes; every other worker must
    hold the same images, wherever its copy lives."""
    key = f"data_seed{seed}"
    stored = study.user_attrs.get(key)
    if stored is None:
        study.set_user_attr(key, hashes)
    elif stored != hashes:
        differs = ", ".join(f"{k} {hashes.get(k)} here, {v} in the study" for k, v in stored.items()
                            if hashes.get(k) != v)
        raise ValueError(f"this worker's data is not the study's ({differs}): point --data at the same "
                         "FER-2013 copy (cleaning and validation settings included)")


def open_study(storage: RDBStorage, name: str, budget: dict, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Create or join the study; refuse one that was started with another budget."""
    with _quiet():
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                    pruner=optuna.pruners.NopPruner(), load_if_exists=True)
    stored = study.user_attrs.get("budget")
    if stored is None:
        study.set_user_attr("budget", budget)
    else:
        check_budget(stored, budget, f"study '{name}'")
    return study


def check_budget(stored: dict, budget: dict, where: str) -> None:
    """Cells trained on different budgets do not compare: joining a study means training on its budget.
    The data's path is not part of it (another machine may keep the data elsewhere): its content is,
    checked by ``check_data`` once it is loaded."""
    keys = (set(stored) | set(budget)) - {"data"}
    diff = sorted(k for k in keys if stored.get(k) != budget.get(k))
    if diff:
        raise ValueError(f"{where} holds a study with a different budget ({', '.join(diff)}); "
                         "resume it with the same settings or choose another --out / --study-name")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Optuna flags the heartbeat as experimental on every use; it is the point of this module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


class CellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, also for trials it did not hand out: queued ones (a stopped cell queued
    again, a replica seed) hold their cell without a grid point, and Optuna 5's ``after_trial`` reads
    the grid point of the trial that may end the grid, which raised KeyError for them."""

    def after_trial(self, study, trial, state, values) -> None:  # type: ignore[no-untyped-def]
        if "grid_id" in study._storage.get_trial_system_attrs(trial._trial_id):
            super().after_trial(study, trial, state, values)


# --------------------------------------------------------------------------- what a trial holds


def suggest(trial: optuna.Trial, optimizers: Iterable[str], lrs: Iterable[float], seeds: Iterable[int]) -> Key:
    """The trial's cell, from the grid sampler (or from the queue when it was enqueued or retried).

    The optimizer choices are every optimizer the trainer knows, and lr and seed are ranges, because
    Optuna requires one parameter to keep its distribution across the whole study: a later command
    may grow the grid."""
    lrs, seeds = list(lrs), list(seeds)
    opt = trial.suggest_categorical("optimizer", list(optimizers))
    lr = trial.suggest_float("lr", min(lrs), max(lrs), log=True)
    seed = trial.suggest_int("seed", min(seeds), max(seeds))
    return str(opt), float(lr), int(seed)


def distributions(optimizers: Iterable[str], lrs: Iterable[float], seeds: Iterable[int]) -> dict:
    """The distributions ``suggest`` uses, for trials added without running (imported cells)."""
    lrs, seeds = list(lrs), list(seeds)
    return {"optimizer": CategoricalDistribution(list(optimizers)),
            "lr": FloatDistribution(min(lrs), max(lrs), log=True), "seed": IntDistribution(min(seeds), max(seeds))}


def key_of(t: FrozenTrial) -> Key | None:
    """The cell a trial holds; None until it has said (a trial just created by the grid sampler)."""
    p = t.params if "seed" in t.params else t.system_attrs.get("fixed_params", {})
    try:
        return str(p["optimizer"]), float(p["lr"]), int(p["seed"])
    except (KeyError, TypeError, ValueError):
        return None


def is_result(t: FrozenTrial) -> bool:
    """Finished training: a value, or a failure that is an outcome (diverged), not an accident."""
    return t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and t.user_attrs.get("status") == "failed")


def is_live(t: FrozenTrial) -> bool:
    return t.state in (TrialState.WAITING, TrialState.RUNNING)


def is_training(t: FrozenTrial) -> bool:
    return t.state == TrialState.RUNNING and t.user_attrs.get("training_by") == t.number


def is_lost(t: FrozenTrial) -> bool:
    """Failed without an outcome and not stopped on purpose: its worker died (or was taken for dead)."""
    return t.state == TrialState.FAIL and t.user_attrs.get("status") not in ("failed", "cancelled")


# --------------------------------------------------------------------------- who trains a cell


def owner_of(study: optuna.Study, storage: RDBStorage, number: int, key: Key, grace_s: int,
             sleep: Callable[[float], None] = time.sleep) -> FrozenTrial | None:
    """The trial that owns ``key`` if it is not trial ``number`` (see the module docstring)."""
    trials = _after_earlier_trials_spoke(study, storage, number, grace_s, sleep)
    for t in trials:
        if t.number == number or key_of(t) != key:
            continue
        if is_result(t) or (is_live(t) and t.number < number) or is_training(t):
            return t
    return None


def _after_earlier_trials_spoke(study: optuna.Study, storage: RDBStorage, number: int, grace_s: int,
                                sleep: Callable[[float], None]) -> list[FrozenTrial]:
    """All trials, once every earlier running trial has said which cell it holds (or was failed for
    staying silent past the grace period)."""
    while True:
        trials = study.get_trials(deepcopy=False)
        silent = [t for t in trials if t.number < number and t.state == TrialState.RUNNING and key_of(t) is None]
        if not silent:
            return trials
        old = [t for t in silent if _age_s(t) > grace_s]
        for t in old:
            fail_trial(storage, t, "lost: it never said which cell it holds")
        if not old:
            sleep(POLL_S)


def _age_s(t: FrozenTrial) -> float:
    return (datetime.now() - t.datetime_start).total_seconds() if t.datetime_start else 0.0


def fail_trial(storage: RDBStorage, t: FrozenTrial, error: str) -> bool:
    """Mark a running trial failed; False when someone else finished it first."""
    try:
        storage.set_trial_user_attr(t._trial_id, "error", error)
        return storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


def reap_lost(study: optuna.Study, storage: RDBStorage, grace_s: int) -> int:
    """Fail trials whose worker died; returns how many.

    Optuna's own check covers trials with a stale heartbeat (and queues them again). A trial that
    died before its first heartbeat has none, so Optuna never sees it: a running trial that has not
    marked ``heartbeat_by`` with its own number within the grace period is failed here, and
    ``plan`` queues its cell again."""
    with _quiet():
        optuna.storages.fail_stale_trials(study)
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("heartbeat_by") != t.number and _age_s(t) > grace_s:
            n += fail_trial(storage, t, "lost: its worker died before its first heartbeat")
    return n


# --------------------------------------------------------------------------- what is left to do


@dataclass
class CellState:
    """What the storage says about one training run of the study."""

    result: FrozenTrial | None = None  # the earliest trial with an outcome
    training: FrozenTrial | None = None  # a trial training it now
    live: list[FrozenTrial] = field(default_factory=list)  # queued or running trials of it
    tried: int = 0  # trials that held it, whatever became of them
    lost: int = 0  # trials whose worker died

    @property
    def settled(self) -> bool:
        """Nothing more will be done for it: an outcome, or given up after too many dead workers."""
        return self.result is not None or self.lost > MAX_RETRY


def survey(trials: Iterable[FrozenTrial], keys: Iterable[Key]) -> dict[Key, CellState]:
    """Each wanted cell's state, rebuilt from every trial ever made for it: the database is the only
    shared memory the workers have, so each decision starts from it."""
    states = {k: CellState() for k in keys}
    for t in sorted(trials, key=lambda t: t.number):
        s = states.get(key_of(t))  # type: ignore[arg-type]
        if s is None:
            continue
        s.tried += 1
        s.lost += is_lost(t)
        if is_result(t) and s.result is None:
            s.result = t
        if is_training(t):
            s.training = t
        if is_live(t):
            s.live.append(t)
    return states


def requeue(study: optuna.Study, states: dict[Key, CellState], also_untried: bool) -> list[Key]:
    """Queue the cells that need a worker and will not get one otherwise: tried before but without an
    outcome and with nobody on them now (their worker was stopped or died). Cells never tried are the
    grid sampler's, unless it has nothing left to hand out (``also_untried``). Two workers requeueing
    at once make two queued trials; the later one yields to the earlier (``owner_of``)."""
    queued = []
    for key, s in states.items():
        if s.settled or s.live or not (s.tried or also_untried):
            continue
        opt, lr, seed = key
        study.enqueue_trial({"optimizer": opt, "lr": lr, "seed": seed}, skip_if_exists=False)
        queued.append(key)
    return queued
