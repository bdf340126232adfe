"""The paper's experiment: which optimizer and which learning rate.

    fer-study --data data/fer2013 --arch fernet_s \\
        --optimizers sgd,adam,amsgrad,rmsprop,adagrad --lrs 0.1,0.01,0.001,0.0001 \\
        --epochs 3 --subset 300 --seed 0 --out reports/study

Every cell of the grid is an ordinary run (``DIR/cells/<optimizer>-lr<lr>``) made by
``fer_core.training.loop.train`` with the same architecture, data, epochs, subset, batch size and
seed: only the optimizer and the learning rate differ. The learning rate is held constant
(schedule ``none`` by default) so that "lr" means the same thing for every optimizer.

Resumable: a cell that finished (or failed deterministically, e.g. diverged) is read back,
not rerun; an interrupted one is started again from scratch. After every cell the summary
(``study.csv``, ``study.json``) and the heatmap (``heatmap.html``, plus ``heatmap.png`` when
kaleido is installed) are rewritten atomically, so a half-done study is already readable.
The winner is chosen on validation accuracy; the test accuracy is reported, never tuned on.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from fer_core.common.atomic import read_json, write_json, write_text
from fer_core.models.zoo import list_models
from fer_core.training import loop as training
from fer_core.training.loop import OPTIMIZERS, SCHEDULES, TrainConfig, TrainingError

PAPER_LRS = (0.1, 0.01, 0.001, 0.0001)
FIELDS = ("optimizer", "lr", "status", "best_val_acc", "test_acc", "macro_f1", "final_train_loss",
          "train_seconds", "wall_seconds", "error")
BUDGET_KEYS = ("data", "arch", "epochs", "subset", "seed", "batch_size", "schedule", "augment", "weight_decay",
               "momentum", "label_smoothing", "val_fraction", "clean", "precision", "device")
TERMINAL = ("finished", "failed")


@dataclass
class Cell:
    optimizer: str
    lr: float
    status: str = "pending"
    best_val_acc: float | None = None
    test_acc: float | None = None
    macro_f1: float | None = None
    final_train_loss: float | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return cell_name(self.optimizer, self.lr)


def cell_name(optimizer: str, lr: float) -> str:
    return f"{optimizer}-lr{lr:g}"


def read_cell(folder: Path, optimizer: str, lr: float) -> Cell:
    """What a cell folder says about itself; ``pending`` when it never ran or did not end."""
    cell = Cell(optimizer, lr)
    progress = read_json(folder / "progress.json")
    status = progress.get("status")
    if status == "finished":
        metrics = read_json(folder / "metrics.json")
        cell.status = "finished"
        cell.best_val_acc = metrics.get("best_val_acc", progress.get("best_val_acc"))
        cell.test_acc = metrics.get("accuracy", progress.get("test_acc"))
        cell.macro_f1 = metrics.get("macro_f1")
        cell.train_seconds = metrics.get("train_seconds")
    elif status == "failed":
        cell.status = "failed"
        cell.error = progress.get("error")
        cell.best_val_acc = progress.get("best_val_acc")
    else:
        return cell
    if isinstance(progress.get("train_loss"), int | float):
        cell.final_train_loss = round(float(progress["train_loss"]), 5)
    cell.wall_seconds = read_json(folder / "study_cell.json").get("wall_seconds")
    return cell


# --------------------------------------------------------------------------- one process, one data set


# --------------------------------------------------------------------------- the study


@dataclass
class StudyConfig:
    base: TrainConfig
    optimizers: list[str]
    lrs: list[float]
    out: Path
    retry_failed: bool = False

    def budget(self) -> dict:
        d = asdict(self.base)
        return {k: d[k] for k in BUDGET_KEYS}

    def validate(self) -> None:
        problems = []
        unknown = [o for o in self.optimizers if o not in OPTIMIZERS]
        if unknown:
            problems.append(f"unknown optimizer(s) {', '.join(unknown)} (known: {', '.join(OPTIMIZERS)})")
        if not self.optimizers:
            problems.append("give at least one optimizer")
        if not self.lrs or any(not (math.isfinite(lr) and lr > 0) for lr in self.lrs):
            problems.append(f"learning rates must be positive numbers, got {self.lrs}")
        if len(set(self.optimizers)) != len(self.optimizers) or len(set(self.lrs)) != len(self.lrs):
            problems.append("optimizers and learning rates must not repeat")
        if problems:
            raise ValueError("; ".join(problems))
        self.base.validate()
        stored = read_json(self.out / "study.json").get("budget")
        if stored and stored != self.budget():
            diff = sorted(k for k in BUDGET_KEYS if stored.get(k) != self.budget().get(k))
            raise ValueError(f"{self.out} holds a study with a different budget ({', '.join(diff)}); "
                             "resume it with the same settings or choose another --out")


def run_study(sc: StudyConfig, log: Callable[[str], None] = print,
              should_stop: Callable[[], bool] = lambda: False) -> list[Cell]:
    """Run (or resume) the grid; returns every cell in grid order."""
    sc.validate()
    try:
        (sc.out / "cells").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"cannot write the study folder {sc.out}: {exc.strerror or exc}") from None
    grid = [(o, lr) for o in sc.optimizers for lr in sc.lrs]
    cells = {(o, lr): read_cell(sc.out / "cells" / cell_name(o, lr), o, lr) for o, lr in grid}
    todo = [k for k in grid if cells[k].status not in TERMINAL or (sc.retry_failed and cells[k].status == "failed")]
    log(f"study {sc.out}: {len(grid)} cells, {len(grid) - len(todo)} already done, {len(todo)} to run")
    write_summary(sc, [cells[k] for k in grid])
    data = training.prepare_data(sc.base) if todo else None  # identical for every cell: load it once
    for i, (opt, lr) in enumerate(todo, start=1):
        if should_stop():
            log("stopped; run the same command again to resume")
            break
        folder = sc.out / "cells" / cell_name(opt, lr)
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted cell restarts from scratch, same seed
        cfg = TrainConfig.from_dict({**asdict(sc.base), "optimizer": opt, "lr": lr, "out": str(folder)})
        t0 = time.monotonic()
        cell_log = _cell_logger(folder)
        try:
            training.train(cfg, log=cell_log, should_stop=should_stop, show_bar=False, data=data)
        except TrainingError as exc:  # e.g. the loss diverged: a result, recorded as failed
            cell_log(f"failed: {exc}")
        wall = round(time.monotonic() - t0, 1)
        cells[(opt, lr)] = cell = read_cell(folder, opt, lr)
        if cell.status in TERMINAL:
            write_json(folder / "study_cell.json", {"wall_seconds": wall})
            cell.wall_seconds = wall
        log(f"[{i}/{len(todo)}] {cell.name:<22} {cell.status:<9} val {_pct(cell.best_val_acc)} "
            f"test {_pct(cell.test_acc)}  {wall:.0f}s" + (f"  ({cell.error})" if cell.error else ""))
        write_summary(sc, [cells[k] for k in grid])
    result = [cells[k] for k in grid]
    best = winner(result)
    if best:
        log(f"best on validation: {best.optimizer} lr {best.lr:g} (val {_pct(best.best_val_acc)}, "
            f"test {_pct(best.test_acc)})")
    return result


def _cell_logger(folder: Path) -> Callable[[str], None]:
    def log(message: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "train.log", "a") as fh:
            fh.write(message + "\n")

    return log


def _pct(x: float | None) -> str:
    return f"{x * 100:5.1f}%" if isinstance(x, int | float) else "   — "


def winner(cells: list[Cell]) -> Cell | None:
    done = [c for c in cells if c.status == "finished" and c.best_val_acc is not None]
    return max(done, key=lambda c: (c.best_val_acc, c.test_acc or 0)) if done else None


# --------------------------------------------------------------------------- outputs


def write_summary(sc: StudyConfig, cells: list[Cell]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    for c in cells:
        w.writerow({k: getattr(c, k) for k in FIELDS})
    write_text(sc.out / "study.csv", buf.getvalue())
    best = winner(cells)
    done = [c for c in cells if c.status in TERMINAL]
    wall = sum(c.wall_seconds or 0 for c in done)
    config = read_json(sc.out / "cells" / done[0].name / "config.json") if done else {}
    write_json(sc.out / "study.json", {
        "budget": sc.budget(), "optimizers": sc.optimizers, "lrs": sc.lrs,
        "cells_done": len(done), "cells_total": len(cells), "wall_seconds": round(wall, 1),
        "device": config.get("device"), "precision": config.get("precision"), "data_sizes": config.get("data"),
        "winner": asdict(best) if best else None, "cells": [asdict(c) for c in cells],
    })
    fig = heatmap_figure(cells)
    write_text(sc.out / "heatmap.html", fig.to_html(include_plotlyjs="cdn", full_html=True))
    with contextlib.suppress(Exception):  # needs kaleido (not a dependency); the HTML is the figure of record
        import kaleido  # noqa: F401

        fig.write_image(str(sc.out / "heatmap.png"), width=1100, height=520)


def load_study(folder: str | Path) -> tuple[dict, list[Cell]]:
    """A study folder's ``study.json`` and its cells; raises ValueError when it is not one."""
    folder = Path(folder).expanduser()
    data = read_json(folder / "study.json")
    if not data or not isinstance(data.get("cells"), list):
        raise ValueError(f"{folder} holds no study (no readable study.json)")
    names = {f.name for f in Cell.__dataclass_fields__.values()}  # type: ignore[attr-defined]
    cells = [Cell(**{k: v for k, v in c.items() if k in names}) for c in data["cells"] if isinstance(c, dict)]
    return data, cells


