"""The app's run manager: list runs, start one in the background, cancel it, resume it, promote it.

A run started from the browser is an ordinary ``fer_core.training.loop.train`` job in its own
process (``python -m fer_core.runs.worker``), detached into its own session so that it
outlives the Streamlit script, the browser tab and even a restart of the server. The
browser only ever reads the run folder (``progress.json``, ``history.csv``), so nothing
about the run lives in a Streamlit thread.

One launched run at a time: ``runs/launcher.lock`` holds the worker's PID. A second start
is refused while that PID is alive; a lock left by a dead process (``kill -9``, a crash,
a reboot) is recognised as stale and cleared. Cancel sends SIGTERM to exactly that PID;
the worker turns it into the loop's ``should_stop``, so the run ends ``cancelled`` with its
best checkpoint kept.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from fer_core.models.active import reset_active, set_active
from fer_core.runs.app_settings import AppSettings, load_settings
from fer_core.common.atomic import read_json, remove_orphaned_temps, write_json
from fer_core.common.paths import PROJECT_ROOT, runs_dir
from fer_core.common.process import pid_alive
from fer_core.training.history import ACTIVE_STATES, read_history
from fer_core.training.resume import STATE_FILE
from fer_core.training.loop import TrainConfig, TrainingError, make_run_dir

LOCK_NAME = "launcher.lock"
LAUNCH_NAME = "launch.json"
LOG_NAME = "train.log"
MIN_FREE_BYTES = 100 * 2**20
"""A run writes a few checkpoints of at most ~30 MB each, atomically (old + new at once)."""

STARTUP_SECONDS = 8.0
"""Loading FER-2013 from the decoded cache and cleaning it, measured ~6-8 s on this 2-core machine."""

_start_mutex = threading.Lock()  # Streamlit serves every session from one process


class RunError(RuntimeError):
    """A run-management request that cannot be done; the message says why."""


class RunBusy(RunError):
    """Another launched run is still alive."""


# --------------------------------------------------------------------------- processes


def _is_worker(pid: int) -> bool:
    """Guards cancel against PID reuse: the process must be one of our workers."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # no /proc: trust the lock
    return b"fer_core.runs.worker" in cmdline


# --------------------------------------------------------------------------- the lock


def lock_path() -> Path:
    return runs_dir() / LOCK_NAME


