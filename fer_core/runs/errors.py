"""The errors of run management, in one place so that the page can catch them without knowing
which module (launcher, lock, control) refused: every refusal is a ``RunError`` whose message
says why, in words meant for the person who clicked."""

from __future__ import annotations


class RunError(RuntimeError):
    """A run-management request that cannot be done; the message says why."""


class RunBusy(RunError):
    """Another launched run is still alive (one run at a time)."""
