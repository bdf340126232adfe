"""Which model the app and the CLIs use.

The shipped models live in ``weights/``; a finished run can be promoted to be the active
model. The choice is one small JSON file replaced atomically, so a crash mid-switch
leaves either the old or the new choice, and deleting it restores the shipped default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fer_core.common.atomic import write_json
from fer_core.common.paths import WEIGHTS_DIR, runs_dir
from fer_core.models.checkpoint import CheckpointError, resolve_weights

DEFAULT_WEIGHTS = WEIGHTS_DIR / "model.safetensors"
"""The shipped default: the fast model, quick enough for live video on a laptop CPU."""

ACCURATE_WEIGHTS = WEIGHTS_DIR / "accurate.safetensors"
"""The shipped accurate model: slower (an ensemble), so the default only where nothing is live."""


def shipped_models() -> dict[str, Path]:
    """Every model in ``weights/`` by name (file stem), the default first."""
    found = sorted(WEIGHTS_DIR.glob("*.safetensors"), key=lambda p: (p != DEFAULT_WEIGHTS, p.name))
    return {p.stem: p for p in found}


def _pointer() -> Path:
    return runs_dir() / "active.json"


def _user_choice() -> Path | None:
    """``FER_WEIGHTS`` if set, else the promoted run, else None (the shipped models apply)."""
    if os.environ.get("FER_WEIGHTS"):
        return Path(os.environ["FER_WEIGHTS"])
    try:
        return resolve_weights(Path(json.loads(_pointer().read_text())["weights"]))
    except (OSError, ValueError, KeyError, TypeError, CheckpointError):
        return None  # a missing, corrupt or dangling pointer falls back to the shipped models


def active_weights() -> Path:
    """What live video uses: the user's choice, else the shipped fast default."""
    return _user_choice() or DEFAULT_WEIGHTS


def accurate_weights() -> Path:
    """What photos, reports and the CLIs use by default.

    A promoted run or ``FER_WEIGHTS`` is the user's explicit choice and wins everywhere;
    otherwise photos and reports can afford the slower shipped accurate model.
    """
    return _user_choice() or (ACCURATE_WEIGHTS if ACCURATE_WEIGHTS.is_file() else DEFAULT_WEIGHTS)


def set_active(weights: str | os.PathLike) -> Path:
    """Promote a checkpoint (file or run folder); refuses anything that does not load."""
    from fer_core.models.checkpoint import load_checkpoint

    path = resolve_weights(weights).resolve()
    load_checkpoint(path)  # raises CheckpointError before anything changes
    write_json(_pointer(), {"weights": str(path)})
    return path


def reset_active() -> None:
    _pointer().unlink(missing_ok=True)


def model_choices(runs: bool = False) -> dict[str, Path]:
    """A page's model picker, label -> weights: the default for photos and reports first, then every
    shipped model, then (``runs=True``, the Metrics page) each finished run, newest first. A model
    appears once, under its first label."""
    first = accurate_weights()
    choices = {f"default ({first.stem if first.parent == WEIGHTS_DIR else first.parent.name})": first}
    seen = {first.resolve()}
    candidates = list(shipped_models().items()) + ([(f"run: {p.parent.name}", p) for p in finished_runs()]
                                                    if runs else [])
    for label, path in candidates:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            choices[label] = path
    return choices


def finished_runs() -> list[Path]:
    """The best model of every run that finished (its test metrics are written last), newest first."""
    root = runs_dir()
    if not root.is_dir():
        return []
    done = [d for d in root.iterdir()
            if d.is_dir() and (d / "model.safetensors").is_file() and (d / "metrics.json").is_file()]
    return [d / "model.safetensors" for d in sorted(done, key=lambda d: (d / "metrics.json").stat().st_mtime,
                                                    reverse=True)]
