"""What FER+'s votes say about its faces, summarised for people: the Dataset page's numbers.

A FER+ face is scored on its majority label, which hides how split its ten votes were. These
summaries show what the majority smooths over: which columns each class's votes went to, how
ambiguous each class is, which faces people disagreed on most, and where FER-2013's single
annotator and FER+'s crowd part ways. They read the votes as cast, outliers included (FER+'s
protocol drops single votes, ``fer_core.data.votes``), because the disagreement is the point here.

Everything takes plain arrays (votes ``(N, 10)`` in ``VOTE_COLUMNS`` order, labels ``(N,)``) so that
a split from either FER+ layout, or a slice of one, can be summarised, and returns NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fer_core.data.votes import N_EMOTIONS, VOTE_COLUMNS

CLEAR_SHARE = 0.8
"""A face whose top emotion got at least this share of its votes counts as clear-cut."""
CAPTION_NAMES: dict[str, str] = {"not_a_face": "not a face"}
"""How a vote column reads in a caption, where its name is not already plain English."""

ArrayLike = torch.Tensor | np.ndarray


def _np(x: ArrayLike) -> np.ndarray:
    """Tensors and arrays alike, so callers pass a Split's fields without converting them."""
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def vote_shares(votes: ArrayLike) -> np.ndarray:
    """(N, 10) counts -> (N, 10) share of each face's votes per column, as cast (rows sum to 1)."""
    v = _np(votes).astype(np.float64)
    return v / np.maximum(v.sum(axis=1, keepdims=True), 1.0)


def top_share(votes: ArrayLike) -> np.ndarray:
    """(N,) share of a face's votes its most-voted emotion got: 1.0 when everyone agreed, 0.3 when
    the crowd scattered. For a face FER+ keeps, the top emotion is its majority label."""
    return vote_shares(votes)[:, :N_EMOTIONS].max(axis=1)


def vote_entropy(votes: ArrayLike) -> np.ndarray:
    """(N,) entropy of a face's ten vote shares in bits: 0 when unanimous, log2(10) ~ 3.3 at most.
    Unlike the top share it also sees how the runner-up votes scatter."""
    p = vote_shares(votes)
    logs = np.log2(np.where(p > 0, p, 1.0))  # log2(1) = 0: an empty column adds nothing
    return -(p * logs).sum(axis=1)


def mean_shares_by_class(votes: ArrayLike, labels: ArrayLike, n_classes: int) -> np.ndarray:
    """(n_classes, 10) mean vote share per column over each majority class's faces: row c says
    where the votes of faces labelled c went (NaN for a class with no faces)."""
    shares, lab = vote_shares(votes), _np(labels)
    out = np.full((n_classes, len(VOTE_COLUMNS)), np.nan)
    for c in range(n_classes):
        if (lab == c).any():
            out[c] = shares[lab == c].mean(axis=0)
    return out


@dataclass(frozen=True)
class ClassAmbiguity:
    """Per majority class: how many faces, and how much their annotators agreed (NaN where none)."""

    faces: np.ndarray  # (C,) int
    top_share: np.ndarray  # (C,) mean share of the votes the top emotion got
    entropy: np.ndarray  # (C,) mean vote entropy, bits
    clear: np.ndarray  # (C,) share of faces whose top emotion got at least CLEAR_SHARE of the votes


def class_ambiguity(votes: ArrayLike, labels: ArrayLike, n_classes: int) -> ClassAmbiguity:
    """How ambiguous each majority class is, among the faces FER+ kept (the dropped ones are gone
    by the time a split is loaded, so their share cannot be told from it)."""
    top, ent, lab = top_share(votes), vote_entropy(votes), _np(labels)
    faces = np.bincount(lab, minlength=n_classes)[:n_classes]

    def mean_of(x: np.ndarray) -> np.ndarray:
        return np.array([x[lab == c].mean() if faces[c] else np.nan for c in range(n_classes)])

    return ClassAmbiguity(faces=faces, top_share=mean_of(top), entropy=mean_of(ent),
                          clear=mean_of((top >= CLEAR_SHARE).astype(np.float64)))


def most_disputed(votes: ArrayLike, k: int, labels: ArrayLike | None = None, label: int | None = None) -> np.ndarray:
    """Indices of the ``k`` faces with the lowest top-emotion share (ties: the higher vote entropy
    first, then the lower index), only among faces of majority class ``label`` when it is given."""
    top, ent = top_share(votes), vote_entropy(votes)
    idx = np.arange(len(top))
    if label is not None:
        if labels is None:
            raise ValueError("filtering by label needs the labels")
        idx = idx[_np(labels) == label]
    order = np.lexsort((idx, -ent[idx], top[idx]))  # the last key sorts first
    return idx[order][:k]


def vote_caption(counts: Sequence[int] | np.ndarray) -> str:
    """'5 happy · 3 neutral · 2 unknown': a face's votes, most first, short enough for a caption."""
    c = [int(n) for n in counts]
    order = sorted((i for i in range(len(c)) if c[i] > 0), key=lambda i: (-c[i], i))
    return " · ".join(f"{c[i]} {CAPTION_NAMES.get(VOTE_COLUMNS[i], VOTE_COLUMNS[i])}" for i in order)


def label_crosstab(fer2013_labels: ArrayLike, labels: ArrayLike, n_rows: int, n_cols: int) -> np.ndarray:
    """(n_rows, n_cols) face counts: row r, column c counts faces FER-2013 labelled r and FER+'s
    majority labels c. Faces whose FER-2013 label is unknown (-1), or outside the rows (a copy with a
    contempt folder is not FER-2013), are left out."""
    old, new = _np(fer2013_labels).astype(np.int64), _np(labels).astype(np.int64)
    known = (old >= 0) & (old < n_rows) & (new >= 0) & (new < n_cols)
    table = np.zeros((n_rows, n_cols), np.int64)
    np.add.at(table, (old[known], new[known]), 1)
    return table


def agreement_by_label(table: np.ndarray) -> np.ndarray:
    """(n_rows,) share of each FER-2013 label's faces FER+'s majority gives the same label (rows and
    columns share their first indices: FER+'s classes extend FER-2013's). NaN for an empty row."""
    n = min(table.shape)
    totals = table.sum(axis=1).astype(np.float64)
    agree = np.zeros(table.shape[0])
    agree[:n] = np.diag(table)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, agree / totals, np.nan)


def largest_disagreement(table: np.ndarray) -> tuple[int, int] | None:
    """The (FER-2013 label, FER+ majority) pair with the most faces off the diagonal, or None when
    the two agree everywhere: the cell worth looking at first."""
    off = table.copy()
    n = min(off.shape)
    off[np.arange(n), np.arange(n)] = 0
    if off.max(initial=0) == 0:
        return None
    r, c = np.unravel_index(int(off.argmax()), off.shape)
    return int(r), int(c)


def pair_indices(fer2013_labels: ArrayLike, labels: ArrayLike, fer2013_label: int, label: int) -> np.ndarray:
    """Indices of the faces FER-2013 labelled ``fer2013_label`` and FER+'s majority labels ``label``."""
    return np.flatnonzero((_np(fer2013_labels) == fer2013_label) & (_np(labels) == label))
