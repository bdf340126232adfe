"""On the real FER-2013 copy beside the checkout (skipped when absent): exact counts, cleaning."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_core.data.cleaning import clean_train
from fer_core.data.dataset import Split, load_split

pytestmark = pytest.mark.data

README_COUNTS = {
    "train": [3995, 436, 4097, 7215, 4830, 3171, 4965],
    "test": [467, 56, 496, 895, 653, 415, 607],
}


@pytest.fixture(scope="module")
def splits(real_data: Path) -> dict[str, Split]:
    """Decoded once for the module (each test has its own empty cache)."""
    return {name: load_split(real_data, name, use_cache=False) for name in README_COUNTS}


def test_counts_match_the_dataset_readme(splits: dict[str, Split]) -> None:
    for split, counts in README_COUNTS.items():
        s = splits[split]
        assert s.class_counts() == counts
        assert s.images.shape == (sum(counts), 1, 48, 48)


def test_cleaning_finds_the_blanks_duplicates_and_overlap(splits: dict[str, Split]) -> None:
    train, test = splits["train"], splits["test"]
    cleaned, report = clean_train(train, [test])
    assert report.total("blank") == 11
    assert report.duplicate_groups == 1035
    assert report.total("leak") > 270  # 270 distinct test images appear in train, some of them several times
    dropped = sum(report.total(r) for r in ("blank", "duplicate", "leak"))
    assert report.after == len(cleaned) == 28709 - dropped
