"""What the app does to runs once they exist: cancel the one in progress, promote a finished one
to the model every page uses, or go back to the shipped model.

Cancel sends SIGTERM to exactly the process the launcher lock names (checked by PID, start time
and command line, so a PID reused by another program is never signalled); the worker turns it
into the loop's ``should_stop``, so the run ends ``cancelled`` with its best checkpoint kept.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from fer_core.common.process import pid_alive
from fer_core.models.active import reset_active, set_active
from fer_core.runs.errors import RunError
from fer_core.runs.lock import current_lock, remove_if_unheld
from fer_core.runs.store import load_run


def _is_worker(pid: int) -> bool:
    """The process must be one of our workers (a last guard for a lock record without a start time)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # no /proc: trust the lock
    return b"fer_core.runs.worker" in cmdline


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
        cleared = "; the stale lock was cleared" if remove_if_unheld() else ""
        raise RunError(f"PID {pid} is no longer a training worker{cleared}")
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
