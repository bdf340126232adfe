"""The label spaces every layer shares, and how scores cross from one to another."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""FER-2013's own class order (label index -> name)."""

FERPLUS_EMOTIONS: tuple[str, ...] = (*EMOTIONS, "contempt")
"""FER+'s eight emotions: FER-2013's seven in FER-2013's order, then contempt. Sharing the first
seven indices keeps every 7-class tensor a prefix of an 8-class one."""

IMAGE_SIZE = 48
"""FER-2013's faces are 48x48 grey; every network reads that."""


def to_label_space(probs: np.ndarray, model_classes: Sequence[str], data_classes: Sequence[str]) -> np.ndarray:
    """A model's probabilities ``(N, len(model_classes))`` re-indexed to the data's classes, by name.

    The cross-label rules, in one place: a class the model does not know gets probability 0, so a
    7-class model scored on FER+ data never answers contempt and misses every contempt face; a class
    the data does not hold is dropped, so an 8-class model scored on FER-2013 data takes its argmax
    over the 7 shared classes. The rows are not renormalised: what is left is what the model said."""
    if list(model_classes) == list(data_classes):
        return probs
    index = {c: i for i, c in enumerate(model_classes)}
    out = np.zeros((len(probs), len(data_classes)), dtype=probs.dtype)
    for j, c in enumerate(data_classes):
        if c in index:
            out[:, j] = probs[:, index[c]]
    return out
