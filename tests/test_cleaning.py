"""Cleaning finds planted blanks, duplicates and leaks, and reports them per class."""

from __future__ import annotations

import torch

from fer_core.data.cleaning import clean_train
from fer_core.data.dataset import Split


def _split(images: torch.Tensor, labels: list[int], name: str) -> Split:
    return Split(name, images, torch.tensor(labels), tuple(f"{name}/{i}.png" for i in range(len(labels))))


def test_planted_blanks_duplicates_and_leaks() -> None:
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (10, 1, 48, 48), generator=g, dtype=torch.uint8)
    imgs[2] = 128  # blank
    imgs[3] = 7  # blank
    imgs[5] = imgs[4]  # duplicate of 4
    imgs[6] = imgs[4]  # duplicate of 4
    test_imgs = torch.randint(0, 256, (3, 1, 48, 48), generator=g, dtype=torch.uint8)
    test_imgs[0] = imgs[8]  # leak
    train = _split(imgs, [0, 1, 2, 3, 4, 4, 4, 5, 6, 6], "train")
    cleaned, report = clean_train(train, [_split(test_imgs, [0, 1, 2], "test")])
    assert report.total("blank") == 2 and report.dropped["blank"][2] == 1 and report.dropped["blank"][3] == 1
    assert report.total("duplicate") == 2 and report.dropped["duplicate"][4] == 2
    assert report.total("leak") == 1 and report.dropped["leak"][6] == 1
    assert report.duplicate_groups == 1
    assert report.before == 10 and report.after == len(cleaned) == 5
    assert cleaned.sources == ("train/0.png", "train/1.png", "train/4.png", "train/7.png", "train/9.png")
    assert report.examples["leak"] == ["train/8.png"]
    assert "blank" in report.format() and report.to_dict()["totals"] == {"blank": 2, "duplicate": 2, "leak": 1}


def test_clean_data_is_untouched() -> None:
    imgs = torch.randint(0, 256, (5, 1, 48, 48), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    cleaned, report = clean_train(_split(imgs, [0, 1, 2, 3, 4], "train"))
    assert len(cleaned) == 5 and report.after == 5 and sum(report.to_dict()["totals"].values()) == 0


def test_without_copies_in_drops_exactly_the_faces_seen_in_the_reference() -> None:
    from fer_core.data.cleaning import without_copies_in

    g = torch.Generator().manual_seed(2)
    test_imgs = torch.randint(0, 256, (6, 1, 48, 48), generator=g, dtype=torch.uint8)
    train_imgs = torch.randint(0, 256, (4, 1, 48, 48), generator=g, dtype=torch.uint8)
    train_imgs[1], train_imgs[3] = test_imgs[2], test_imgs[5]
    kept = without_copies_in(_split(test_imgs, [0, 1, 2, 3, 4, 5], "test"), _split(train_imgs, [0, 1, 2, 3], "train"))
    assert kept.sources == ("test/0.png", "test/1.png", "test/3.png", "test/4.png") and kept.name == "test"
    assert kept.labels.tolist() == [0, 1, 3, 4]
