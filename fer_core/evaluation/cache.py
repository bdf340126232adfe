"""Evaluations cached on disk, so the metrics page opens in well under two seconds the second time.

Scoring a model on the 3,589 test faces takes tens of seconds on a CPU; its result is just
an (N, C) probability matrix in the data's C classes, the labels and those classes. We keep that
as ``.npz`` under ``cache_dir()/evals`` keyed by *what* was evaluated — the sha256 of the weights
file (whose metadata holds the model's classes), the content hash of the split (pixels, labels and
FER+'s votes), the split name, the data's classes and TTA — never by paths or times. Retraining a
model or editing the data changes a hash, so a stale result is never served; the cache is safe to
delete at any time.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from fer_core.common.atomic import write_atomic
from fer_core.common.labels import EMOTIONS
from fer_core.common.paths import cache_dir
from fer_core.data.dataset import Split
from fer_core.evaluation.evaluate import Evaluation, evaluate
from fer_core.models.checkpoint import load_checkpoint, resolve_weights

CACHE_VERSION = 4
"""2: TTA became the 14 views of fer_core.evaluation.tta (was the mirror only); 3: scores are taken
on the inference form in bf16 where the CPU has it (was the training form in fp32); 4: probabilities
are in the data's classes (``to_label_space`` of the model's), which are keyed on and stored."""
_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def weights_hash(weights: str | os.PathLike) -> str:
    """sha256 of the weights file; memoised per (path, size, mtime) so reruns do not re-read it."""
    p = resolve_weights(weights).resolve()
    st = p.stat()
    memo_key = (str(p), st.st_size, st.st_mtime_ns)
    if memo_key not in _HASH_MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _HASH_MEMO[memo_key] = h.hexdigest()
    return _HASH_MEMO[memo_key]


def cache_path(weights_sha: str, data_hash: str, split: str, tta: bool,
               classes: Sequence[str] = EMOTIONS) -> Path:
    """Where the evaluation of these exact weights on this exact data (labelled in ``classes``) is
    stored. The precision "auto" resolves to is part of the key: a cache moved to a CPU without bf16
    is not reused."""
    from fer_core.common.device import resolve_precision

    precision = resolve_precision("auto", torch.device("cpu"))
    names = ",".join(classes)
    text = f"v{CACHE_VERSION}|{weights_sha}|{data_hash}|{split}|{names}|{int(tta)}|{precision}"
    key = hashlib.sha256(text.encode()).hexdigest()[:32]
    return cache_dir() / "evals" / f"{split}-{'tta' if tta else 'plain'}-{key}.npz"


def load_cached(path: Path, n: int, classes: Sequence[str] | None = None,
                votes: np.ndarray | None = None) -> Evaluation | None:
    """The stored evaluation, or None when absent, unreadable, not of ``n`` images or (given
    ``classes``) not in those classes. ``votes``: the split's FER+ votes, which the Evaluation carries
    (the data hash of the key covers them, so they are not stored twice)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            probs, labels, tta = z["probs"], z["labels"], bool(z["tta"])
            stored = tuple(z["classes"].tolist()) if "classes" in z.files else EMOTIONS
    except (OSError, ValueError, KeyError):
        path.unlink(missing_ok=True)  # a corrupt entry is simply recomputed
        return None
    if (probs.ndim != 2 or probs.shape != (n, len(stored)) or labels.shape != (n,)
            or (classes is not None and stored != tuple(classes))):
        path.unlink(missing_ok=True)
        return None
    return Evaluation(probs=probs, labels=labels, tta=tta, classes=stored, votes=votes)


def store(path: Path, result: Evaluation) -> None:
    def _save(tmp: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, probs=result.probs.astype(np.float32), labels=result.labels.astype(np.int64),
                 tta=np.array(result.tta), classes=np.array(list(result.classes), dtype=str))
        tmp.write_bytes(buf.getvalue())

    try:
        write_atomic(path, _save)
    except OSError:
        pass  # an unwritable cache only costs speed


def lookup(weights: str | os.PathLike, split: Split, tta: bool = False,
           data_hash: str | None = None) -> Evaluation | None:
    """The stored evaluation when there is one, without computing anything: what a public deployment
    shows, since an evaluation it computed on request would be work a visitor could repeat at will."""
    return load_cached(_entry(weights, split, tta, data_hash), len(split), split.classes, _votes(split))


def _entry(weights: str | os.PathLike, split: Split, tta: bool, data_hash: str | None) -> Path:
    return cache_path(weights_hash(weights), data_hash or split.content_hash(), split.name, tta, split.classes)


def _votes(split: Split) -> np.ndarray | None:
    return None if split.votes is None else split.votes.numpy()


def cached_evaluate(weights: str | os.PathLike, split: Split, tta: bool = False,
                    progress: Callable[[int, int], None] | None = None,
                    data_hash: str | None = None) -> tuple[Evaluation, bool]:
    """Evaluate ``weights`` on ``split`` exactly as ``fer-evaluate`` does, through the cache.

    Returns ``(evaluation, from_cache)``: the model's probabilities in the split's classes, by the
    cross-label rule (``fer_core.common.labels.to_label_space``). ``data_hash`` may be passed when the
    caller already computed ``split.content_hash()``. Raises ``CheckpointError`` for unusable weights.
    """
    hit = lookup(weights, split, tta, data_hash)
    if hit is not None:
        return hit, True
    path = _entry(weights, split, tta, data_hash)
    model, cfg = load_checkpoint(weights)
    torch.manual_seed(0)
    result = evaluate(model, split, tta=tta, progress=progress, classes=cfg.classes)
    store(path, result)
    return result, False
