"""Reliability bins and expected calibration error, checked against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from fer_core.evaluation.calibration import reliability


def probs_with_confidence(conf: list[float], pred: list[int], classes: int = 7) -> np.ndarray:
    out = np.zeros((len(conf), classes))
    for i, (c, p) in enumerate(zip(conf, pred, strict=True)):
        out[i] = (1 - c) / (classes - 1)
        out[i, p] = c
    return out


def test_hand_computed_ece() -> None:
    # bin (0.6, 0.8]: confidences 0.7, 0.7, accuracy 1/2 -> gap 0.2; bin (0.8, 1.0]: 0.9, 0.9, acc 1 -> gap 0.1
    probs = probs_with_confidence([0.7, 0.7, 0.9, 0.9], [0, 1, 2, 3])
    labels = np.array([0, 0, 2, 3])
    rel = reliability(probs, labels, n_bins=5)
    assert rel.counts.tolist() == [0, 0, 0, 2, 2]
    assert rel.accuracy[3] == pytest.approx(0.5) and rel.accuracy[4] == pytest.approx(1.0)
    assert rel.confidence[3] == pytest.approx(0.7) and rel.confidence[4] == pytest.approx(0.9)
    assert rel.ece == pytest.approx(0.5 * 0.2 + 0.5 * 0.1)
    assert rel.mce == pytest.approx(0.2)
    assert np.isnan(rel.accuracy[0])


def test_perfectly_calibrated_has_zero_ece() -> None:
    # 10 predictions at confidence 0.8, 8 of them right
    probs = probs_with_confidence([0.8] * 10, [0] * 10)
    labels = np.array([0] * 8 + [1] * 2)
    assert reliability(probs, labels, n_bins=10).ece == pytest.approx(0.0, abs=1e-12)


def test_bins_sum_to_n_and_edges_cover_unit_interval() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 7)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 7, 500)
    rel = reliability(probs, labels, n_bins=15)
    assert rel.counts.sum() == 500
    assert rel.edges[0] == 0 and rel.edges[-1] == 1 and len(rel.centers) == 15
    assert 0 <= rel.ece <= rel.mce <= 1
    # a confidence exactly on an edge falls in the lower bin: (lo, hi]
    edge = reliability(probs_with_confidence([0.6], [0]), np.array([0]), n_bins=5)
    assert edge.counts.tolist() == [0, 0, 1, 0, 0]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        reliability(np.zeros((3, 7)), np.zeros(4), n_bins=10)
    with pytest.raises(ValueError):
        reliability(np.zeros((3, 7)), np.zeros(3), n_bins=0)
    assert reliability(np.zeros((0, 7)), np.zeros(0)).ece == 0.0
