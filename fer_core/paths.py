"""Where things live on disk: data, caches, runs and the shipped weights.

Every default is overridable by an environment variable so that a deployment (or a test)
can point the whole system somewhere else without touching code.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = PROJECT_ROOT / "weights"


DEV_DATA = PROJECT_ROOT.parent / "shared" / "fer2013"
"""Where a development checkout finds FER-2013 (beside the checkout, never inside it)."""


def default_data_path() -> Path:
    """``FER_DATA`` if set, else ``data/fer2013`` inside the project (git-ignored); a development
    checkout without ``data/fer2013`` falls back to the copy beside it, so nothing needs configuring."""
    if os.environ.get("FER_DATA"):
        return Path(os.environ["FER_DATA"])
    project = PROJECT_ROOT / "data" / "fer2013"
    return DEV_DATA if not project.exists() and DEV_DATA.exists() else project


def cache_dir() -> Path:
    """Decoded-dataset and evaluation caches; safe to delete at any time."""
    return Path(os.environ.get("FER_CACHE_DIR") or PROJECT_ROOT / ".cache")


def runs_dir() -> Path:
    """Training runs launched from the CLI or the app."""
    return Path(os.environ.get("FER_RUNS_DIR") or PROJECT_ROOT / "runs")
