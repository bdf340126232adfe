"""Training: one function, ``train(config)``, used by ``train.py``, the app's launcher and
the optimizer study alike. The whole loop is in ``fit`` below.

A run is a folder: ``config.json`` (everything needed to reproduce it, seed and data hash
included), ``history.csv``, ``progress.json`` (what the app polls), ``model.safetensors``
(best validation epoch), ``metrics.json`` + ``report.txt`` on the test split, and
``cleaning.json``, and while it trains ``resume.safetensors`` (see ``fer_core.training.resume``), from
which ``resume(run)`` continues an interrupted run. Every file is written atomically, so
killing the process at any moment leaves the previous best model intact.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fer_core.common.atomic import read_json, write_json, write_text
from fer_core.common.device import autocast, resolve_device, resolve_precision
from fer_core.common.paths import default_data_path, runs_dir
from fer_core.common.process import pid_alive
from fer_core.data.augment import CAMERA, AugmentConfig, augment_batch
from fer_core.data.dataset import Split, dataset_classes, validate_dataset
from fer_core.data.prepare import VAL_FRACTION, PreparedData, prepare
from fer_core.evaluation.cache import weights_hash
from fer_core.evaluation.evaluate import evaluate
from fer_core.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fer_core.models.zoo import ModelConfig, count_params, create_model, list_models
from fer_core.training import distributed
from fer_core.training.distill import teacher_probs
from fer_core.training.distributed import Ranks
from fer_core.training.history import ACTIVE_STATES, now_stamp, read_history
from fer_core.training.resume import ResumeState, clear_state, load_state, restore, save_state
from fer_core.training.targets import TARGET_MODES, face_targets, step_targets, target_loss

OPTIMIZERS = ("sgd", "sgd_nesterov", "adam", "amsgrad", "adamw", "rmsprop", "adagrad", "adadelta", "nadam")
SCHEDULES = ("none", "cosine", "onecycle", "plateau")


class TrainingError(RuntimeError):
    """A run that cannot start or had to stop; the message says why."""


class Cancelled(Exception):
    """Raised inside the loop when the caller asked the run to stop."""


@dataclass
class TrainConfig:
    data: str = field(default_factory=lambda: str(default_data_path()))
    arch: str = "fernet_s"
    optimizer: str = "sgd_nesterov"
    lr: float = 0.05
    epochs: int = 30
    batch_size: int = 128
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "onecycle"
    augment: bool = True
    camera_augment: bool = False  # with augment: also a real camera's exposure, blur and noise (augment.CAMERA)
    label_smoothing: float = 0.1
    target: str = "majority"  # what a step aims at: the label, or one of FER+'s vote targets (TARGET_MODES)
    fer2013: str | None = None  # FER-2013's own labels of FER+'s faces, from this copy (see prepare), to blend in
    fer2013_share: float = 0.3  # FER-2013's label's share of each FER+ target, with ``fer2013``
    val_fraction: float = VAL_FRACTION
    subset: int | None = None  # images per class, for short runs
    clean: bool = True
    seed: int = 0
    val_seed: int | None = None  # which validation slice; None = seed. Ensemble members share one.
    teacher: str | None = None  # weights to distil from (see fer_core.training.distill); None trains on labels alone
    distill: float = 0.5  # the teacher's share of each target, when there is a teacher
    init: str | None = None  # weights to start from (same architecture), e.g. to anneal a stopped run; None = random
    patience: int | None = None  # stop once validation accuracy has not improved for this many epochs; None = never
    device: str = "auto"
    precision: str = "auto"
    out: str | None = None

    def validate(self) -> None:
        """Refuse bad settings before any work is done."""
        problems = []
        if self.arch not in list_models():
            problems.append(f"unknown architecture '{self.arch}' (known: {', '.join(list_models())})")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"unknown optimizer '{self.optimizer}' (known: {', '.join(OPTIMIZERS)})")
        if self.schedule not in SCHEDULES:
            problems.append(f"unknown schedule '{self.schedule}' (known: {', '.join(SCHEDULES)})")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"learning rate must be a positive number, got {self.lr}")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            problems.append(f"epochs must be a whole number >= 1, got {self.epochs}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 2):
            problems.append(f"batch size must be a whole number >= 2, got {self.batch_size}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"weight decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.target not in TARGET_MODES:
            problems.append(f"unknown target '{self.target}' (known: {', '.join(TARGET_MODES)})")
        if self.val_seed is not None and not isinstance(self.val_seed, int):
            problems.append(f"validation seed must be a whole number, got {self.val_seed}")
        if not 0 < self.val_fraction < 1:
            problems.append(f"validation fraction must lie strictly between 0 and 1, got {self.val_fraction}")
        if not (isinstance(self.distill, int | float) and 0 <= self.distill <= 1):
            problems.append(f"distillation weight must lie in [0, 1], got {self.distill}")
        try:
            classes = dataset_classes(self.data)
        except ValueError:
            classes = None  # the dataset's own problem is reported below
        if self.target != "majority" and classes is not None and len(classes) == 7:
            problems.append(f"target '{self.target}' needs FER+'s votes, and {self.data} has one FER-2013 label "
                            "per face (give FER+ data, or --target majority)")
        if not (isinstance(self.fer2013_share, int | float) and 0 <= self.fer2013_share < 1):
            problems.append(f"FER-2013's share must lie in [0, 1), got {self.fer2013_share}")
        if self.fer2013 is not None:
            if classes is not None and len(classes) == 7:
                problems.append("--fer2013 blends FER-2013's labels into FER+'s votes: the data must be FER+")
            if self.target == "multitarget":
                problems.append("--fer2013 blends a label into a distribution: use it with majority, probability or "
                                "crossentropy targets")
            try:
                validate_dataset(self.fer2013)
            except ValueError as exc:
                problems.append(f"--fer2013: {exc}")
        if self.teacher is not None:
            try:
                _, teacher = load_checkpoint(self.teacher)
                if classes is not None and not set(teacher.classes) <= set(classes):
                    problems.append(f"teacher {self.teacher} answers {', '.join(teacher.classes)}, which are not "
                                    f"all classes of this data ({', '.join(classes)})")
            except CheckpointError as exc:
                problems.append(f"teacher: {exc}")
        if self.init is not None:
            try:
                _, start = load_checkpoint(self.init)
                if start.arch != self.arch:
                    problems.append(f"--init {self.init} holds a {start.arch}, not a {self.arch}")
            except CheckpointError as exc:
                problems.append(f"init: {exc}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            problems.append(f"patience must be a whole number of epochs >= 1, got {self.patience}")
        if self.subset is not None and (not isinstance(self.subset, int) or self.subset < 1):
            problems.append(f"subset must be a positive number of images per class, got {self.subset}")
        try:
            resolve_precision(self.precision, resolve_device(self.device))
        except ValueError as exc:
            problems.append(str(exc))
        try:
            validate_dataset(self.data)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------- data


def prepare_data(cfg: TrainConfig) -> PreparedData:
    """The run's data, as ``fer_core.data.prepare`` draws it from the run's settings."""
    return prepare(cfg.data, seed=cfg.seed, val_seed=cfg.val_seed, val_fraction=cfg.val_fraction, clean=cfg.clean,
                   subset=cfg.subset, fer2013=cfg.fer2013)


# --------------------------------------------------------------------------- optimisation


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Weight decay on conv/dense weights only: decaying BatchNorm scales and biases hurts."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    o, lr = cfg.optimizer, cfg.lr
    if o in ("sgd", "sgd_nesterov"):
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=o == "sgd_nesterov")
    if o in ("adam", "amsgrad"):
        return torch.optim.Adam(groups, lr=lr, amsgrad=o == "amsgrad")
    return {"adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad,
            "adadelta": torch.optim.Adadelta, "nadam": torch.optim.NAdam}[o](groups, lr=lr)


def build_schedule(cfg: TrainConfig, opt: torch.optim.Optimizer,
                   steps_per_epoch: int) -> tuple[torch.optim.lr_scheduler.LRScheduler | None, bool]:
    """Returns (scheduler or None, whether it steps per batch)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15,
                                                   cycle_momentum=False), True
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total), True
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3), False
    return None, False


