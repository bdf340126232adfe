"""Which split of a dataset its figures are quoted on, and how a card or a page names that split.

FER-2013 is reported on its test split. FER+ as Microsoft's tools lay it out often has FER2013Train
and FER2013Valid only (FER2013Test, FER-2013's PrivateTest, is held back), and FER+ models are then
reported on FER+ valid, which is FER-2013's PublicTest relabelled by FER+'s majority protocol.
"""

from __future__ import annotations

import os
from pathlib import Path

from fer_core.data.dataset import DatasetError, available_splits, is_ferplus, resolve_source

REPORT_SPLITS: tuple[str, ...] = ("test", "val")
"""In order of preference: the split a model's figures are quoted on is the first one the data has."""

FERPLUS_WORDS = {"train": "FER+ train (FER-2013 Training, majority protocol)",
                 "val": "FER+ valid (FER-2013 PublicTest, majority protocol)",
                 "test": "FER+ test (FER-2013 PrivateTest, majority protocol)"}
CSV_WORDS = {"train": "FER-2013 Training", "val": "FER-2013 PublicTest", "test": "FER-2013 PrivateTest"}


def report_split(path: str | os.PathLike) -> str:
    """"test" where the data has it, else "val"; a DatasetError when it has neither."""
    splits = available_splits(path)
    for name in REPORT_SPLITS:
        if name in splits:
            return name
    raise DatasetError(f"{path} has neither a test nor a val split to report on (it has: {', '.join(splits)})")


def describe_split(path: str | os.PathLike, split: str) -> str:
    """A split in words, as a model card quotes it: "FER-2013 PublicTest", "FER+ valid (FER-2013
    PublicTest, majority protocol)". In class folders, test/ is the Kaggle release's PublicTest, unless
    a val/ beside it holds PublicTest (``fer_core.tools.pack`` writes fer2013.csv's splits that way);
    class folders at the root (CK+48) are named by their folder."""
    src = resolve_source(path)
    if is_ferplus(src):
        return FERPLUS_WORDS.get(split, f"FER+ {split}")
    if src.is_file():
        return CSV_WORDS.get(split, f"FER-2013 {split}")
    if not (src / split).is_dir():  # class folders at the root (CK+48): not FER-2013's splits
        return f"{data_name(src)} ({split})"
    if split == "test":
        return "FER-2013 PrivateTest" if (src / "val").is_dir() else "FER-2013 PublicTest"
    return CSV_WORDS["train"] if split == "train" else CSV_WORDS["val"]


def data_name(path: str | os.PathLike) -> str:
    """The name a dataset goes by in a card: its folder's (or file's) name, e.g. "fer2013", "ckplus48"."""
    p = Path(path).expanduser()
    return p.name or p.resolve().name
