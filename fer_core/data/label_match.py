"""FER-2013's own label for each face of a FER+ split, found by pixels in a separate FER-2013 copy.

FER+ in Microsoft's folders names its faces ``fer0028639.png``; the FER-2013 image release names the
same faces ``PublicTest_93710701.jpg``; nothing but the pixels links them. The pixels differ, too:
the release is JPEG (about 20 grey levels of mean absolute difference) and its faces have been
contrast-stretched, so neither equality nor a plain pixel distance finds them (a plain 16x16
distance matches fewer than half of FER2013Valid's faces). Each face is therefore reduced to a
thumbnail that ignores both: grey levels replaced by their rank in the face (which undoes any
brightening or contrast curve), averaged down to 16x16 (which washes out the JPEG blocks),
mean-centred and scaled to unit length. The nearest thumbnail (by chunked matrix products) is the
face's copy when it is clearly the nearest: closer than ``RATIO`` times the runner-up and similar
enough (``MIN_CORRELATION``); otherwise the face is unmatched (-1), never guessed. FER-2013 holds
pixel-identical copies of some faces; they are merged first, so a copy is not its own runner-up,
and where such copies disagree on the label, the face gets none.

A match costs seconds (the whole of FER2013Train against FER-2013's Training, a few 100 GFLOP), so
its result is cached on disk, keyed by both splits' content.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fer_core.common.atomic import write_atomic
from fer_core.common.paths import cache_dir
from fer_core.data.dataset import SPLITS, Split

THUMB = 16
RATIO = 0.6
"""A match's distance must be below this share of the runner-up's: on FER2013Valid against the image
release's PublicTest, 0.6 keeps 99.6% of the faces, and with each face's true copy removed only ~2%
still pass (mostly near-copies of the same photo, which FER-2013 holds too)."""
MIN_CORRELATION = 0.8
"""And its thumbnail must correlate at least this well: a flat or garbled face matches nothing."""
CHUNK = 1024
CACHE_VERSION = 1


@dataclass(frozen=True)
class LabelMatch:
    """Per face of the FER+ split: the row of its copy in the FER-2013 split and that copy's label."""

    index: np.ndarray  # (N,) int64 row in the FER-2013 split, -1 where no copy was found
    labels: np.ndarray  # (N,) int64 FER-2013 label, -1 where unmatched or its copies disagree

    @property
    def matched(self) -> int:
        return int((self.index >= 0).sum())

    @property
    def labelled(self) -> int:
        return int((self.labels >= 0).sum())


def thumbnails(images: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """(N, 1, H, W) uint8 -> (N, THUMB*THUMB) float32 unit vectors that a JPEG copy with another
    contrast curve maps to nearly the same point: rank-equalised, averaged down, centred, normed.
    In chunks: the ranks of all of FER-2013 at once would take a gigabyte."""
    return torch.cat([_thumbnails(images[i:i + chunk]) for i in range(0, len(images), chunk)])


def _thumbnails(images: torch.Tensor) -> torch.Tensor:
    flat = images.reshape(len(images), -1).long()
    hist = torch.zeros(len(images), 256).scatter_add_(1, flat, torch.ones(flat.shape))
    ranks = (hist.cumsum(1) / flat.shape[1]).gather(1, flat).reshape(images.shape)
    x = F.adaptive_avg_pool2d(ranks, THUMB).flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def unique_faces(images: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The first row of each group of pixel-identical faces, and the group's label (-1 where the
    copies carry different labels): what the matcher compares against."""
    flat = np.ascontiguousarray(images.reshape(len(images), -1).numpy())
    keys = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, first, group = np.unique(keys, return_index=True, return_inverse=True)
    lab = labels.numpy().astype(np.int64)
    low = np.full(len(first), np.iinfo(np.int64).max)
    high = np.full(len(first), -1)
    np.minimum.at(low, group.ravel(), lab)
    np.maximum.at(high, group.ravel(), lab)
    return first, np.where(low == high, high, -1)


def nearest_two(query: torch.Tensor, reference: torch.Tensor, chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """For unit vectors: (N, 2) distances to the nearest and the runner-up reference (inf where the
    reference has one row), and (N,) the nearest's row. In chunks, so memory stays ~chunk x M."""
    dists, rows = [], []
    k = min(2, len(reference))
    for start in range(0, len(query), chunk):
        corr = query[start:start + chunk] @ reference.T
        top = corr.topk(k, dim=1)
        d = (2 - 2 * top.values).clamp_min(0).sqrt()
        if k == 1:
            d = torch.cat([d, torch.full_like(d, float("inf"))], dim=1)
        dists.append(d)
        rows.append(top.indices[:, 0])
    return torch.cat(dists), torch.cat(rows)


def match_faces(ferplus: Split, fer2013: Split) -> LabelMatch:
    """Find each FER+ face's copy in ``fer2013`` (uncached; see ``fer2013_labels_for``)."""
    n = len(ferplus)
    if n == 0 or len(fer2013) == 0:
        return LabelMatch(np.full(n, -1, np.int64), np.full(n, -1, np.int64))
    first, group_labels = unique_faces(fer2013.images, fer2013.labels)
    reference = thumbnails(fer2013.images[torch.from_numpy(first)])
    dist, nearest = nearest_two(thumbnails(ferplus.images), reference)
    min_dist = (2 - 2 * MIN_CORRELATION) ** 0.5
    ok = ((dist[:, 0] < RATIO * dist[:, 1]) & (dist[:, 0] <= min_dist)).numpy()
    near = nearest.numpy()
    index = np.where(ok, first[near], -1).astype(np.int64)
    labels = np.where(ok, group_labels[near], -1).astype(np.int64)
    return LabelMatch(index=index, labels=labels)


def _cache_file(ferplus: Split, fer2013: Split) -> Path:
    key = f"v{CACHE_VERSION}-t{THUMB}-r{RATIO}-c{MIN_CORRELATION}-{ferplus.content_hash()}-{fer2013.content_hash()}"
    return cache_dir() / "label_match" / f"{key}.npz"


def fer2013_labels_for(ferplus: Split, fer2013: Split, use_cache: bool = True) -> LabelMatch:
    """``match_faces``, cached on disk under both splits' content hashes (an unreadable cache is
    rebuilt, an unwritable one only costs time)."""
    path = _cache_file(ferplus, fer2013)
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if len(z["index"]) == len(ferplus):
                    return LabelMatch(index=z["index"], labels=z["labels"])
        except (OSError, ValueError, KeyError):
            pass
    result = match_faces(ferplus, fer2013)
    if use_cache:
        buf = io.BytesIO()
        np.savez(buf, index=result.index, labels=result.labels)
        try:
            write_atomic(path, lambda tmp: tmp.write_bytes(buf.getvalue()))
        except OSError:
            pass
    return result


def counterpart_split(ferplus_split: str, fer2013_splits: list[str]) -> str | None:
    """The split of a FER-2013 copy that holds a FER+ split's faces, as a default to offer: the one of
    the same name, except that the image release has no val/ and calls PublicTest (FER+'s val) test/."""
    if ferplus_split == "val" and "val" not in fer2013_splits and "test" in fer2013_splits:
        return "test"
    if ferplus_split in fer2013_splits:
        return ferplus_split
    return next((s for s in SPLITS if s in fer2013_splits), None)