# --------------------------------------------------------------------------- the run folder


class RunWriter:
    """Owns the run folder: progress for the app, history for curves, the best model."""

    HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")

    def __init__(self, out: Path, history: list[dict] | None = None, enabled: bool = True) -> None:
        self.out = out
        self.enabled = enabled  # under torchrun only rank 0 writes; the others keep the history in memory
        self.history: list[dict] = history or []
        self.progress: dict = {"status": "starting", "pid": os.getpid(), "started": now_stamp()}
        self._last_progress_write = 0.0

    def progress_due(self) -> bool:
        return time.monotonic() - self._last_progress_write > 1.0

    def update_progress(self, force: bool = False, **values: object) -> None:
        self.progress.update(values, updated=now_stamp())
        if self.enabled and (force or self.progress_due()):
            write_json(self.out / "progress.json", self.progress)
            self._last_progress_write = time.monotonic()

    def add_epoch(self, row: dict) -> None:
        self.history.append(row)
        if not self.enabled:
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.HISTORY_FIELDS)
        w.writeheader()
        w.writerows(self.history)
        write_text(self.out / "history.csv", buf.getvalue())


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return runs_dir() / f"{stamp}-{cfg.arch}-{cfg.optimizer}-lr{cfg.lr:g}"


def make_run_dir(cfg: TrainConfig) -> Path:
    out = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    if (out / "model.safetensors").exists() or (out / "config.json").exists():
        raise TrainingError(f"{out} already holds a run; choose another --out (nothing was overwritten)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(f"cannot write the run folder {out}: {exc.strerror or exc}") from None
    return out


# --------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig, log: Callable[[str], None] = print,
          should_stop: Callable[[], bool] = lambda: False, show_bar: bool = True,
          data: PreparedData | None = None) -> Path:
    """Run one training job end to end; returns its run folder.

    ``data`` lets a caller that trains many times on the same data (the optimizer study)
    prepare it once; it must come from ``prepare_data`` with this config's data settings.
    """
    cfg.validate()
    ranks = distributed.setup(cfg.device)
    if cfg.batch_size % ranks.world:
        raise ValueError(f"batch size {cfg.batch_size} must be a multiple of the {ranks.world} processes, "
                         "which share every batch")
    out = Path(ranks.on_main(lambda: str(make_run_dir(cfg))))
    writer = RunWriter(out, enabled=ranks.main)
    writer.update_progress(force=True, status="preparing")
    log = log if ranks.main else _silent
    return _supervised(out, writer, log, lambda: fit(cfg, out, writer, log, should_stop, show_bar and ranks.main,
                                                     data, ranks=ranks))