def read_lock() -> dict | None:
    """The lock's content, ``{}`` for an unreadable lock, ``None`` when there is none."""
    try:
        data = json.loads(lock_path().read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _create_lock(info: dict) -> bool:
    """Create the lock with its content in one step (link of a finished temp file); False if it exists."""
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lock.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def current_lock() -> dict | None:
    """The live lock, or None; a lock whose PID is dead is stale and is removed here."""
    held = read_lock()
    if held is None:
        return None
    if pid_alive(held.get("pid")):
        return held
    lock_path().unlink(missing_ok=True)
    return None


def _acquire(info: dict) -> None:
    for _ in range(2):
        try:
            if _create_lock(info):
                return
        except OSError as exc:
            raise TrainingError(f"cannot write the runs folder {lock_path().parent}: {exc.strerror or exc}") from None
        held = current_lock()
        if held is not None:
            raise RunBusy(f"a run is already in progress ({Path(str(held.get('run', '?'))).name}, "
                          f"PID {held.get('pid')}); cancel it or wait until it ends")
    raise RunBusy("the launcher lock is busy; try again")


def release_lock(pid: int) -> None:
    """Remove the lock only if ``pid`` holds it (the worker calls this when it ends)."""
    held = read_lock()
    if held is not None and held.get("pid") == pid:
        lock_path().unlink(missing_ok=True)


# --------------------------------------------------------------------------- runs on disk


@dataclass
class Run:
    """What the app shows about one run folder."""

    path: Path
    status: str
    progress: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    started: float = 0.0

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def error(self) -> str | None:
        if self.status == "interrupted":
            return "the training process died without finishing (killed or crashed)"
        return self.progress.get("error")

    @property
    def best_val_acc(self) -> float | None:
        return self.metrics.get("best_val_acc", self.progress.get("best_val_acc"))

    @property
    def test_acc(self) -> float | None:
        return self.metrics.get("accuracy", self.progress.get("test_acc"))

    @property
    def has_model(self) -> bool:
        return (self.path / "model.safetensors").is_file()

    @property
    def resumable(self) -> bool:
        """Stopped after at least one finished epoch, so it can go on from there."""
        return self.status in ("cancelled", "interrupted", "failed") and (self.path / STATE_FILE).is_file()

    @property
    def launched(self) -> bool:
        """Started by this launcher (so it may be cancelled from the app)."""
        return (self.path / LAUNCH_NAME).is_file()


def _timestamp(iso: object, fallback: float) -> float:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return fallback


def resolve_status(progress: dict, run: Path | None = None) -> str:
    """The status to show: an active status whose process is gone is ``interrupted``.

    A launched run has no progress file for its first seconds: it is ``starting`` while the
    live lock names it, else its worker died before writing anything.
    """
    status = progress.get("status")
    if status is None:
        held = read_lock() or {}
        mine = run is not None and bool(held.get("run")) and Path(str(held["run"])).resolve() == run.resolve()
        return "starting" if mine and pid_alive(held.get("pid")) else "interrupted"
    if status in ACTIVE_STATES and not pid_alive(progress.get("pid")):
        return "interrupted"
    return str(status)


def load_run(path: Path) -> Run:
    progress = read_json(path / "progress.json")
    config = read_json(path / "config.json").get("train") or read_json(path / LAUNCH_NAME)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    status = resolve_status(progress, path)
    if status == "interrupted":
        remove_orphaned_temps(path)  # its worker is gone: a kill mid-write leaves only a temp file
    return Run(path=path, status=status, progress=progress,
               config=config, metrics=read_json(path / "metrics.json"),
               started=_timestamp(progress.get("started"), mtime))


def list_runs(root: Path | None = None) -> list[Run]:
    """Every run folder under ``root`` (default: the runs directory), newest first."""
    root = root or runs_dir()
    if not root.is_dir():
        return []
    found = [load_run(p) for p in root.iterdir()
             if p.is_dir() and any((p / n).is_file() for n in ("progress.json", "config.json", LAUNCH_NAME))]
    return sorted(found, key=lambda r: r.started, reverse=True)


# --------------------------------------------------------------------------- start / cancel / promote


def _check_space(folder: Path) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise TrainingError(f"cannot inspect the disk of {folder}: {exc.strerror or exc}") from None
    if free < MIN_FREE_BYTES:
        raise TrainingError(f"the disk holding {folder} is (nearly) full: {free / 2**20:.0f} MB free, "
                            f"a run needs at least {MIN_FREE_BYTES // 2**20} MB")


def check_config(cfg: TrainConfig, settings: AppSettings | None = None) -> list[str]:
    """Every reason not to start ``cfg`` (deployment caps, bad hyper-parameters, bad data path)."""
    settings = settings or load_settings()
    problems = settings.check(cfg.epochs, cfg.subset)
    try:
        cfg.validate()
    except ValueError as exc:
        problems.extend(str(exc).split("; "))
    return problems


def start_run(cfg: TrainConfig, settings: AppSettings | None = None) -> Path:
    """Validate, take the lock, create the run folder and start the worker; returns the folder.

    Raises ``ValueError`` for bad settings or data, ``RunBusy`` while another run is alive,
    ``TrainingError`` for an unwritable folder or a full disk. Nothing is left behind on refusal.
    """
    problems = check_config(cfg, settings)
    if problems:
        raise ValueError("; ".join(problems))
    with _launching():
        out = make_run_dir(cfg)
        cfg.out = str(out)
        _check_space(out)
        try:
            write_json(out / LAUNCH_NAME, asdict(cfg))
        except OSError as exc:
            raise TrainingError(f"cannot write the run folder {out}: {exc.strerror or exc}") from None
        _spawn_worker(out, [str(out / LAUNCH_NAME)])
    return out


def resume_run(run: Path, settings: AppSettings | None = None) -> Path:
    """Continue a stopped run in the background from its last finished epoch (see ``training.resume``),
    under the same one-run lock as ``start_run``."""
    info = load_run(Path(run))
    if not info.resumable:
        why = "it has finished" if info.status == "finished" else (
            f"it is {info.status}" if info.status in ACTIVE_STATES else "it has no saved state after an epoch")
        raise RunError(f"{info.name} cannot be resumed: {why}")
    problems = (settings or load_settings()).check(int(info.config.get("epochs", 0)), info.config.get("subset"))
    if problems:
        raise ValueError("; ".join(problems))
    with _launching():
        _check_space(info.path)
        _spawn_worker(info.path, ["--resume", str(info.path)])
    return info.path


@contextmanager
def _launching() -> Iterator[None]:
    """Hold the launcher lock while a worker is set up; give it back if that fails (the worker,
    once started, takes the lock over in ``_spawn_worker``)."""
    with _start_mutex:
        _acquire({"pid": os.getpid(), "run": None, "state": "starting", "since": _now()})
        try:
            yield
        except BaseException:
            release_lock(os.getpid())
            raise


def _spawn_worker(out: Path, args: list[str]) -> None:
    """Start the detached worker, logging into the run folder, and hand it the lock."""
    try:
        log = open(out / LOG_NAME, "ab")  # handed to the child, closed below
    except OSError as exc:
        raise TrainingError(f"cannot write the run folder {out}: {exc.strerror or exc}") from None
    with log:
        try:
            proc = subprocess.Popen([sys.executable, "-m", "fer_core.runs.worker", *args],
                                    cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise TrainingError(f"cannot start the training process: {exc}") from None
    try:
        write_json(lock_path(), {"pid": proc.pid, "run": str(out), "state": "running", "since": _now()})
    except OSError as exc:
        proc.terminate()  # never leave a run going that the lock does not name
        raise TrainingError(f"cannot write the launcher lock {lock_path()}: {exc.strerror or exc}") from None


def cancel_run(run: Path | None = None, wait_s: float = 0.0) -> int:
    """SIGTERM the launched run (only it, by its PID); returns that PID.

    With ``wait_s`` > 0, waits up to that long for the process to end.
    """
    held = current_lock()
    if held is None or not isinstance(held.get("pid"), int) or held.get("run") is None:
        raise RunError("no launched run is in progress")
    if run is not None and Path(held["run"]).resolve() != Path(run).resolve():
        raise RunError(f"{Path(run).name} is not the run in progress ({Path(held['run']).name})")
    pid = held["pid"]
    if not _is_worker(pid):
        lock_path().unlink(missing_ok=True)
        raise RunError(f"PID {pid} is no longer a training worker; the stale lock was cleared")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while wait_s > 0 and time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    return pid


def promote(run: Path) -> Path:
    """Make a finished run's best checkpoint the app's active model (atomic switch)."""
    info = load_run(Path(run))
    if info.status != "finished":
        raise RunError(f"only a finished run can be promoted; {info.name} is {info.status}")
    return set_active(info.path)


def restore_default() -> None:
    """Go back to the shipped model."""
    reset_active()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- duration estimate


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
    """Images per class of each split, from file names or CSV rows only (no decoding)."""
    from fer_core.common.labels import EMOTIONS
    from fer_core.data.dataset import CSV_USAGE_TO_SPLIT, IMAGE_SUFFIXES, SPLITS, resolve_source

    src = resolve_source(data)
    counts = {s: [0] * len(EMOTIONS) for s in SPLITS}
    if src.is_file():
        with open(src, newline="", encoding="utf-8", errors="replace") as fh:
            next(fh, None)
            for line in fh:
                label, _, rest = line.partition(",")
                split = CSV_USAGE_TO_SPLIT.get(rest.rsplit(",", 1)[-1].strip())
                if split and label.isdigit() and int(label) < len(EMOTIONS):
                    counts[split][int(label)] += 1
    else:
        for split in SPLITS:
            for i, name in enumerate(EMOTIONS):
                d = src / split / name
                if d.is_dir():
                    counts[split][i] = sum(1 for f in os.scandir(d) if f.name.lower().endswith(IMAGE_SUFFIXES))
    return {s: tuple(c) for s, c in counts.items() if sum(c)}


def measured_rate(arch: str, runs: list[Run] | None = None) -> float | None:
    """Median training throughput (images/s) of the latest runs of ``arch`` on this machine."""
    rates = [r.progress["images_per_s"] for r in (runs if runs is not None else list_runs())
             if r.config.get("arch") == arch and isinstance(r.progress.get("images_per_s"), int | float)
             and r.progress["images_per_s"] > 0][:5]
    return statistics.median(rates) if rates else None


@lru_cache(maxsize=16)
def benchmark_rate(arch: str, batch: int = 32, steps: int = 3) -> float:
    """Training images/s of ``arch`` measured now on random data (a few small steps, well under a second)."""
    from fer_core.evaluation.bench import training_step
    from fer_core.common.device import resolve_device, resolve_precision
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
