"""How the app and the reports write an accuracy, so every page and sentence shows it the same way."""

from __future__ import annotations


def percent(x: object) -> str:
    """A fraction in [0, 1] as a percentage with one decimal; anything else (a missing figure) as a dash."""
    return f"{x * 100:.1f}%" if isinstance(x, int | float) and not isinstance(x, bool) else "—"