def _silent(message: str) -> None:
    """The log of every rank but 0: one process speaks for the run."""


def _supervised(out: Path, writer: RunWriter, log: Callable[[str], None], body: Callable[[], None]) -> Path:
    """How every run ends: a cancel keeps the best checkpoint so far, an error is recorded for the app."""
    try:
        body()
    except (Cancelled, KeyboardInterrupt) as stop:  # the app's Stop button, or Ctrl-C at the command line
        writer.update_progress(force=True, status="cancelled")
        log(f"cancelled; the best checkpoint so far is kept in {out}; `python train.py --resume {out}` continues it")
        if isinstance(stop, KeyboardInterrupt):
            raise
    except Exception as exc:
        writer.update_progress(force=True, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    return out


def resume(out: str | Path, log: Callable[[str], None] = print, should_stop: Callable[[], bool] = lambda: False,
           show_bar: bool = True) -> Path:
    """Continue an interrupted or cancelled run from its last finished epoch, with the settings it
    was started with, so it ends as it would have without the interruption."""
    out = Path(out)
    saved = read_json(out / "config.json")
    ranks = distributed.setup((saved.get("train") or {}).get("device", "auto"))
    progress = ranks.on_main(lambda: _resumable(out, saved, ranks))  # rank 0 checks, alone
    try:
        state = load_state(out)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    cfg = TrainConfig.from_dict({**saved["train"], "out": str(out)})
    cfg.validate()
    history = [{**row, "epoch": int(row["epoch"])} for row in read_history(out) if row["epoch"] <= state.epoch]
    writer = RunWriter(out, history, enabled=ranks.main)
    writer.progress["started"] = progress.get("started", writer.progress["started"])
    writer.update_progress(force=True, status="preparing", resumed_from_epoch=state.epoch)
    log = log if ranks.main else _silent
    log(f"resuming {out} after epoch {state.epoch}/{cfg.epochs} (best val acc so far {state.best_acc:.4f})")
    return _supervised(out, writer, log, lambda: fit(cfg, out, writer, log, should_stop, show_bar and ranks.main,
                                                     state=state, expected_data=saved.get("data"),
                                                     expected_teacher=saved.get("teacher"),
                                                     expected_init=saved.get("init"), ranks=ranks))


def _resumable(out: Path, saved: dict, ranks: Ranks) -> dict:
    """Everything that must hold before ``out`` is resumed; returns its progress record."""
    progress = read_json(out / "progress.json")
    if not saved and not progress:
        raise TrainingError(f"{out} is not a run folder")
    if progress.get("status") == "finished":
        raise TrainingError(f"{out} has already finished; there is nothing to resume")
    if progress.get("status") in ACTIVE_STATES and pid_alive(progress.get("pid")):
        raise TrainingError(f"{out} is still training (PID {progress.get('pid')})")
    try:
        state = load_state(out)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    if state is None:
        raise TrainingError(f"{out} has no saved training state: it stopped before finishing its first epoch "
                            "(or was started before runs could be resumed); start it again instead")
    if "train" not in saved:
        raise TrainingError(f"{out}/config.json is missing or unreadable; the run cannot be resumed")
    world = saved.get("world_size", 1)
    if world != ranks.world:
        how = "python train.py" if world == 1 else f"torchrun --nproc_per_node={world} train.py"
        raise TrainingError(f"{out} was trained by {world} process(es), not {ranks.world}: its data order "
                            f"follows from that; resume it with `{how} --resume {out}`")
    return progress


def _pinned(weights: str | None) -> dict | None:
    """A weights file a run depends on, by path and content, so the run can be reproduced and
    a resume can refuse a file that changed under the same name."""
    return None if weights is None else {"weights": weights, "sha256": weights_hash(weights)}


def _data_summary(data: PreparedData) -> dict:
    return {"train_hash": data.train.content_hash(), "val_hash": data.val.content_hash(),
            "test_hash": data.test.content_hash() if data.test is not None else None,
            "train": len(data.train), "val": len(data.val), "test": len(data.test or [])}


def fit(cfg: TrainConfig, out: Path, writer: RunWriter, log: Callable[[str], None],
        should_stop: Callable[[], bool], show_bar: bool, data: PreparedData | None = None,
        state: ResumeState | None = None, expected_data: dict | None = None,
        expected_teacher: dict | None = None, expected_init: dict | None = None, ranks: Ranks = Ranks()) -> None:
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    device = ranks.device(resolve_device(cfg.device))
    precision = resolve_precision(cfg.precision, device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed batch shapes: tune the kernels once
    data = data or prepare_data(cfg)
    if should_stop():
        raise Cancelled
    if data.cleaning:
        log(data.cleaning.format())
        if ranks.main:
            write_json(out / "cleaning.json", data.cleaning.to_dict())
    classes = list(data.train.classes)
    model = create_model(cfg.arch, len(classes)).to(device).to(memory_format=torch.channels_last)
    model_cfg = ModelConfig(arch=cfg.arch, num_classes=len(classes), classes=classes)
    steps, batch = ranks.steps(len(data.train), cfg.batch_size), ranks.per_rank_batch(cfg.batch_size)
    opt = build_optimizer(cfg, model)
    sched, per_step = build_schedule(cfg, opt, steps)
    summary = _data_summary(data)
    if expected_data is not None and any(summary[k] != expected_data.get(k) for k in ("train_hash", "val_hash")):
        raise TrainingError(f"the images under {cfg.data} are not the ones this run started on "
                            "(their hash differs); it cannot be resumed on them")
    teacher, init = _pinned(cfg.teacher), _pinned(cfg.init)
    for role, pinned, expected in (("teacher", teacher, expected_teacher), ("init", init, expected_init)):
        if expected is not None and pinned != expected:
            raise TrainingError(f"the {role} weights {pinned and pinned['weights']} are not the file this run "
                                "started with (their hash differs); it cannot be resumed with them")
    if cfg.init is not None:
        start, start_cfg = load_checkpoint(cfg.init)
        load_matching_classes(model, classes, start, start_cfg.classes)
    if state is None and ranks.main:
        write_json(out / "config.json", {
            "train": asdict(cfg), "model": model_cfg.to_dict(), "params": count_params(model),
            "device": str(device), "precision": precision, "torch": torch.__version__, "data": summary,
            "teacher": teacher, "init": init, "world_size": ranks.world,
        })
    log(f"{cfg.arch}: {count_params(model):,} params | train {len(data.train)} val {len(data.val)} | "
        f"{device} {precision} | run folder {out}"
        + (f" | {ranks.world} processes, {batch} images of each batch per process" if ranks.active else ""))
    images, labels = ranks.shard(data.train.images).to(device), ranks.shard(data.train.labels).to(device)
    soft = None
    if cfg.teacher:
        soft = teacher_probs(cfg.teacher, ranks.shard(data.train.images), device, precision, classes)
        log(f"teacher {cfg.teacher}: {(soft.argmax(1) == labels).float().mean():.2%} of training labels; "
            f"targets are {1 - cfg.distill:g} {cfg.target} + {cfg.distill:g} teacher")
    per_face = face_targets(data.train, cfg.target, cfg.fer2013_share if cfg.fer2013 else 0.0)
    if cfg.fer2013:
        known = data.train.fer2013_labels is not None and int((data.train.fer2013_labels >= 0).sum())
        log(f"FER-2013's label of {known or 0:,} of {len(data.train):,} training faces takes {cfg.fer2013_share:g} "
            "of their targets")
    if per_face is not None:
        per_face = ranks.shard(per_face).to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    best_acc, started, first = -1.0, time.monotonic(), 1
    if state is not None:
        try:
            restore(state, model, opt, sched, gen)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        best_acc, started, first = state.best_acc, started - state.elapsed_s, state.epoch + 1
    net = model  # the network itself: what is evaluated and saved
    if ranks.active:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                                          else None)
    for epoch in range(first, cfg.epochs + 1):
        ranks.epoch_generator(gen, cfg.seed, epoch)
        model.train()
        t0, seen = time.monotonic(), 0
        # Running sums stay on the device: reading them is a GPU sync, done about once a second
        # and at the epoch's end, not every step, so a GPU is never left idle waiting for Python.
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        order = torch.randperm(len(images), generator=gen, device=device)[: steps * batch]
        bar = tqdm(order.view(steps, -1), desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not show_bar)
        for step, idx in enumerate(bar, start=1):
            x, y = images[idx].float().div_(255), labels[idx]
            teach = None if soft is None else soft[idx]
            target = step_targets(cfg.target, y, None if per_face is None else per_face[idx], teach, cfg.distill, gen)
            if cfg.augment:
                x = augment_batch(x, gen, CAMERA if cfg.camera_augment else AugmentConfig())
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                logits = model(x)
                loss = target_loss(cfg.target, logits.float(), target, cfg.label_smoothing, teach, cfg.distill)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if per_step:
                sched.step()
            seen += len(y)
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.argmax(1) == y).sum()
            last = step == steps
            if last or (ranks.main and writer.progress_due()):  # the epoch's figures: summed over every rank
                seen_t = torch.tensor(float(seen), device=device)
                loss_all, correct_all, seen_all = ranks.sum(loss_sum, correct, seen_t) if last \
                    else (loss_sum, correct, seen_t)
                train_loss, train_acc = loss_all.item() / seen_all.item(), correct_all.item() / seen_all.item()
                if not math.isfinite(train_loss) and (last or not ranks.active):  # all ranks decide alike
                    # checked before any save: no diverged weights are kept
                    raise TrainingError(f"loss became {train_loss} by epoch {epoch} step {step}: the learning "
                                        f"rate {cfg.lr:g} is probably too high for {cfg.optimizer}")
                rate = seen * ranks.world / (time.monotonic() - t0)
                bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{train_acc:.3f}", img_s=f"{rate:.0f}")
                done = (epoch - 1) * steps + step
                writer.update_progress(status="running", epoch=epoch, epochs=cfg.epochs, step=step, steps=steps,
                                       train_loss=train_loss, train_acc=train_acc, images_per_s=rate,
                                       eta_s=(cfg.epochs * steps - done) * cfg.batch_size / rate)
            if should_stop():
                raise Cancelled
        val_acc, val_loss = ranks.on_main(lambda: _validate(net, data.val, precision))
        if sched is not None and not per_step:
            sched.step(val_acc)
        row = {"epoch": epoch, "train_loss": round(train_loss, 5), "train_acc": round(train_acc, 5),
               "val_loss": round(val_loss, 5), "val_acc": round(val_acc, 5),
               "lr": opt.param_groups[0]["lr"], "seconds": round(time.monotonic() - t0, 2)}
        writer.add_epoch(row)
        improved = val_acc > best_acc
        if improved:
            best_acc = val_acc
            if ranks.main:
                save_checkpoint(net, model_cfg, out / "model.safetensors")
        log(f"epoch {epoch}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
            f"val loss {val_loss:.4f} acc {val_acc:.4f}{'  *best' if improved else ''}  "
            f"{row['seconds']:.0f}s ({seen * ranks.world / row['seconds']:.0f} img/s)")
        writer.update_progress(force=True, best_val_acc=best_acc)
        if ranks.main:
            save_state(out, epoch=epoch, best_acc=best_acc, elapsed_s=time.monotonic() - started, model=net,
                       opt=opt, sched=sched, gen=gen)
        stale = epochs_without_improvement(writer.history)
        if cfg.patience is not None and stale >= cfg.patience and epoch < cfg.epochs:
            log(f"early stop after epoch {epoch}: validation accuracy has not improved for {stale} epochs "
                f"(best {best_acc:.4f} at epoch {epoch - stale})")
            break
    if ranks.main:
        finish(out, data, writer, log, time.monotonic() - started)
        clear_state(out)


