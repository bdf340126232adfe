"""Choose which trained runs to ship as the accurate model, on the validation slice only.

Every subset of the given runs (one run, or an ensemble of any mix of their networks) that fits a
shipped file (at most 20 MB: float16, or int8 where float16 is too big) is scored on the validation
slice all of them held out, with and without TTA, on weights rounded exactly as that file will store them.
The rule, fixed before measuring: best accuracy with TTA, ties going to the smaller model. An
ensemble is the mean of its members' probabilities and TTA the mean over views, so each run is
evaluated once (with and without TTA) and every subset is an average: 6 runs, 63 subsets. Those
per-run probabilities are kept in the evaluation cache (keyed by the weights' and the slice's
hashes), so adding one new run to the comparison costs one run's evaluation, not all of them.

    python -m fer_core.tools.choose_ensemble RUN [RUN ...] --data data/fer2013
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from fer_core.common.atomic import read_json
from fer_core.common.labels import to_label_space
from fer_core.data.dataset import Split
from fer_core.evaluation.cache import cache_path, load_cached, store, weights_hash
from fer_core.evaluation.evaluate import Evaluation, predict_probs
from fer_core.models import checkpoint
from fer_core.models.checkpoint import load_checkpoint, round_to_storage, storage_for, stored_bytes
from fer_core.models.zoo import count_params, members_text


@dataclass(frozen=True)
class Candidate:
    """One shippable subset of runs and its validation scores.

    ``members``: the networks' architectures in the slot order ship gives them (by architecture
    name), one entry for a single run.
    """

    runs: tuple[Path, ...]
    members: tuple[str, ...]
    params: int
    storage: str
    accuracy: float
    tta_accuracy: float
    tta_macro_f1: float

    @property
    def label(self) -> str:
        """``fernet_s``, or ``fernet_l + 3 fernet_m + fernet_s`` for an ensemble."""
        return members_text(self.members)


def _run_config(run: Path) -> dict:
    try:
        config = read_json(run / "config.json")
        config["data"]["val_hash"], config["train"]
    except (KeyError, TypeError):
        raise ValueError(f"{run}: not a training run folder (no readable config.json from train.py)") from None
    return config


def _stored_probs(run: Path, val: Split, val_hash: str, storage: str, tta: bool) -> np.ndarray:
    """The run's probabilities on ``val``, in ``val``'s classes (``to_label_space``), with its weights
    rounded as ``storage`` keeps them, through the evaluation cache."""
    path = cache_path(weights_hash(run), val_hash, f"{val.name}-{storage}", tta, val.classes)
    hit = load_cached(path, len(val), val.classes)
    if hit is not None:
        return hit.probs
    model, cfg = load_checkpoint(run)
    probs = to_label_space(predict_probs(round_to_storage(model, storage), val.images, tta=tta), cfg.classes,
                           val.classes)
    store(path, Evaluation(probs, val.labels.numpy(), tta=tta, classes=tuple(val.classes)))
    return probs


def candidates(runs: list[Path], data: str) -> list[Candidate]:
    """All shippable subsets of ``runs``, best first by the rule above."""
    from fer_core.runs.ship import shared_validation_slice

    configs = [_run_config(r) for r in runs]
    val = shared_validation_slice(configs, data)
    if val is None:
        raise ValueError("these runs did not all hold out the same validation slice of this data; "
                         "train ensemble members with the same --val-seed on the same data")
    labels, val_hash = val.labels.numpy(), val.content_hash()
    params, archs, sizes, probs = {}, {}, {}, {}
    for run in runs:
        model, cfg = load_checkpoint(run)
        params[run], archs[run] = count_params(model), cfg.arch
        sizes[run] = {s: stored_bytes(model, s) for s in ("float16", "int8")}

    def member(run: Path, storage: str, tta: bool) -> np.ndarray:  # evaluated once, when first needed
        if (run, storage, tta) not in probs:
            probs[run, storage, tta] = _stored_probs(run, val, val_hash, storage, tta)
        return probs[run, storage, tta]

    found = []
    for k in range(1, len(runs) + 1):
        for subset in combinations(runs, k):
            storage = storage_for({s: sum(sizes[r][s] for r in subset) for s in ("float16", "int8")})
            if storage is None:
                continue
            with_tta = Evaluation(np.mean([member(r, storage, True) for r in subset], 0), labels, tta=True,
                                  classes=tuple(val.classes))
            plain = Evaluation(np.mean([member(r, storage, False) for r in subset], 0), labels, tta=False,
                               classes=tuple(val.classes))
            found.append(Candidate(
                runs=subset, members=tuple(sorted(archs[r] for r in subset)), params=sum(params[r] for r in subset),
                storage=storage,
                accuracy=plain.accuracy, tta_accuracy=with_tta.accuracy, tta_macro_f1=with_tta.metrics()["macro_f1"]))
    return sorted(found, key=lambda c: (-c.tta_accuracy, c.params))


def format_table(found: list[Candidate]) -> str:
    width = max([14, *(len(c.label) for c in found)])
    lines = [f"{'val TTA':>8} {'val':>7} {'F1 TTA':>7} {'params':>7} {'stored':>7}  {'networks':<{width}} runs"]
    lines += [f"{c.tta_accuracy:8.2%} {c.accuracy:7.2%} {c.tta_macro_f1:7.4f} {c.params / 1e6:6.2f}M {c.storage:>7}  "
              f"{c.label:<{width}} "
              + " ".join(str(r) for r in c.runs) for c in found]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fer_core.tools.choose_ensemble", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="finished run folders trained with the same --val-seed")
    ap.add_argument("--data", required=True, help="the FER-2013 the runs were trained on")
    ap.add_argument("--top", type=int, default=15, help="how many candidates to list")
    args = ap.parse_args(argv)
    try:
        found = candidates(args.runs, args.data)
    except ValueError as exc:  # includes CheckpointError and DatasetError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not found:
        limit = checkpoint.SHIPPED_FILE_LIMIT / 1e6
        print(f"error: no subset of these runs fits a shipped file of {limit:.0f} MB", file=sys.stderr)
        return 2
    print(format_table(found[:args.top]))
    best = found[0]
    print(f"\nchosen: {best.label} ({best.tta_accuracy:.2%} on validation with TTA); ship it with\n"
          f"python -m fer_core.runs.ship {' '.join(str(r) for r in best.runs)} --name accurate --data {args.data} "
          f"--command \"...\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
