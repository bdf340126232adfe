"""Starting a run from the app: a new one (``start_run``) or a stopped one again (``resume_run``).

A run started from the browser is an ordinary ``fer_core.training.loop.train`` job in its own
process (``python -m fer_core.runs.worker``), detached into its own session so that it outlives
the Streamlit script, the browser tab and even a restart of the server. This module refuses
what must not start (deployment caps, bad settings, a full disk, another run alive), takes the
launcher lock (``fer_core.runs.lock``), prepares the run folder and starts the worker, handing
it the lock. After that the app only reads the run folder (``fer_core.runs.store``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from fer_core.common.atomic import write_json
from fer_core.common.paths import PROJECT_ROOT
from fer_core.common.values import is_count
from fer_core.runs.app_settings import AppSettings, load_settings
from fer_core.runs.errors import RunError
from fer_core.runs.lock import HeldLock, acquire, identity, lock_path
from fer_core.runs.store import LAUNCH_NAME, load_run
from fer_core.training.history import ACTIVE_STATES, now_stamp
from fer_core.training.loop import TrainConfig, TrainingError, make_run_dir

LOG_NAME = "train.log"
"""The worker's stdout and stderr, in its run folder: what to read when a run failed oddly."""

MIN_FREE_BYTES = 100 * 2**20
"""A run writes a few checkpoints of at most ~30 MB each, atomically (old + new at once)."""


def check_config(cfg: TrainConfig, settings: AppSettings | None = None, admin: bool = False) -> list[str]:
    """Every reason not to start ``cfg`` (deployment caps, bad hyper-parameters, bad data path).

    ``TrainConfig.validate`` reads the data folder, so callers that ask often (a page rerun)
    should ask only when the settings change.
    """
    settings = settings or load_settings()
    problems = settings.check(cfg.epochs, cfg.subset, admin)
    try:
        cfg.validate()
    except ValueError as exc:
        problems.extend(str(exc).split("; "))
    return problems


def start_run(cfg: TrainConfig, settings: AppSettings | None = None, admin: bool = False) -> Path:
    """Validate, take the lock, create the run folder and start the worker; returns the folder.

    Raises ``ValueError`` for bad settings or data, ``RunBusy`` while another run is alive,
    ``TrainingError`` for an unwritable folder or a full disk. Nothing is left behind on refusal.
    ``admin`` says the visitor signed in with the admin password (needed on a public deployment).
    """
    problems = check_config(cfg, settings, admin)
    if problems:
        raise ValueError("; ".join(problems))
    with _launching() as lock:
        out = make_run_dir(cfg)
        cfg.out = str(out)
        _check_space(out)
        try:
            write_json(out / LAUNCH_NAME, asdict(cfg))
        except OSError as exc:
            raise TrainingError(f"cannot write the run folder {out}: {exc.strerror or exc}") from None
        _spawn_worker(lock, out, [str(out / LAUNCH_NAME)])
    return out


def resume_run(run: Path, settings: AppSettings | None = None, admin: bool = False) -> Path:
    """Continue a stopped run in the background from its last finished epoch (see ``training.resume``),
    under the same one-run lock as ``start_run``."""
    info = load_run(Path(run))
    epochs, subset = info.config.get("epochs"), info.config.get("subset")
    readable = is_count(epochs) and (subset is None or is_count(subset))
    settings = settings or load_settings()
    # unreadable: ask about the visitor alone (a budget every deployment allows), then refuse the run itself
    problems = settings.check(epochs, subset, admin) if readable else settings.check(0, 0, admin)
    if problems:  # first: a visitor who may not train learns nothing about the run
        raise ValueError("; ".join(problems))
    if not readable:
        raise RunError(f"{info.name} cannot be resumed: its saved config has no valid epochs and subset")
    if not info.resumable:
        why = "it has finished" if info.status == "finished" else (
            f"it is {info.status}" if info.status in ACTIVE_STATES else "it has no saved state after an epoch")
        raise RunError(f"{info.name} cannot be resumed: {why}")
    with _launching() as lock:
        _check_space(info.path)
        _spawn_worker(lock, info.path, ["--resume", str(info.path)])
    return info.path


@contextmanager
def _launching() -> Iterator[HeldLock]:
    """Hold the launcher lock while a worker is set up; give it back unless the worker took it over
    (``_spawn_worker``), whatever went wrong."""
    lock = acquire({**identity(), "run": None, "state": "starting", "since": now_stamp()})
    try:
        yield lock
    finally:
        lock.release()  # no-op once handed over


def _check_space(folder: Path) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise TrainingError(f"cannot inspect the disk of {folder}: {exc.strerror or exc}") from None
    if free < MIN_FREE_BYTES:
        raise TrainingError(f"the disk holding {folder} is (nearly) full: {free / 2**20:.0f} MB free, "
                            f"a run needs at least {MIN_FREE_BYTES // 2**20} MB")


def _spawn_worker(lock: HeldLock, out: Path, args: list[str]) -> None:
    """Start the detached worker, logging into the run folder, and hand it the lock: it inherits
    the locked descriptor, and the record names it from now on."""
    try:
        log = open(out / LOG_NAME, "ab")  # handed to the child, closed below
    except OSError as exc:
        raise TrainingError(f"cannot write the run folder {out}: {exc.strerror or exc}") from None
    with log:
        try:
            proc = subprocess.Popen([sys.executable, "-m", "fer_core.runs.worker", *args],
                                    cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                    pass_fds=(lock.fd,))
        except OSError as exc:
            raise TrainingError(f"cannot start the training process: {exc}") from None
    try:
        lock.write({**identity(proc.pid), "run": str(out), "state": "running", "since": now_stamp()})
    except OSError as exc:
        proc.terminate()  # never leave a run going that the lock does not name
        raise TrainingError(f"cannot write the launcher lock {lock_path()}: {exc.strerror or exc}") from None
    lock.hand_over()