def load_matching_classes(model: nn.Module, classes: list[str], start: nn.Module, start_classes: list[str]) -> None:
    """Start ``model`` from ``start``'s weights; where their classes differ (a 7-class FER-2013 network
    fine-tuned on FER+'s 8), the last layer's rows are copied by class name, and a class ``start`` never
    learned keeps its fresh initialisation."""
    theirs = start.state_dict()
    if classes == list(start_classes):
        model.load_state_dict(theirs)
        return
    ours = model.state_dict()
    for key, value in theirs.items():
        if key not in ours:
            raise TrainingError(f"--init weights do not fit this architecture ({key})")
        if value.shape == ours[key].shape:
            ours[key] = value
        elif value.shape[0] == len(start_classes) and ours[key].shape[0] == len(classes):  # the classifier
            for i, c in enumerate(classes):
                if c in start_classes:
                    ours[key][i] = value[start_classes.index(c)]
        else:
            raise TrainingError(f"--init weights do not fit this architecture ({key}: {tuple(value.shape)})")
    model.load_state_dict(ours)


def _validate(model: nn.Module, val: Split, precision: str) -> tuple[float, float]:
    """Validation accuracy and loss (the mean negative log-likelihood)."""
    result = evaluate(model, val, precision=precision)
    loss = F.nll_loss(torch.log(torch.from_numpy(result.probs).clamp_min(1e-8)), torch.from_numpy(result.labels))
    return result.accuracy, float(loss)


def epochs_without_improvement(history: list[dict]) -> int:
    """Epochs since the best validation accuracy, read from the history so that it survives a resume."""
    accs = [row["val_acc"] for row in history]
    return len(accs) - 1 - accs.index(max(accs)) if accs else 0


def finish(out: Path, data: PreparedData, writer: RunWriter, log: Callable[[str], None], seconds: float) -> None:
    """Score the best checkpoint on the test split (val when there is none) in fp32."""
    model, _ = load_checkpoint(out / "model.safetensors")
    split = data.test if data.test is not None else data.val
    result = evaluate(model, split)
    best = max(writer.history, key=lambda r: r["val_acc"])
    metrics = {"split": split.name, "train_seconds": round(seconds, 1), "epochs_run": len(writer.history),
               "best_epoch": best["epoch"], "best_val_acc": best["val_acc"], **result.metrics()}
    write_json(out / "metrics.json", metrics)
    write_text(out / "report.txt", f"{split.name} split\n{result.format()}\n")
    log(f"{split.name}: {result.format()}")
    writer.update_progress(force=True, status="finished", test_acc=result.accuracy,
                           macro_f1=metrics["macro_f1"], classes=list(data.train.classes))
