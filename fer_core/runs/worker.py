"""The process behind a run launched from the app (see ``fer_core.runs.manager``).

    python -m fer_core.runs.worker RUN_FOLDER/launch.json      (or an inline JSON object)
    python -m fer_core.runs.worker --resume RUN_FOLDER         (continue a stopped run)

It builds the ``TrainConfig``, runs the very same ``fer_core.training.loop.train`` as ``train.py``,
and turns SIGTERM (the app's Cancel) into the loop's ``should_stop``, so a cancelled run ends
with status ``cancelled`` and its best checkpoint kept. Whatever happens, it leaves a
``progress.json`` that says how the run ended and releases the launcher lock it holds.
"""

from __future__ import annotations

import signal
import threading

# Installed before the heavy imports (torch takes seconds): a Cancel that arrives while the
# worker is still starting must end the run as "cancelled", not kill it as "interrupted".
STOP = threading.Event()
if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())

import errno  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

from fer_core.common.atomic import write_json  # noqa: E402
from fer_core.runs.manager import release_lock  # noqa: E402
from fer_core.training.loop import TrainConfig, TrainingError, resume, train  # noqa: E402


def load_config(arg: str) -> TrainConfig:
    text = arg if arg.lstrip().startswith("{") else Path(arg).read_text()
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the run configuration must be a JSON object")
    return TrainConfig.from_dict(data)


def _mark_ended(out: str | None, message: str, status: str = "failed") -> None:
    """For ends before ``train`` owns the folder (bad config, early cancel): the app must still see why."""
    if not out:
        return
    progress = Path(out) / "progress.json"
    try:
        current = json.loads(progress.read_text()) if progress.exists() else {}
    except (OSError, ValueError):
        current = {}
    if current.get("status") in ("failed", "cancelled", "finished"):
        return
    try:
        write_json(progress, {**current, "status": status, "error": message, "pid": os.getpid(),
                              "updated": datetime.now(UTC).isoformat(timespec="seconds")})
    except OSError:
        pass  # a full or read-only disk: the log and the exit code still say it


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    resuming = len(argv) == 2 and argv[0] == "--resume"
    if len(argv) != 1 and not resuming:
        print("usage: python -m fer_core.runs.worker CONFIG_JSON | --resume RUN_FOLDER", file=sys.stderr)
        return 2

    def log(message: str) -> None:
        print(message, flush=True)

    cfg: TrainConfig | None = None
    try:
        if resuming:
            if STOP.is_set():
                log("cancelled before training resumed")
                return 0
            out = resume(argv[1], log=log, should_stop=STOP.is_set, show_bar=False)
        else:
            cfg = load_config(argv[0])
            if STOP.is_set():
                log("cancelled before training started")
                _mark_ended(cfg.out, "cancelled before training started", status="cancelled")
                return 0
            out = train(cfg, log=log, should_stop=STOP.is_set, show_bar=False)
        log(f"run folder: {out}")
        return 0
    except (ValueError, TrainingError, OSError) as exc:
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            message = f"the disk is full; the run stopped (the last saved checkpoint is intact): {exc}"
        log(f"error: {message}")
        _mark_ended(cfg.out if cfg else None, message)
        return 1
    except Exception as exc:
        traceback.print_exc()
        _mark_ended(cfg.out if cfg else None, f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        release_lock(os.getpid())


if __name__ == "__main__":
    sys.exit(main())
