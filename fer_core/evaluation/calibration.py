"""Calibration: does a model that says "80 % sure" turn out right 80 % of the time?

Accuracy alone hides over-confidence, which matters for an app that prints a probability
next to every face. We bin predictions by their top probability (equal-width bins on
[0, 1]) and compare each bin's mean confidence with its accuracy: that is the reliability
diagram; the count-weighted mean gap is the expected calibration error (Guo et al., 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Reliability:
    """Per-bin statistics of a reliability diagram; empty bins have count 0 and NaN means."""

    edges: np.ndarray  # (n_bins + 1,)
    confidence: np.ndarray  # (n_bins,) mean top probability in the bin
    accuracy: np.ndarray  # (n_bins,) fraction of correct predictions in the bin
    counts: np.ndarray  # (n_bins,)
    ece: float  # expected calibration error, in [0, 1]
    mce: float  # maximum calibration error over non-empty bins

    @property
    def centers(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> Reliability:
    """Reliability bins and ECE of softmax ``probs`` (N, C) against integer ``labels`` (N,)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be (N, C) and labels (N,), got {probs.shape} and {labels.shape}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    conf = probs.max(1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(1) == labels).astype(np.float64) if len(probs) else np.zeros(0)
    # bins are (lo, hi]; a confidence of exactly 0 (impossible for a softmax) would fall in the first
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / counts
        mean_acc = np.bincount(idx, weights=correct, minlength=n_bins) / counts
    gaps = np.abs(mean_acc - mean_conf)
    filled = counts > 0
    n = counts.sum()
    ece = float((counts[filled] * gaps[filled]).sum() / n) if n else 0.0
    mce = float(gaps[filled].max()) if filled.any() else 0.0
    return Reliability(edges=edges, confidence=mean_conf, accuracy=mean_acc, counts=counts, ece=ece, mce=mce)
