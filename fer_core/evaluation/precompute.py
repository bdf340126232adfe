"""Fill the evaluation cache for the shipped models, so that a public deployment's Metrics page
answers from disk and never evaluates on a visitor's request.

    fer-precompute --data data/fer2013            # every shipped model, test split, with and without TTA
    fer-precompute --data data/ferplus            # FER+ without a test split: its valid split

Each model is scored in its own classes, mapped to the data's by the cross-label rule
(``fer_core.common.labels.to_label_space``), as the Metrics page shows it.

Run it once when deploying (and again after shipping a model): each evaluation is stored under
the same key the Metrics page looks up (``fer_core.evaluation.cache``), so a later run finds
everything already there and does nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fer_core.common.paths import default_data_path
from fer_core.data.dataset import DatasetError, available_splits, load_split
from fer_core.data.splits import report_split
from fer_core.evaluation.cache import cached_evaluate
from fer_core.models.active import shipped_models
from fer_core.models.checkpoint import CheckpointError


def precompute(data: str | Path, splits: list[str], models: dict[str, Path],
               log: Callable[[str], None] = print) -> list[tuple[str, str, bool, bool, float]]:
    """Evaluate every model on every split, plain and with TTA, through the cache.
    Returns ``(model, split, tta, already_cached, seconds)`` per evaluation."""
    done = []
    for split_name in splits:
        split = load_split(data, split_name)
        data_hash = split.content_hash()
        for name, weights in models.items():
            for tta in (False, True):
                t0 = time.monotonic()
                ev, hit = cached_evaluate(weights, split, tta=tta, data_hash=data_hash)
                seconds = time.monotonic() - t0
                log(f"{name:<10} {split_name:<5} {'tta ' if tta else 'plain'}  {ev.accuracy * 100:6.2f}%  "
                    f"{'cached' if hit else f'computed in {seconds:.0f} s'}")
                done.append((name, split_name, tta, hit, seconds))
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fer-precompute", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None,
                    help="FER-2013 or FER+ folder, or fer2013.csv (default: $FER_DATA or data/fer2013)")
    ap.add_argument("--splits", default=None,
                    help="comma list of splits (default: the data's report split: test, else val)")
    args = ap.parse_args(argv)
    data = args.data or default_data_path()
    try:
        splits = [s.strip() for s in (args.splits or report_split(data)).split(",") if s.strip()]
        present = available_splits(data)
        missing = [s for s in splits if s not in present]
        if missing:
            raise DatasetError(f"{data} has no {', '.join(missing)} split (it has: {', '.join(present)})")
        precompute(data, splits, shipped_models())
    except (DatasetError, CheckpointError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
