"""Where things live on disk: data, caches, runs and the shipped weights.

Every default is overridable by an environment variable so that a deployment (or a test)
can point the whole system somewhere else without touching code.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS_DIR = PROJECT_ROOT / "weights"


DATA_HELP = ("Point the app at FER-2013: set the environment variable `FER_DATA` to a folder holding "
             "`train/` and `test/` (one sub-folder per emotion) or to the original `fer2013.csv`, e.g. "
             "`FER_DATA=/path/to/fer2013 make run`, or type its path above.")  # where no data is found


def default_data_path() -> Path:
    """``FER_DATA`` if set, else ``data/fer2013`` inside the project (git-ignored). Every CLI also
    takes ``--data``; nothing guesses at other places, so a figure always names its data."""
    return Path(os.environ.get("FER_DATA") or PROJECT_ROOT / "data" / "fer2013")


def fer2013_copy_path() -> str:
    """``FER2013_DATA`` if set, else "": a FER-2013 copy whose labels the Dataset page compares with
    FER+'s majority, for FER+ data that does not carry them (Microsoft's folders). Never guessed."""
    return os.environ.get("FER2013_DATA", "").strip()


def cache_dir() -> Path:
    """Decoded-dataset and evaluation caches; safe to delete at any time."""
    return Path(os.environ.get("FER_CACHE_DIR") or PROJECT_ROOT / ".cache")


def runs_dir() -> Path:
    """Training runs launched from the CLI or the app."""
    return Path(os.environ.get("FER_RUNS_DIR") or PROJECT_ROOT / "runs")


def _roots() -> tuple[tuple[Path, str], ...]:
    return (runs_dir(), "runs/"), (PROJECT_ROOT, "")


def shown_path(path: str | Path, hide_outside: bool = False) -> str:
    """A path as the project names it (``weights/model.safetensors``, ``runs/<name>``), never the
    server's absolute path: visitors of a deployment neither need nor should see its layout. A path
    outside the project stays whole for a local user, and is cut to ``…/<name>`` with ``hide_outside``
    (a public deployment's data may live anywhere on its server)."""
    path = Path(path)
    for root, prefix in _roots():
        if path.is_absolute() and path.is_relative_to(root):
            return prefix + str(path.relative_to(root))
    return f"…/{path.name}" if hide_outside and path.is_absolute() else str(path)


def shown_paths(value: object, hide_outside: bool = False) -> object:
    """``shown_path`` on every absolute path inside a JSON value (a run's config names its data and
    run folder), so that a config shown to visitors carries no server layout either."""
    if isinstance(value, dict):
        return {k: shown_paths(v, hide_outside) for k, v in value.items()}
    if isinstance(value, list):
        return [shown_paths(v, hide_outside) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return shown_path(value, hide_outside)
    return value


def shown_message(text: str) -> str:
    """An error message as visitors may read it: the project's and the runs directory's absolute
    paths inside it written as ``shown_path`` writes them (errors name files, deployments hide layout)."""
    for root, prefix in _roots():
        text = text.replace(f"{root}/", prefix)
    return text
