"""The run store: what the app knows about the run folders in the runs directory.

A run folder is the only thing a run shares with the app: training writes ``progress.json``,
``config.json``, ``history.csv``, ``metrics.json`` and the model into it, and the launcher adds
``launch.json`` (the settings asked for). Everything the Training page shows is read back from
those files here, so a run looks the same whether it was started from the app, from
``train.py``, or is long over; nothing about a run lives in a Streamlit session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from fer_core.common.atomic import read_json, remove_orphaned_temps
from fer_core.common.paths import runs_dir
from fer_core.common.process import pid_alive
from fer_core.runs.lock import holder_alive, read_lock
from fer_core.training.history import ACTIVE_STATES, run_scores
from fer_core.training.resume import STATE_FILE

LAUNCH_NAME = "launch.json"
"""The settings a run was launched with, written by the launcher before the worker starts: the only
description of a run whose worker died before training wrote ``config.json``."""

ENDED_STATES = ("finished", "cancelled", "failed")
"""The ``progress.json`` states of a run that ended and said how."""


@dataclass
class Run:
    """What the app shows about one run folder."""

    path: Path
    status: str
    progress: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    started: float = 0.0

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def error(self) -> str | None:
        """Why the run did not finish, in words (``None`` when nothing went wrong)."""
        if self.status == "interrupted":
            return "the training process died without finishing (killed or crashed)"
        return self.progress.get("error")

    @property
    def best_val_acc(self) -> float | None:
        return run_scores(self.metrics, self.progress)[0]

    @property
    def test_acc(self) -> float | None:
        return run_scores(self.metrics, self.progress)[1]

    @property
    def has_model(self) -> bool:
        return (self.path / "model.safetensors").is_file()

    @property
    def resumable(self) -> bool:
        """Stopped after at least one finished epoch, so it can go on from there."""
        return self.status in ("cancelled", "interrupted", "failed") and (self.path / STATE_FILE).is_file()


def _timestamp(iso: object, fallback: float) -> float:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return fallback


def resolve_status(progress: dict, run: Path | None = None) -> str:
    """The status to show: an active status whose process is gone is ``interrupted``.

    A launched run has no progress file for its first seconds: it is ``starting`` while the
    live lock names it, else its worker died before writing anything.
    """
    status = progress.get("status")
    if status is None:
        held = read_lock() or {}
        mine = run is not None and bool(held.get("run")) and Path(str(held["run"])).resolve() == run.resolve()
        return "starting" if mine and holder_alive(held) else "interrupted"
    if status in ACTIVE_STATES and not pid_alive(progress.get("pid")):
        return "interrupted"
    return str(status)


def load_run(path: Path) -> Run:
    """One run folder as the app shows it (any of its files may be missing or half-written).

    Reading an interrupted run also tidies it: the temp files of writes its dead worker never finished
    are deleted. Workers are checked by PID, so the runs directory must belong to this host's app (the
    launcher starts every worker here); it is not meant to be shared between machines."""
    progress = read_json(path / "progress.json")
    config = read_json(path / "config.json").get("train") or read_json(path / LAUNCH_NAME)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    status = resolve_status(progress, path)
    if status == "interrupted":
        remove_orphaned_temps(path)  # its worker is gone: a kill mid-write leaves only a temp file
    return Run(path=path, status=status, progress=progress,
               config=config, metrics=read_json(path / "metrics.json"),
               started=_timestamp(progress.get("started"), mtime))


def list_runs(root: Path | None = None) -> list[Run]:
    """Every run folder under ``root`` (default: the runs directory), newest first."""
    root = root or runs_dir()
    if not root.is_dir():
        return []
    found = [load_run(p) for p in root.iterdir()
             if p.is_dir() and any((p / n).is_file() for n in ("progress.json", "config.json", LAUNCH_NAME))]
    return sorted(found, key=lambda r: r.started, reverse=True)
