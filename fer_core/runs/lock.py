"""One launched run at a time: the launcher lock, ``launcher.lock`` in the runs directory.

Two tabs (or two visitors) pressing Start together must not start two trainings that fight for
the machine, and a run that crashed must not block the next one forever. So:

* Taking the lock is atomic. It is an OS file lock (``flock``, through the ``filelock``
  package) on ``launcher.lock``; only its holder reads and writes the record inside the file,
  so two starts can never both see "free" (the race of a check-then-create PID file).
* The OS lets go of the lock when the holding process dies (``kill -9``, a crash, a reboot).
* The record in the file (JSON: ``pid``, ``started``, ``run``, ``state``, ``since``) says who
  holds the lock, for the page ("a run is in progress"), for a run's ``starting`` status and
  for Cancel. The holder is identified by its PID *and* its start time (``/proc/<pid>/stat``
  field 22), so a PID that the OS has since given to another process does not look like the
  holder. A record whose holder is gone is stale: readers remove it, but only while holding
  the OS lock themselves, so they never remove the lock of a holder that has just taken it.
* The app hands the lock to the worker without a gap: it takes the lock, starts the worker
  with the locked file descriptor inherited (a ``flock`` lock belongs to the open file, which
  parent and child then share), writes the worker into the record and closes its own copy.
  From then on the worker alone holds it, until it exits.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from filelock import lock_descriptor, unlock_descriptor

from fer_core.common.paths import runs_dir
from fer_core.common.process import pid_alive
from fer_core.runs.errors import RunBusy
from fer_core.training.loop import TrainingError

LOCK_NAME = "launcher.lock"
RECORD_BYTES = 512
"""The record is padded to this size and written with one ``pwrite``: a reader never sees the file
empty in the middle of a rewrite."""

WAIT_S = 2.0
"""How long a start waits for a lock held only for an instant (a reader clearing a stale record,
another start writing its record) before it gives up."""


def lock_path() -> Path:
    """One lock per runs directory (``FER_RUNS_DIR``): runs elsewhere do not compete."""
    return runs_dir() / LOCK_NAME


# --------------------------------------------------------------------------- who holds it


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot (``/proc/<pid>/stat`` field 22); ``None``
    where there is no /proc. Together with the PID it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The command name (field 2, in parentheses) may hold spaces: count the fields after it,
        # where index 0 is field 3.
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def identity(pid: int | None = None) -> dict:
    """The record fields that name process ``pid`` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "started": process_start_time(pid)}


def holder_alive(record: dict) -> bool:
    """Is the process the record names still the one that took the lock? A record without a
    start time (written where there is no /proc) is judged by its PID alone."""
    pid = record.get("pid")
    if not pid_alive(pid):
        return False
    started = record.get("started")
    return started is None or process_start_time(pid) == started


def busy_message(held: dict) -> str:
    """What a refused start tells the user: which run holds the lock, and what to do."""
    run = held.get("run")
    what = Path(str(run)).name if run else "being set up"
    return (f"a run is already in progress ({what}, PID {held.get('pid')}); "
            "cancel it or wait until it ends")


# --------------------------------------------------------------------------- reading


def _parse(data: bytes) -> dict:
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def read_lock() -> dict | None:
    """The record as written, stale or not: ``None`` when there is no lock file, ``{}`` when its
    content is unreadable (garbage, or a file its creator has not written yet)."""
    for attempt in range(3):
        try:
            record = _parse(lock_path().read_bytes())
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        if record or attempt == 2:
            return record
        time.sleep(0.01)  # created a moment ago and not written yet: look again
    return {}


def current_lock() -> dict | None:
    """The record while its holder lives, else ``None``; a stale lock file is removed on the way."""
    record = read_lock()
    if record is None:
        return None
    if holder_alive(record):
        return record
    remove_if_unheld()
    return None


def _is_current(fd: int) -> bool:
    """Does the lock path still name the file open as ``fd``? (Its holder may have removed it since
    it was opened; a lock on a removed file guards nothing.)"""
    try:
        named = os.stat(lock_path())
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (own.st_dev, own.st_ino)