def heatmap_figure(cells: list[Cell]):
    """Validation and test accuracy per optimizer (rows) × learning rate (columns)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    optimizers = list(dict.fromkeys(c.optimizer for c in cells))
    lrs = sorted({c.lr for c in cells}, reverse=True)
    by_key = {(c.optimizer, c.lr): c for c in cells}
    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation accuracy (best epoch)", "test accuracy"),
                        horizontal_spacing=0.04, shared_yaxes=True)
    values = [getattr(c, a) * 100 for c in cells for a in ("best_val_acc", "test_acc")
              if c.status == "finished" and isinstance(getattr(c, a), int | float)]
    zmin, zmax = (math.floor(min(values)), math.ceil(max(values))) if values else (0, 100)  # contrast where it is
    for col, attr in enumerate(("best_val_acc", "test_acc"), start=1):
        z, text = [], []
        for o in optimizers:
            row_z, row_t = [], []
            for lr in lrs:
                c = by_key.get((o, lr))
                v = getattr(c, attr) if c and c.status == "finished" else None
                row_z.append(v * 100 if isinstance(v, int | float) else None)
                row_t.append(f"{v * 100:.1f}" if isinstance(v, int | float) else (c.status if c else ""))
            z.append(row_z)
            text.append(row_t)
        fig.add_trace(go.Heatmap(z=z, x=[f"{lr:g}" for lr in lrs], y=optimizers, text=text, texttemplate="%{text}",
                                 colorscale="Viridis", zmin=zmin, zmax=max(zmax, zmin + 1), showscale=col == 2,
                                 colorbar={"title": "%"}, hovertemplate="%{y} lr %{x}: %{z:.1f}%<extra></extra>"),
                      row=1, col=col)
        fig.update_xaxes(title_text="learning rate", type="category", row=1, col=col)
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=col)
    fig.update_layout(height=120 + 42 * len(optimizers), margin={"t": 60, "b": 40, "l": 10, "r": 10})
    return fig


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> StudyConfig:
    d = TrainConfig()
    ap = argparse.ArgumentParser(prog="fer-study", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=d.data, help="FER-2013 folder or fer2013.csv")
    ap.add_argument("--arch", default=d.arch, choices=list_models())
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS), help=f"comma list from {', '.join(OPTIMIZERS)}")
    ap.add_argument("--lrs", default=",".join(f"{x:g}" for x in PAPER_LRS), help="comma list of learning rates")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--subset", type=int, default=None, help="images per class (the same for every cell)")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--schedule", default="none", choices=SCHEDULES,
                    help="none keeps the learning rate constant, so every optimizer gets the lr it is labelled with")
    ap.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d.augment)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--precision", default=d.precision, choices=["auto", "fp32", "bf16"])
    ap.add_argument("--device", default=d.device)
    ap.add_argument("--retry-failed", action="store_true", help="rerun cells that failed (e.g. diverged)")
    ap.add_argument("--out", required=True, help="study folder (cells go to OUT/cells/)")
    a = ap.parse_args(argv)
    try:
        lrs = [float(x) for x in a.lrs.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--lrs must be comma-separated numbers, got '{a.lrs}'")
    base = TrainConfig(data=a.data, arch=a.arch, epochs=a.epochs, subset=a.subset, batch_size=a.batch_size,
                       schedule=a.schedule, augment=a.augment, seed=a.seed, precision=a.precision, device=a.device)
    return StudyConfig(base=base, optimizers=[o.strip() for o in a.optimizers.split(",") if o.strip()],
                       lrs=lrs, out=Path(a.out), retry_failed=a.retry_failed)


def main(argv: list[str] | None = None) -> int:
    sc = parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    t0 = time.monotonic()
    try:
        run_study(sc, should_stop=stop.is_set)
    except (ValueError, TrainingError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"study folder: {sc.out}  ({time.monotonic() - t0:.0f} s this session)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
