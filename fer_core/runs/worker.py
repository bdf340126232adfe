"""The process behind a run launched from the app (see ``fer_core.runs.launcher``).

    python -m fer_core.runs.worker RUN_FOLDER/launch.json      (or an inline JSON object)
    python -m fer_core.runs.worker --resume RUN_FOLDER         (continue a stopped run)

It builds the ``TrainConfig``, runs the very same ``fer_core.training.loop.train`` as ``train.py``,
and turns SIGTERM (the app's Cancel) into the loop's ``should_stop``, so a cancelled run ends
with status ``cancelled`` and its best checkpoint kept. Whatever happens, it leaves a
``progress.json`` that says how the run ended (a resume that fails leaves the run ``failed`` with
the reason, not looking as it did before) and releases the launcher lock it holds.
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
from pathlib import Path  # noqa: E402

from fer_core.common.atomic import read_json, write_json  # noqa: E402
from fer_core.common.process import pid_alive  # noqa: E402
from fer_core.runs.lock import release_lock  # noqa: E402
from fer_core.runs.store import ENDED_STATES  # noqa: E402
from fer_core.training.history import ACTIVE_STATES, now_stamp  # noqa: E402
from fer_core.training.loop import TrainConfig, TrainingError, resume, train  # noqa: E402


def load_config(arg: str) -> TrainConfig:
    text = arg if arg.lstrip().startswith("{") else Path(arg).read_text()
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the run configuration must be a JSON object")
    return TrainConfig.from_dict(data)


def _mark_ended(out: str | None, message: str, status: str = "failed") -> None:
    """For ends that ``train`` or ``resume`` did not record themselves (a bad config, a resume
    refused before it took the folder over, an early cancel): the app must still see why."""
    if not out:
        return
    progress = Path(out) / "progress.json"
    current = read_json(progress)
    if current.get("status") == "finished":
        return  # a finished run stays finished (a resume of it is refused, nothing was changed)
    if current.get("pid") == os.getpid() and current.get("status") in ENDED_STATES:
        return  # this process's train or resume already said how it ended, more precisely
    if current.get("status") in ACTIVE_STATES and current.get("pid") != os.getpid() and pid_alive(current.get("pid")):
        return  # another process is training this run: its record is not ours to overwrite
    try:
        write_json(progress, {**current, "status": status, "error": message, "pid": os.getpid(),
                              "updated": now_stamp()})
    except OSError:
        pass  # a full or read-only disk: the log and the exit code still say it


def _run_folder(arg: str) -> str | None:
    """The folder a resume was asked for, if it is a run folder (never write into any other)."""
    folder = Path(arg)
    return arg if any((folder / n).is_file() for n in ("progress.json", "config.json")) else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    resuming = len(argv) == 2 and argv[0] == "--resume"
    if len(argv) != 1 and not resuming:
        print("usage: python -m fer_core.runs.worker CONFIG_JSON | --resume RUN_FOLDER", file=sys.stderr)
        return 2

    def log(message: str) -> None:
        print(message, flush=True)

    out: str | None = None  # the run folder, once known: where to record how the run ended
    try:
        if resuming:
            out = _run_folder(argv[1])
            if STOP.is_set():
                log("cancelled before training resumed")
                return 0
            folder = resume(argv[1], log=log, should_stop=STOP.is_set, show_bar=False)
        else:
            cfg = load_config(argv[0])
            out = cfg.out
            if STOP.is_set():
                log("cancelled before training started")
                _mark_ended(out, "cancelled before training started", status="cancelled")
                return 0
            folder = train(cfg, log=log, should_stop=STOP.is_set, show_bar=False)
        log(f"run folder: {folder}")
        return 0
    except (ValueError, TrainingError, OSError) as exc:
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            message = f"the disk is full; the run stopped (the last saved checkpoint is intact): {exc}"
        log(f"error: {message}")
        _mark_ended(out, message)
        return 1
    except Exception as exc:
        traceback.print_exc()
        _mark_ended(out, f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        release_lock(os.getpid())


if __name__ == "__main__":
    sys.exit(main())
