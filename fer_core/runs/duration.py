"""How long a run will take, shown on the launcher before anyone presses Start.

The estimate comes from throughput measured on this machine (the latest runs of the same
architecture, else a short benchmark), times the images an epoch will hold for these settings,
counted from file names or CSV rows without decoding anything.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from functools import lru_cache

from fer_core.runs.store import Run, list_runs
from fer_core.training.loop import TrainConfig

STARTUP_SECONDS = 8.0
"""Loading FER-2013 from the decoded cache and cleaning it, measured ~6-8 s on this 2-core machine."""


def count_train_images(cfg: TrainConfig) -> int:
    """Training images per epoch for this config (before cleaning, which drops ~5% of FER-2013)."""
    sizes = _split_counts(str(cfg.data))
    keep = 1.0 if "val" in sizes else 1 - cfg.val_fraction  # validation is carved out of train only without one
    counts = sizes.get("train", ())
    if cfg.subset:
        return sum(min(cfg.subset, round(n * keep)) for n in counts)
    return round(sum(counts) * keep)


@lru_cache(maxsize=8)
def _split_counts(data: str) -> dict[str, tuple[int, ...]]:
    """Images per class of each split, counted once per data path (the page asks on every rerun)."""
    from fer_core.data.dataset import split_class_counts

    return split_class_counts(data)


def measured_rate(arch: str, runs: list[Run] | None = None) -> float | None:
    """Median training throughput (images/s) of the latest runs of ``arch`` on this machine."""
    rates = [r.progress["images_per_s"] for r in (runs if runs is not None else list_runs())
             if r.config.get("arch") == arch and isinstance(r.progress.get("images_per_s"), int | float)
             and r.progress["images_per_s"] > 0][:5]
    return statistics.median(rates) if rates else None


@lru_cache(maxsize=16)
def benchmark_rate(arch: str, batch: int = 32, steps: int = 3) -> float:
    """Training images/s of ``arch`` measured now on random data (a few small steps, well under a second)."""
    from fer_core.common.device import resolve_device, resolve_precision
    from fer_core.evaluation.bench import training_step
    from fer_core.models.zoo import create_model

    device = resolve_device("auto")
    step = training_step(create_model(arch), resolve_precision("auto", device), batch, device)
    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0)


@dataclass
class Estimate:
    seconds: float
    images_per_epoch: int
    images_per_s: float
    source: str  # "previous runs" or "benchmark"


def estimate(cfg: TrainConfig, runs: list[Run] | None = None) -> Estimate:
    """Wall time of a run from measured throughput: training + evaluation (~3x faster) + start-up."""
    rate = measured_rate(cfg.arch, runs)
    source = "previous runs"
    if rate is None:
        rate, source = benchmark_rate(cfg.arch), "benchmark"
    n = count_train_images(cfg)
    sizes = _split_counts(str(cfg.data))
    val = max(1, cfg.subset // 4) * 7 if cfg.subset else sum(sizes.get("val", ())) or round(
        n * cfg.val_fraction / (1 - cfg.val_fraction))
    test = sum(sizes.get("test", ())) or val
    seconds = STARTUP_SECONDS + cfg.epochs * n / rate + (cfg.epochs * val + test) / (3 * rate)
    return Estimate(seconds=seconds, images_per_epoch=n, images_per_s=rate, source=source)
