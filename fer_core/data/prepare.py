"""The data a run trains and is judged on: load, clean, carve the validation slice, subset.

This is the only place the validation slice is drawn. Training holds it out, and everything
that later scores a run on "its" validation slice (``evaluate --split val``, choosing an
ensemble, shipping) rebuilds it from the run's saved settings through ``prepare``, so every
figure is taken on exactly the images that run never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from fer_core.data.cleaning import CleaningReport, clean_train
from fer_core.data.dataset import (
    Split,
    is_ferplus,
    load_held_out,
    load_split,
    per_class_subset,
    stratified_split,
    validate_dataset,
)
from fer_core.data.label_match import fer2013_labels_for

VAL_FRACTION = 0.1
"""Share of train/ held out for validation when the data has no val split."""


@dataclass
class PreparedData:
    train: Split
    val: Split
    test: Split | None
    cleaning: CleaningReport | None


def prepare(data: str, *, seed: int = 0, val_seed: int | None = None, val_fraction: float = VAL_FRACTION,
            clean: bool = True, subset: int | None = None, fer2013: str | None = None) -> PreparedData:
    """Load, clean (against val/test, so nothing leaks), carve validation (stratified, drawn with
    ``val_seed``, else ``seed``), then take ``subset`` images per class: of train drawn with ``seed``,
    of validation with the validation's seed, so that runs sharing ``val_seed`` share every held-out image.

    FER+ is scored on its own valid split (FER-2013's PublicTest) and test split (PrivateTest), so on FER+
    the validation slice is always carved from train, and the run reports on FER+'s test split, else on
    its valid split: no choice of a FER+ run is made on a split its figures are quoted on."""
    splits = validate_dataset(data)
    train = load_split(data, "train")
    held = load_held_out(data, splits)
    val, test = held.get("val"), held.get("test")
    if is_ferplus(data):
        val, test = None, test if test is not None else val
        if fer2013 is not None:
            train = with_fer2013_labels(train, fer2013)
    report = None
    if clean:
        train, report = clean_train(train, list(held.values()))
    held_seed = seed if val_seed is None else val_seed
    if val is None:
        train, val = stratified_split(train, val_fraction, held_seed)
    if subset:
        train = per_class_subset(train, subset, seed)
        val = per_class_subset(val, max(1, subset // 4), held_seed)
    return PreparedData(train, val, test, report)


def with_fer2013_labels(train: Split, fer2013: str) -> Split:
    """FER+'s training faces with FER-2013's own label of each (``fer_core.data.label_match``; -1 where
    no copy was found in ``fer2013``'s train split). The CSV pair carries them already."""
    if train.fer2013_labels is not None:
        return train
    match = fer2013_labels_for(train, load_split(fer2013, "train"))
    return replace(train, fer2013_labels=torch.from_numpy(match.labels))


RUN_SETTINGS = ("seed", "val_seed", "val_fraction", "clean", "subset")
"""The saved training settings that decide which faces a run trained on and which it held out."""


def prepare_as(data: str, run_settings: dict | None = None) -> PreparedData:
    """``data`` as a run with these saved training settings (``config.json``'s ``train``) had it: its
    training faces and the validation slice it held out; without settings, the default run's (seed 0)."""
    return prepare(data, **{k: v for k, v in (run_settings or {}).items() if k in RUN_SETTINGS})


def validation_slice(data: str, run_settings: dict | None = None) -> Split:
    """The validation slice a run held out of ``data`` (``prepare_as``)."""
    return prepare_as(data, run_settings).val
