"""The deployment's settings: public or local, who may train, and every cap on a visitor's work.

One object, ``AppSettings``, read once per page run by ``load_settings`` from the environment and
from Streamlit's secrets (``.streamlit/secrets.toml``: the same ``FER_*`` names at its top level;
a secret wins over the environment). Every cap is named in the refusals it causes, so a visitor
who hits one reads which setting it is and an operator knows what to raise.

``FER_PUBLIC=1`` turns a deployment public (see ``docs/deployment.md``): training, cancelling and
promoting need the admin password (``FER_ADMIN_PASSWORD``, compared in constant time), pages offer
only server-side choices, the Metrics page shows only precomputed evaluations, and the caps default
tighter. Local use (``make run``) keeps every control and generous caps.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from fer_core.recognition.imageio import MAX_PIXELS
from fer_core.recognition.video import MAX_SECONDS, VideoLimits

DEFAULT_MAX_EPOCHS = 100
"""Enough for the shipped recipe; a deployment lowers it."""

ADMIN_KEY = "fer_admin"
"""The session-state key that holds whether this browser session signed in with the admin password."""

_FALSE = {"0", "false", "no", "off"}
_TRUE = {"1", "true", "yes", "on"}


class SettingsError(ValueError):
    """A setting holds something that is not valid; the message names it."""


@dataclass(frozen=True)
class AppSettings:
    public: bool = False
    """``FER_PUBLIC``: a deployment anyone on the internet can reach."""
    allow_training: bool = True
    """``FER_ALLOW_TRAINING``: 0 switches the training launcher off for everyone, admin included."""
    admin_password: str | None = field(default=None, repr=False, compare=False)
    """``FER_ADMIN_PASSWORD``: in public mode, the password that unlocks training, cancelling and promoting."""
    max_epochs: int = DEFAULT_MAX_EPOCHS
    max_subset: int | None = None
    """Largest images-per-class a training run may use; ``None`` = no cap (full data allowed)."""
    max_files: int = 20
    """Photos analysed per upload on the Photo page (``FER_MAX_FILES``)."""
    max_pixels: int = MAX_PIXELS
    """Pixels per photo (``FER_MAX_PIXELS``), read from the header before anything is decoded."""
    max_video_seconds: float = MAX_SECONDS
    """Seconds of a clip that are analysed (``FER_MAX_VIDEO_SECONDS``); the rest is left out, with a note."""
    max_video_frames: int = 3000
    """Frames analysed per clip (``FER_MAX_VIDEO_FRAMES``), whatever "every Nth frame" asks."""
    max_video_pixels: int = 1920 * 1080
    """Pixels per video frame (``FER_MAX_VIDEO_PIXELS``): a larger clip is refused before decoding."""
    max_video_wall_seconds: float = 300.0
    """Wall time one clip's analysis may take (``FER_MAX_VIDEO_WALL_SECONDS``); then it stops with what it has."""

    def check(self, epochs: int, subset: int | None, admin: bool = False) -> list[str]:
        """The problems with starting a run of this budget for this visitor, empty when it may start."""
        problems = []
        if not self.allow_training:
            problems.append("training is disabled on this deployment (FER_ALLOW_TRAINING=0)")
        elif not self.may_control_runs(admin):
            problems.append("on this public deployment (FER_PUBLIC=1) only the admin may train: sign in with "
                            "the admin password on the Training page")
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

    def video_limits(self) -> VideoLimits:
        return VideoLimits(max_seconds=self.max_video_seconds, max_frames=self.max_video_frames,
                           max_pixels=self.max_video_pixels, max_wall_seconds=self.max_video_wall_seconds)

    @staticmethod
    def setting(name: str) -> str:
        """The environment variable or secret behind a field (``max_pixels`` -> ``FER_MAX_PIXELS``): what a
        refusal names."""
        return _ENV_NAMES[name]

    @staticmethod
    def video_setting(limit: str) -> str:
        """The setting behind a ``VideoLimits`` field (``max_frames`` -> ``FER_MAX_VIDEO_FRAMES``)."""
        return _ENV_NAMES[f"max_video_{limit.removeprefix('max_')}"]

    def password_matches(self, given: str | None) -> bool:
        """Constant-time comparison, so the time an answer takes tells nothing about the password."""
        if not self.admin_password or not given:
            return False
        return hmac.compare_digest(given.encode("utf-8"), self.admin_password.encode("utf-8"))

    def may_control_runs(self, admin: bool) -> bool:
        """Whether this visitor may start, resume, cancel or promote runs."""
        return self.allow_training and (not self.public or admin)

    def may_choose_paths(self) -> bool:
        """Free-text server paths (a dataset, a study folder) are a local convenience only."""
        return not self.public


