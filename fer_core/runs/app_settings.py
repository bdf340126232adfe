"""Deployment settings for the app's Experiment pages, read from the environment.

A public deployment must be able to switch the training launcher off (``FER_ALLOW_TRAINING=0``)
and to cap what a visitor may ask of the machine (``FER_MAX_EPOCHS``, ``FER_MAX_SUBSET``).
The caps are enforced by the launcher (``fer_core.runs.launcher``) too, not only by the form, so no
request bypasses them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_MAX_EPOCHS = 100
"""Enough for the shipped recipe; a deployment lowers it."""

_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """An environment variable holds something that is not a valid setting."""


@dataclass(frozen=True)
class AppSettings:
    allow_training: bool = True
    max_epochs: int = DEFAULT_MAX_EPOCHS
    max_subset: int | None = None
    """Largest images-per-class a visitor may ask for; ``None`` = no cap (full data allowed)."""
    max_files: int = 20
    """Photos analysed per upload on the Photo page (``FER_MAX_FILES``): one visitor's batch stays bounded."""

    def check(self, epochs: int, subset: int | None) -> list[str]:
        """The problems with a requested budget, empty when it is within the caps."""
        problems = []
        if not self.allow_training:
            problems.append("training is disabled on this deployment (FER_ALLOW_TRAINING=0)")
        if isinstance(epochs, int) and epochs > self.max_epochs:
            problems.append(f"at most {self.max_epochs} epochs are allowed here (FER_MAX_EPOCHS), got {epochs}")
        if self.max_subset is not None:
            if subset is None:
                problems.append(f"this deployment requires a subset of at most {self.max_subset} images per class "
                                "(FER_MAX_SUBSET); the full data set is not allowed")
            elif subset > self.max_subset:
                problems.append(f"at most {self.max_subset} images per class are allowed here (FER_MAX_SUBSET), "
                                f"got {subset}")
        return problems


def _positive_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got '{raw}'") from None
    if value < 1:
        raise SettingsError(f"{name} must be >= 1, got {value}")
    return value


def load_settings() -> AppSettings:
    """Settings from the environment; raises ``SettingsError`` naming the bad variable."""
    allow = os.environ.get("FER_ALLOW_TRAINING", "1").strip().lower() not in _FALSE
    return AppSettings(allow_training=allow,
                       max_epochs=_positive_int("FER_MAX_EPOCHS", DEFAULT_MAX_EPOCHS) or DEFAULT_MAX_EPOCHS,
                       max_subset=_positive_int("FER_MAX_SUBSET", None),
                       max_files=_positive_int("FER_MAX_FILES", AppSettings.max_files) or AppSettings.max_files)


def training_allowed() -> bool:
    """For navigation: a malformed cap must not hide the page, only a switched-off launcher does."""
    return os.environ.get("FER_ALLOW_TRAINING", "1").strip().lower() not in _FALSE


