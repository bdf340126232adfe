"""A run folder as training writes it, read back: the per-epoch history and the run states.

Training writes ``history.csv`` and ``progress.json`` (``fer_core.training.loop.RunWriter``); the
app, resuming, shipping and the Metrics page read them back through here, so every reader
sees the same numbers.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

ACTIVE_STATES = ("starting", "preparing", "running")
"""The ``progress.json`` states of a run that is (or should be) working."""


def read_history(path: Path) -> list[dict]:
    """The per-epoch rows of ``history.csv`` as numbers (empty before the first epoch ends)."""
    try:
        with open(path / "history.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return []
    out = []
    for row in rows:
        try:
            out.append({k: float(v) for k, v in row.items()})
        except (TypeError, ValueError):
            continue
    return out


def run_scores(metrics: dict, progress: dict) -> tuple[float | None, float | None]:
    """A run's best validation and test accuracy: ``metrics.json`` once the run has finished, else what
    ``progress.json`` last said. Whatever is there is returned as written; readers check its type."""
    return (metrics.get("best_val_acc", progress.get("best_val_acc")),
            metrics.get("accuracy", progress.get("test_acc")))


def now_stamp() -> str:
    """The time stamps runs and the launcher lock record: UTC, to the second, ISO 8601, so that a run
    started on one machine and read on another (or in another time zone) reads the same."""
    return datetime.now(UTC).isoformat(timespec="seconds")
