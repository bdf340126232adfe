"""The face detector in a thread of its own, always on the newest frame it was offered.

Why: on a small CPU MTCNN takes longer than a frame lasts (about 100 ms against 33 ms at 30 FPS). Run
in the frame path every few frames, it makes those frames late and the video jerks. Here the frame
path only *offers* frames; the worker detects on the newest one whenever it is free, and the frame
path picks the result up when it is there (``fer_core.recognition.motion`` carries it to the frame
being drawn). A frame offered while the worker is busy replaces the one waiting: no queue builds up,
so a result is never older than one detection plus one frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fer_core.recognition.detect import Detection


@dataclass(frozen=True)
class DetectionResult:
    """What the detector found on one offered frame."""

    frame: int  # the frame number it was offered with
    gray: np.ndarray  # that frame, grey: where the boxes are, for carrying them to a later frame
    size: tuple[int, int]  # (width, height) of that frame
    detections: list[Detection]
    seconds: float  # how long the detector took
    error: str | None = None  # the detector failed on this frame (the frame path keeps its boxes)


class DetectorWorker:
    """``offer(frame, bgr, gray)`` from the frame path, ``take()`` the newest result; ``close()`` ends it."""

    def __init__(self, detect: Callable[[np.ndarray], list[Detection]], name: str = "face-detector") -> None:
        self._detect = detect
        self._cond = threading.Condition()
        self._waiting: tuple[int, np.ndarray, np.ndarray] | None = None
        self._result: DetectionResult | None = None
        self._busy = False
        self._closed = False
        self.detections = 0  # frames detected so far
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Detecting, or a frame is waiting: offering another only replaces the waiting one."""
        with self._cond:
            return self._busy or self._waiting is not None

    def offer(self, frame: int, bgr: np.ndarray, gray: np.ndarray) -> None:
        """Hand over a frame; never blocks. The worker copies nothing: the caller must not change them."""
        with self._cond:
            if self._closed:
                return
            self._waiting = (frame, bgr, gray)
            self._cond.notify()

    def take(self) -> DetectionResult | None:
        """The newest result not taken yet, or None."""
        with self._cond:
            result, self._result = self._result, None
            return result

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until nothing is waiting or running (tests, and the end of a stream)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy or self._waiting is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._waiting = None
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._waiting is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                frame, bgr, gray = self._waiting
                self._waiting, self._busy = None, True
            start = time.perf_counter()
            try:
                found, error = self._detect(bgr), None
            except Exception as exc:  # a detector failure must not end live video: the boxes stay carried
                found, error = [], f"{type(exc).__name__}: {exc}"
            result = DetectionResult(frame, gray, (gray.shape[1], gray.shape[0]), found,
                                     time.perf_counter() - start, error)
            with self._cond:
                self._result = result
                self._busy = False
                self.detections += 1
                self._cond.notify_all()
