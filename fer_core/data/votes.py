"""FER+'s crowd votes and its protocol (Barsoum et al. 2016, Microsoft's reference ``src/ferplus.py``).

Every face of FER+ carries ten votes over eight emotions plus "unknown" and "not a face" (NF). The
votes are kept per face as counts, in ``VOTE_COLUMNS`` order (our class order, then unknown, NF),
and everything else is derived here: the majority label a face is scored on, the four training
targets, and how far a model agrees with the annotators.
"""

from __future__ import annotations

import torch

from fer_core.common.labels import FERPLUS_EMOTIONS

VOTE_COLUMNS: tuple[str, ...] = (*FERPLUS_EMOTIONS, "unknown", "not_a_face")
MICROSOFT_COLUMNS: tuple[str, ...] = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt",
                                      "unknown", "not_a_face")
"""The order of the ten counts in ``label.csv`` and ``fer2013new.csv``."""
FROM_MICROSOFT: tuple[int, ...] = tuple(MICROSOFT_COLUMNS.index(c) for c in VOTE_COLUMNS)
"""Indexing a row in Microsoft's order with this gives it in ``VOTE_COLUMNS`` order."""

TARGET_MODES: tuple[str, ...] = ("majority", "probability", "crossentropy", "multitarget")
"""Barsoum's four training schemes: the majority label; a label drawn from the vote distribution at every
step (PLD, the paper's best); the distribution itself as a soft target; every emotion with >= 30% of the
votes, any of which counts as right."""
MULTI_TARGET_SHARE = 0.3
N_EMOTIONS = len(FERPLUS_EMOTIONS)


def without_outliers(votes: torch.Tensor) -> torch.Tensor:
    """Votes of 1 dropped (FER+'s outlier rule: one annotator alone is noise), as float counts."""
    v = votes.float()
    return torch.where(v <= 1, torch.zeros_like(v), v)


def majority_labels(votes: torch.Tensor) -> torch.Tensor:
    """(N, 10) counts -> (N,) class index in ``FERPLUS_EMOTIONS``, or -1 where FER+'s protocol drops the
    face: no class holds more than half of the votes left, or the winner is unknown or NF."""
    v = without_outliers(votes)
    top, idx = v.max(dim=1)
    keep = (top > 0.5 * v.sum(dim=1)) & (idx < N_EMOTIONS)
    return torch.where(keep, idx, torch.full_like(idx, -1))


def vote_distribution(votes: torch.Tensor) -> torch.Tensor:
    """(N, 10) counts -> (N, 8) share of the emotion votes each class got (outliers dropped). The
    cross-entropy target, and what agreement and cross-entropy are measured against."""
    v = without_outliers(votes)[:, :N_EMOTIONS]
    total = v.sum(dim=1, keepdim=True)
    fallback = torch.nn.functional.one_hot(votes[:, :N_EMOTIONS].float().argmax(1), N_EMOTIONS).float()
    return torch.where(total > 0, v / total.clamp_min(1e-9), fallback)


def multi_target_mask(votes: torch.Tensor) -> torch.Tensor:
    """(N, 10) counts -> (N, 8) bool: the emotions with at least 30% of the votes left."""
    v = without_outliers(votes)
    share = v / v.sum(dim=1, keepdim=True).clamp_min(1e-9)
    mask = share[:, :N_EMOTIONS] >= MULTI_TARGET_SHARE
    best = torch.nn.functional.one_hot(v[:, :N_EMOTIONS].argmax(1), N_EMOTIONS).bool()
    return torch.where(mask.any(dim=1, keepdim=True), mask, best)


def annotator_agreement(probs: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
    """(N,) share of a face's annotators (all ten, as cast) who chose the class the model answers:
    1.0 when everyone would agree with what we show, 0 when nobody would."""
    v = votes.float()
    chosen = v.gather(1, probs.argmax(1, keepdim=True)).squeeze(1)
    return chosen / v.sum(dim=1).clamp_min(1e-9)


def vote_cross_entropy(probs: torch.Tensor, votes: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """(N,) cross-entropy of the model's probabilities against the vote distribution, in nats."""
    target = vote_distribution(votes)
    return -(target * probs[:, :N_EMOTIONS].clamp_min(eps).log()).sum(dim=1)
