"""What the Dataset page says about FER+'s votes, checked on votes small enough to count by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fer_core.common.labels import FERPLUS_EMOTIONS
from fer_core.data.vote_stats import (
    agreement_by_label,
    class_ambiguity,
    label_crosstab,
    largest_disagreement,
    mean_shares_by_class,
    most_disputed,
    pair_indices,
    top_share,
    vote_caption,
    vote_entropy,
    vote_shares,
)
from fer_core.data.votes import VOTE_COLUMNS
from tests.ferplus_support import votes

HAPPY, SAD, NEUTRAL = (FERPLUS_EMOTIONS.index(c) for c in ("happy", "sad", "neutral"))
VOTES = torch.from_numpy(np.stack([
    votes({"happy": 10}),                                # unanimous
    votes({"happy": 6, "neutral": 4}),
    votes({"sad": 5, "neutral": 3, "unknown": 2}),
    votes({"neutral": 4, "sad": 3, "happy": 2, "not_a_face": 1}),
]))
LABELS = torch.tensor([HAPPY, HAPPY, SAD, NEUTRAL])


def test_shares_top_share_and_entropy_read_the_votes_as_cast() -> None:
    shares = vote_shares(VOTES)
    assert shares.sum(axis=1) == pytest.approx(np.ones(4))
    assert shares[2, VOTE_COLUMNS.index("unknown")] == pytest.approx(0.2)
    assert top_share(VOTES) == pytest.approx([1.0, 0.6, 0.5, 0.4])
    expected = [0.0, -(0.6 * np.log2(0.6) + 0.4 * np.log2(0.4)),
                -(0.5 * np.log2(0.5) + 0.3 * np.log2(0.3) + 0.2 * np.log2(0.2)),
                -sum(p * np.log2(p) for p in (0.4, 0.3, 0.2, 0.1))]
    assert vote_entropy(VOTES) == pytest.approx(expected)


def test_a_face_of_all_unknown_votes_has_no_top_emotion() -> None:
    v = votes({"unknown": 7, "not_a_face": 3})[None]
    assert top_share(v) == pytest.approx([0.0])
    assert np.isfinite(vote_entropy(v)).all()


def test_mean_shares_by_class_says_where_each_class_votes_went() -> None:
    table = mean_shares_by_class(VOTES, LABELS, len(FERPLUS_EMOTIONS))
    assert table.shape == (8, 10)
    assert table[HAPPY, HAPPY] == pytest.approx(0.8) and table[HAPPY, NEUTRAL] == pytest.approx(0.2)
    assert table[SAD, VOTE_COLUMNS.index("unknown")] == pytest.approx(0.2)
    assert np.isnan(table[FERPLUS_EMOTIONS.index("contempt")]).all()  # no face of that class
    assert np.nansum(table, axis=1)[[HAPPY, SAD, NEUTRAL]] == pytest.approx([1, 1, 1])


def test_class_ambiguity_per_majority_class() -> None:
    amb = class_ambiguity(VOTES, LABELS, len(FERPLUS_EMOTIONS))
    assert amb.faces.tolist() == [0, 0, 0, 2, 1, 0, 1, 0]
    assert amb.top_share[HAPPY] == pytest.approx(0.8)
    assert amb.clear[HAPPY] == pytest.approx(0.5)  # 10/10 is clear-cut, 6/10 is not
    assert amb.entropy[HAPPY] == pytest.approx(vote_entropy(VOTES)[:2].mean())
    assert np.isnan(amb.top_share[0]) and np.isnan(amb.entropy[0])


def test_most_disputed_puts_the_lowest_top_share_first() -> None:
    assert most_disputed(VOTES, 3).tolist() == [3, 2, 1]
    assert most_disputed(VOTES, 10, LABELS, HAPPY).tolist() == [1, 0]
    assert most_disputed(VOTES, 5, LABELS, FERPLUS_EMOTIONS.index("contempt")).tolist() == []
    with pytest.raises(ValueError):
        most_disputed(VOTES, 3, label=HAPPY)


def test_most_disputed_breaks_ties_by_entropy() -> None:
    tied = torch.from_numpy(np.stack([votes({"sad": 5, "happy": 5}), votes({"sad": 5, "happy": 3, "fear": 2})]))
    assert most_disputed(tied, 2).tolist() == [1, 0]


def test_vote_caption_lists_votes_most_first() -> None:
    assert vote_caption(votes({"neutral": 4, "sad": 3, "happy": 2, "not_a_face": 1})) == \
        "4 neutral · 3 sad · 2 happy · 1 not a face"
    assert vote_caption(votes({"fear": 5, "angry": 5})) == "5 angry · 5 fear"  # ties in column order


def test_crosstab_agreement_and_the_largest_disagreement() -> None:
    fer2013 = np.array([HAPPY, SAD, SAD, 0, -1, SAD])
    ferplus = np.array([HAPPY, NEUTRAL, NEUTRAL, 0, HAPPY, SAD])
    table = label_crosstab(fer2013, ferplus, 7, 8)
    assert table.shape == (7, 8) and table.sum() == 5  # the -1 face is left out
    assert table[SAD, NEUTRAL] == 2 and table[HAPPY, HAPPY] == 1
    agree = agreement_by_label(table)
    assert agree[SAD] == pytest.approx(1 / 3) and agree[HAPPY] == 1.0 and np.isnan(agree[1])
    assert largest_disagreement(table) == (SAD, NEUTRAL)
    assert pair_indices(fer2013, ferplus, SAD, NEUTRAL).tolist() == [1, 2]
    assert largest_disagreement(label_crosstab(fer2013[:1], ferplus[:1], 7, 8)) is None
    assert label_crosstab(np.array([7, 3]), np.array([7, 3]), 7, 8).sum() == 1  # no FER-2013 label 7: left out
