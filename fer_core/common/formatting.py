"""How the app and the reports write an accuracy or a duration, so every page shows them the same way."""

from __future__ import annotations

from fer_core.common.values import is_number


def percent(x: object, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage: one decimal where figures are compared with each other, two
    where they are checked against a model card's. Anything else (a missing figure) is a dash."""
    return f"{x * 100:.{digits}f}%" if is_number(x) else "—"


def duration(seconds: object) -> str:
    """Seconds as ``1h 05m`` or ``4m 07s``: a run's ETA and a study's cost read at a glance. Anything that
    is not a finite, non-negative number (an ETA not yet known) is a dash."""
    if not is_number(seconds) or seconds < 0:
        return "—"
    s = round(seconds)
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"