PUBLIC_DEFAULTS = {"max_epochs": 30, "max_subset": 1000, "max_files": 10, "max_pixels": 25_000_000,
                   "max_video_seconds": 120.0, "max_video_frames": 600, "max_video_wall_seconds": 90.0}
"""A public deployment's caps when its operator sets none: one visitor's photo batch, clip or run
stays a few seconds to a minute of the machine's time."""

_ENV_NAMES = {f.name: "FER_" + f.name.upper() for f in fields(AppSettings)}


def _secrets() -> Mapping[str, object]:
    """Streamlit's top-level secrets when the app runs with a secrets.toml; empty otherwise. A secrets
    file that exists but cannot be read is an error, not an empty file: ``FER_PUBLIC`` set there must
    never be dropped silently."""
    try:
        import streamlit as st
        from streamlit import config
    except ImportError:
        return {}
    if st.secrets.load_if_toml_exists():
        return {k: v for k, v in st.secrets.to_dict().items() if not isinstance(v, dict)}
    unreadable = [p for p in config.get_option("secrets.files") or [] if Path(p).is_file()]
    if unreadable:
        raise SettingsError(f"{unreadable[0]} exists but cannot be read (is it valid TOML?); fix it, or the "
                            "deployment's settings in it would be ignored")
    return {}


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be 1 or 0 (true/false), got '{raw}'")


def _number(name: str, raw: str, kind: type) -> int | float:
    try:
        value = kind(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a {'whole ' if kind is int else ''}number, got '{raw}'") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{name} must be > 0, got {raw.strip()}")
    return value


def load_settings(env: Mapping[str, str] | None = None, secrets: Mapping[str, object] | None = None) -> AppSettings:
    """The settings from ``secrets`` over ``env`` (default: Streamlit's secrets over ``os.environ``);
    raises ``SettingsError`` naming the bad setting."""
    values = {**(os.environ if env is None else env), **{k: str(v) for k, v in
                                                         (_secrets() if secrets is None else secrets).items()}}
    public_raw = values.get(_ENV_NAMES["public"], "").strip()
    public = _flag(_ENV_NAMES["public"], public_raw) if public_raw else False
    settings = replace(AppSettings(), **PUBLIC_DEFAULTS) if public else AppSettings()
    changes: dict[str, object] = {"public": public}
    for f in fields(AppSettings):
        name, raw = _ENV_NAMES[f.name], values.get(_ENV_NAMES[f.name], "")
        if f.name == "public" or not raw.strip():
            continue
        if f.name == "allow_training":
            changes[f.name] = _flag(name, raw)
        elif f.name == "admin_password":
            changes[f.name] = raw
        else:
            kind = float if isinstance(getattr(settings, f.name), float) else int
            changes[f.name] = _number(name, raw, kind)
    return replace(settings, **changes)


def training_visible(admin: bool = False) -> bool:
    """For navigation: the Training page is listed where this visitor may use it. A malformed cap
    must not hide it (the page itself says what is wrong)."""
    try:
        return load_settings().may_control_runs(admin)
    except SettingsError:
        return True
