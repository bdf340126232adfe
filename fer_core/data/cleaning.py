"""Cleaning the training split, as the paper does and then some.

FER-2013 has blank frames (a flat grey level), more than a thousand groups of
pixel-identical training images, and training images that reappear in the test splits.
Blanks teach nothing, duplicates over-weight a few faces, and leaked images inflate the
test score; so by default training drops all three and says exactly what it dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from fer_core.common.labels import EMOTIONS
from fer_core.data.dataset import Split

BLANK_STD = 1.0
"""Images whose pixel standard deviation is below this are blank (flat grey)."""

REASONS = ("blank", "duplicate", "leak")


@dataclass
class CleaningReport:
    """What was dropped from which class and why, with the sources of the dropped images."""

    before: int
    after: int
    classes: tuple[str, ...] = EMOTIONS  # the label space of the counts in ``dropped``
    dropped: dict[str, list[int]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=lambda: {r: [] for r in REASONS})
    duplicate_groups: int = 0
    checked_against: list[str] = field(default_factory=list)  # the held-out splits leaks were looked for in

    def __post_init__(self) -> None:
        for r in REASONS:
            self.dropped.setdefault(r, [0] * len(self.classes))

    def total(self, reason: str) -> int:
        return sum(self.dropped[reason])

    def to_dict(self) -> dict:
        return {
            "before": self.before,
            "after": self.after,
            "duplicate_groups": self.duplicate_groups,
            "dropped": {r: dict(zip(self.classes, v, strict=True)) for r, v in self.dropped.items()},
            "totals": {r: self.total(r) for r in REASONS},
            "examples": self.examples,
            "checked_against": self.checked_against,
        }

    def format(self) -> str:
        lines = [f"cleaning: {self.before} -> {self.after} training images"]
        head = f"  {'reason':<10}" + "".join(f"{c[:8]:>9}" for c in self.classes) + f"{'total':>9}"
        lines.append(head)
        for r in REASONS:
            lines.append(f"  {r:<10}" + "".join(f"{n:>9}" for n in self.dropped[r]) + f"{self.total(r):>9}")
        lines.append(f"  ({self.duplicate_groups} groups of pixel-identical training images; one kept per group)")
        if not self.checked_against:
            lines.append("  no test/ (or val/) beside train/, so no training face could be checked for a copy in a "
                         "test set. Fine for faces packed by `python -m fer_core.tools.pack` (cleaned before packing); "
                         "otherwise this run's test scores may be inflated, and its validation slice differs from "
                         "that of runs which had test/")
        return "\n".join(lines)


def image_hashes(split: Split) -> list[bytes]:
    flat = split.images.reshape(len(split), -1).contiguous().numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]


def without_copies_in(split: Split, reference: Split) -> Split:
    """``split`` less every face with a pixel-identical copy in ``reference``.

    FER-2013's Training split holds copies of a few hundred PublicTest faces. Our own training
    drops them (see ``clean_train``), but a run that never saw test/ (a GPU machine carrying
    train/ alone, say) keeps them, and only the faces left here measure it fairly."""
    seen = set(image_hashes(reference))
    keep = [i for i, h in enumerate(image_hashes(split)) if h not in seen]
    return split.select(keep)


def blank_mask(split: Split, threshold: float = BLANK_STD) -> torch.Tensor:
    return split.images.reshape(len(split), -1).float().std(dim=1) < threshold


def clean_train(
    train: Split, held_out: Sequence[Split] = (), examples_per_reason: int = 24
) -> tuple[Split, CleaningReport]:
    """Drop blanks, within-train duplicates (keep the first) and images leaked into ``held_out``."""
    report = CleaningReport(before=len(train), after=0, classes=train.classes,
                            checked_against=[s.name for s in held_out])
    blank = blank_mask(train).tolist()
    held_hashes = {h for s in held_out for h in image_hashes(s)}
    seen: dict[bytes, int] = {}
    group_sizes: dict[bytes, int] = {}
    keep: list[int] = []
    labels = train.labels.tolist()
    for i, h in enumerate(image_hashes(train)):
        group_sizes[h] = group_sizes.get(h, 0) + 1
        if blank[i]:
            reason = "blank"
        elif h in held_hashes:
            reason = "leak"
        elif h in seen:
            reason = "duplicate"
        else:
            seen[h] = i
            keep.append(i)
            continue
        report.dropped[reason][labels[i]] += 1
        if len(report.examples[reason]) < examples_per_reason:
            report.examples[reason].append(train.sources[i])
    report.duplicate_groups = sum(1 for n in group_sizes.values() if n > 1)
    cleaned = train.select(keep)
    report.after = len(cleaned)
    return cleaned, report