def remove_if_unheld() -> bool:
    """Remove the lock file if no process holds the OS lock on it (its record is then a leftover);
    True when it was removed. Done under that OS lock, so never while a holder has it."""
    try:
        fd = os.open(lock_path(), os.O_RDWR)
    except OSError:
        return False
    try:
        if not lock_descriptor(fd, blocking=False):
            return False
        try:
            if not _is_current(fd):
                return False
            lock_path().unlink(missing_ok=True)
            return True
        finally:
            unlock_descriptor(fd)
    except OSError:
        return False  # a filesystem without flock: leave the file alone
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- holding


def _write_record(fd: int, record: dict) -> None:
    data = (json.dumps(record) + "\n").encode().ljust(RECORD_BYTES)
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


class HeldLock:
    """The launcher lock as its holder has it: an open, ``flock``-ed descriptor of ``launcher.lock``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False

    def write(self, record: dict) -> None:
        """Replace the record (who holds the lock now, and for which run); raises ``OSError``."""
        _write_record(self.fd, record)

    def hand_over(self) -> None:
        """Close this process's descriptor *without* unlocking: the worker started with it inherited
        holds the lock on its own from now on, and the OS frees it when the worker exits."""
        if not self.closed:
            self.closed = True
            os.close(self.fd)

    def release(self) -> None:
        """Give the lock back: remove the file while it is still ours, then unlock (in this order,
        so a start that opened the file just before finds it removed and tries the new one)."""
        if self.closed:
            return
        self.closed = True
        try:
            if _is_current(self.fd):
                lock_path().unlink(missing_ok=True)
            unlock_descriptor(self.fd)
        except OSError:
            pass  # closing the descriptor below unlocks it anyway
        finally:
            os.close(self.fd)


def _try_take(fd: int, record: dict) -> dict | None:
    """Lock ``fd`` and write ``record`` into it; ``None`` on success, else the record in the way
    (``{}`` when there is none to show: the file was just replaced, or is being written)."""
    try:
        if not lock_descriptor(fd, blocking=False):
            return read_lock() or {}
    except OSError as exc:
        raise TrainingError(f"cannot lock {lock_path()}: {exc.strerror or exc}") from None
    taken = False
    try:
        if not _is_current(fd):
            return {}
        held = _parse(os.pread(fd, 64 * 1024, 0))
        if held and holder_alive(held):
            # Written without the OS lock (an older version of the app is still running that run):
            # readers count it as held, so a start must too.
            return held
        try:
            _write_record(fd, record)
        except OSError as exc:
            raise TrainingError(f"cannot write the launcher lock {lock_path()}: {exc.strerror or exc}") from None
        taken = True
        return None
    finally:
        if not taken:
            unlock_descriptor(fd)


def acquire(record: dict, wait_s: float = WAIT_S) -> HeldLock:
    """Take the lock for ``record`` (its holder, see ``identity``, and what for).

    Raises ``RunBusy`` naming the run while a live process holds the lock, and ``TrainingError``
    when the runs folder cannot be written.
    """
    path = lock_path()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise TrainingError(f"cannot write the runs folder {path.parent}: {exc.strerror or exc}") from None
        try:
            held = _try_take(fd, record)
        except BaseException:
            os.close(fd)
            raise
        if held is None:
            return HeldLock(fd)
        os.close(fd)
        if held and holder_alive(held):
            raise RunBusy(busy_message(held))
        if time.monotonic() >= deadline:
            raise RunBusy("the launcher lock is busy; try again")
        time.sleep(0.05)


def release_lock(pid: int) -> None:
    """Remove the lock if ``pid`` holds it. The worker calls this on its way out, so the page sees
    the lock gone as soon as the run has ended; the OS lock goes with the worker a moment later."""
    held = read_lock()
    if held is not None and held.get("pid") == pid:
        lock_path().unlink(missing_ok=True)
