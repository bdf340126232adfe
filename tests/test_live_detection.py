"""The live path's detector in a thread of its own: a slow detector never holds a frame back, a late
result is drawn where the face is now, and labels, smoothing and track ids behave as before."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_core.recognition.detect import Detection
from fer_core.recognition.detector_worker import DetectorWorker
from fer_core.recognition.motion import carried, face_shift
from fer_core.recognition.recognizer import Recognizer
from fer_core.recognition.webcam import WebcamProcessor
from tests.test_recognizer import save_tiny

FACE = (200, 150, 90, 90)  # where the textured patch starts, (x, y, w, h)


def textured_frame(dx: int, dy: int = 0, seed: int = 0) -> np.ndarray:
    """A flat grey frame with a textured square (a stand-in for a face: corners to follow) moved by (dx, dy)."""
    rng = np.random.default_rng(seed)
    frame = np.full((480, 640, 3), 120, np.uint8)
    patch = cv2.GaussianBlur(rng.integers(0, 255, (FACE[3], FACE[2]), dtype=np.uint8), (3, 3), 0)
    x, y = FACE[0] + dx, FACE[1] + dy
    frame[y:y + FACE[3], x:x + FACE[2]] = patch[:, :, None]
    return frame


class FakeDetector:
    """Finds the textured patch, where it is on the frame it was given, and can be held back by a test."""

    name, margin, uses_colour = "fake", 0.0, False

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0

    def detect(self, image, settings):
        self.gate.wait(10)
        self.calls += 1
        gray = image if image.ndim == 2 else image[:, :, 0]
        ys, xs = np.nonzero(gray != 120)
        if not len(xs):
            return []
        return [Detection((int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)),
                          0.99)]


@pytest.fixture
def slow(tmp_path: Path):
    rec = Recognizer(save_tiny(tmp_path / "tiny.safetensors"), detector="haar")
    rec.detector = FakeDetector()
    return rec


def test_the_picture_inside_a_box_is_followed_between_frames() -> None:
    before, after = (cv2.cvtColor(textured_frame(dx), cv2.COLOR_BGR2GRAY) for dx in (0, 12))
    dx, dy = face_shift(before, after, FACE)
    assert dx == pytest.approx(12, abs=0.5) and dy == pytest.approx(0, abs=0.5)
    moved = carried([Detection(FACE, 0.9, ((220.0, 180.0),) * 5)], before, after)[0]
    assert moved.box == (FACE[0] + 12, FACE[1], FACE[2], FACE[3]) and moved.landmarks[0][0] == pytest.approx(232, 0.5)
    blank = np.full((480, 640), 120, np.uint8)
    assert carried([Detection(FACE)], blank, blank)[0].box == FACE  # nothing to follow: the box stays


def test_a_slow_detector_never_holds_a_frame_back(slow) -> None:
    slow.detector.gate.clear()  # the detector is stuck on its first frame
    proc = WebcamProcessor(slow)
    try:
        for _ in range(20):  # every frame returns while the detector is blocked
            out = proc.process(textured_frame(0))
            assert out.shape == (480, 640, 3)
        assert proc.frames == 20 and slow.detector.calls == 0 and proc.drain() == []
        slow.detector.gate.set()
        assert proc.settle()
        proc.process(textured_frame(0))
        assert len(proc.drain()) == 1
    finally:
        slow.detector.gate.set()
        proc.close()


def test_a_late_result_is_drawn_where_the_face_is_now(slow) -> None:
    """The detector sees the face at x=200 and answers 8 frames later, after a pan of 40 px: the box
    drawn is at x=240, where the face is on the frame shown, not where it was."""
    slow.detector.gate.clear()
    proc = WebcamProcessor(slow, detect_every=100)
    try:
        proc.process(textured_frame(0))  # offered to the detector, which is held
        for k in range(1, 9):
            proc.process(textured_frame(5 * k))
        slow.detector.gate.set()
        assert proc.settle()
        proc.process(textured_frame(45))
        (face,) = [f for f in proc.tracker.tracks.values()]
        assert abs(face.box[0] - (FACE[0] + 45)) <= 2 and abs(face.box[1] - FACE[1]) <= 2
        for k in range(10, 14):  # between results, the box keeps following the pan
            proc.process(textured_frame(5 * k))
        assert abs(proc._carried[0].box[0] - (FACE[0] + 65)) <= 3
    finally:
        slow.detector.gate.set()
        proc.close()


def test_tracks_labels_and_smoothing_behave_as_before(slow) -> None:
    proc = WebcamProcessor(slow, smoothing=0.5)
    try:
        proc.process(textured_frame(0))
        assert proc.settle()
        for k in range(6):
            proc.process(textured_frame(2 * k))
        rows = proc.drain()
        assert len(rows) == 6 and {r["track_id"] for r in rows} == {1}  # one face, one identity throughout
        assert all(abs(sum(r[c] for c in slow.classes) - 1) < 1e-6 for r in rows)
        assert all(r["label"] in slow.classes for r in rows)
    finally:
        proc.close()


def test_a_failing_detector_keeps_the_video_going(slow) -> None:
    def broken(image, settings):
        raise RuntimeError("detector down")

    slow.detector.detect = broken
    proc = WebcamProcessor(slow)
    try:
        for _ in range(5):
            proc.process(textured_frame(0))
            proc.settle()
        assert proc.frames == 5 and proc.drain() == []
    finally:
        proc.close()


def test_the_worker_always_takes_the_newest_frame() -> None:
    seen: list[int] = []
    gate, started = threading.Event(), threading.Event()

    def detect(bgr):
        started.set()
        gate.wait(5)
        seen.append(int(bgr[0, 0, 0]))
        return []

    worker = DetectorWorker(detect)
    try:
        frame = lambda v: np.full((4, 4, 3), v, np.uint8)  # noqa: E731
        worker.offer(0, frame(0), frame(0)[:, :, 0])
        assert started.wait(5) and worker.busy
        for v in (1, 2, 3):  # offered while the first is detected: only the newest waits
            worker.offer(v, frame(v), frame(v)[:, :, 0])
        gate.set()
        assert worker.wait_idle()
        assert seen[0] == 0 and seen[-1] == 3 and len(seen) == 2
        assert worker.take().frame == 3
        assert worker.take() is None
    finally:
        worker.close()
