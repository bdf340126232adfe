"""What a value read from JSON (a card, a study, a run's config) must be before it is used as a number.

JSON's ``true`` arrives as Python's ``True``, which is an ``int``; ``NaN`` and ``Infinity`` parse too.
Every reader asks here, so a hand-edited or half-written file is refused the same way everywhere.
"""

from __future__ import annotations

import math
from typing import TypeGuard


def is_number(x: object) -> TypeGuard[int | float]:
    """A finite int or float, and not a bool."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def is_count(x: object) -> TypeGuard[int]:
    """An int, and not a bool (epochs, seeds, the cells of a confusion matrix)."""
    return isinstance(x, int) and not isinstance(x, bool)
