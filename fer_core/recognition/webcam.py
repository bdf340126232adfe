"""The webcam page's per-frame work, as a plain frame -> frame callable with no Streamlit in it.

streamlit-webrtc calls ``video_frame_callback`` from its own worker thread for every
frame; this object is that callback. It finds the faces, classifies all faces of the frame in one
batch, smooths each tracked face's scores, draws boxes, labels and an FPS/latency overlay, and pushes
one row per face onto a bounded thread-safe queue the page drains into its live chart. Frames exist
only in memory: nothing is written.

The frame path never waits for the detector (``asynchronous``, the default): the detector runs in a
thread of its own on the newest frame offered (``detector_worker``), and its boxes, found on a frame
that is a few frames old by the time they arrive, are carried to the frame being drawn by optical flow
(``motion``), as are the boxes between two detections. A box is therefore drawn where the face is
now, never where it was when the detector saw it. ``asynchronous=False`` detects in the frame path
itself, every ``detect_every`` frames, as video files are analysed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import replace

import av
import numpy as np

from fer_core.recognition.annotate import draw_faces, draw_overlay
from fer_core.recognition.detect import Detection, DetectorSettings, to_gray
from fer_core.recognition.detector_worker import DetectorWorker
from fer_core.recognition.motion import carried
from fer_core.recognition.recognizer import Recognizer
from fer_core.recognition.tracking import IoUTracker

WEBCAM_SETTINGS = {
    "haar": DetectorSettings(scale_factor=1.2, min_neighbors=5, min_size=64, max_side=256),
    "mtcnn": DetectorSettings(min_size=48, max_side=480),
}
"""Live-video detector settings: detection dominates the per-frame cost. Haar runs on a downscaled
frame: measured on 100 FER-2013 faces pasted at 150 px into 640x480, 256 px with a coarser pyramid
finds the same 73% as 320 px, ~30% faster. MTCNN's cost is set by its smallest face (the pyramid's
first level), not by the frame: on the fixture group photo panned and JPEG-compressed (quality 25),
a 48 px floor took 62-67 ms at 320-480 px and 74-83 ms with 40 px, every face found either way;
480 px keeps the pixels a blurry, compressed webcam face needs (docs/detection.md)."""

DETECT_EVERY = {"haar": 1, "mtcnn": 3}
"""Detect on at most every Nth frame; the boxes are carried in between. MTCNN costs more than a 30 FPS
frame budget on a small CPU: a stride of 3 keeps its thread at about one core, which leaves the other
to the frame path (``fer-bench --pipeline``)."""

SETTINGS_WIDTH = 640
"""The frame width the live settings are meant for. A browser lowers a WebRTC stream's resolution
when its CPU is busy (320x240 is common) and the faces shrink with it, so for narrower frames the
smallest face shrinks in proportion: what a user sees boxed does not depend on the browser's load."""

HISTORY_ROWS = 2000
"""Rows the queue holds before the oldest are dropped (the page drains it several times a second)."""


class WebcamProcessor:
    """Stateful per-stream callback: ``processor(av.VideoFrame) -> av.VideoFrame``.

    ``smoothing`` may be changed from the page's thread at any time (a float swap).
    """

    def __init__(self, recognizer: Recognizer, smoothing: float = 0.6, settings: DetectorSettings | None = None,
                 detect_every: int | None = None, history_rows: int = HISTORY_ROWS,
                 asynchronous: bool = True) -> None:
        name = recognizer.detector.name
        self.recognizer = recognizer
        self.settings = settings or WEBCAM_SETTINGS.get(name, recognizer.settings)
        self.detect_every = detect_every or DETECT_EVERY.get(name, 1)
        if self.detect_every < 1:
            raise ValueError("detect_every must be >= 1")
        self._carried: list[Detection] = []  # the faces as last placed: found, or carried since
        self._previous_gray: np.ndarray | None = None  # the frame they were placed on (asynchronous)
        self._last_offer = -10**9  # the frame last handed to the detector (asynchronous)
        self._worker = DetectorWorker(self._detect) if asynchronous else None
        self.frame_size = (0, 0)  # (width, height) of the latest frame
        self._carried_size = (0, 0)  # the frame size the carried detections were found in
        self._sized: tuple[int, DetectorSettings] = (0, self.settings)  # settings for the current frame width
        self.tracker = IoUTracker(smoothing=smoothing, classes=recognizer.classes)
        self.history: queue.Queue[dict] = queue.Queue(maxsize=history_rows)
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._last: float | None = None
        self.fps = 0.0  # exponential average of the incoming frame rate
        self.latency_ms = 0.0  # exponential average of the time spent per frame here
        self.frames = 0

    @property
    def smoothing(self) -> float:
        return self.tracker.smoothing

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        self.tracker.smoothing = value

    def _push(self, row: dict) -> None:
        try:
            self.history.put_nowait(row)
        except queue.Full:  # nobody is draining (page closed): drop the oldest, keep the newest
            try:
                self.history.get_nowait()
            except queue.Empty:
                pass
            self.history.put_nowait(row)

    def process(self, bgr: np.ndarray) -> np.ndarray:
        """(H, W, 3) BGR uint8 -> annotated copy; the pure core of ``__call__``."""
        start = time.perf_counter()
        with self._lock:
            if self._t0 is None:
                self._t0 = start
            if self._last is not None:
                dt = start - self._last
                if dt > 0:
                    self.fps = 1 / dt if self.fps == 0 else 0.9 * self.fps + 0.1 / dt
            self._last = start
            rec = self.recognizer
            self.frame_size = (bgr.shape[1], bgr.shape[0])
            settings = self._settings_for(bgr.shape[1])
            if self._worker is not None:
                gray = to_gray(bgr, "bgr")
                dets = self._place_faces(bgr, gray)
                crops = rec.crops(gray, dets, settings)
            elif self.frames % self.detect_every == 0 or self._carried_size != self.frame_size:
                # a new frame size (the browser changed resolution) makes the carried boxes meaningless
                dets, crops = rec.find_faces(bgr, order="bgr", whole=False, settings=settings)
                self._carried, self._carried_size = dets, self.frame_size
            else:  # the tracker carries the boxes: crop this frame where the faces were last found
                dets = self._carried
                crops = rec.crops(to_gray(bgr, "bgr"), dets, settings)
            faces = self.tracker.update(dets, rec.classify(crops))
            out = draw_faces(bgr, faces, order="bgr")
            t = round(start - self._t0, 3)
            for f in faces:
                self._push({"t": t, "track_id": f.track_id, "label": f.label, "confidence": f.confidence,
                            **f.scores})
            self.frames += 1
            lat = (time.perf_counter() - start) * 1000
            self.latency_ms = lat if self.frames == 1 else 0.9 * self.latency_ms + 0.1 * lat
            draw_overlay(out, [f"{self.fps:4.1f} FPS  {self.latency_ms:5.1f} ms/frame",
                               f"{len(faces)} face{'s' if len(faces) != 1 else ''}"])
        return out

    def _place_faces(self, bgr: np.ndarray, gray: np.ndarray) -> list[Detection]:
        """Where the faces are on this frame, without waiting: the detector's newest result carried from
        the frame it was found on, else the last boxes carried from the previous frame; then this frame
        is offered to the detector if it is free and due."""
        if self._carried_size != self.frame_size:  # the browser changed resolution: old boxes mean nothing
            self._carried, self._previous_gray, self._carried_size = [], None, self.frame_size
        result = self._worker.take()
        if result is not None and result.error is None and result.size == self.frame_size:
            dets = carried(result.detections, result.gray, gray)
        elif self._previous_gray is not None:
            dets = carried(self._carried, self._previous_gray, gray)
        else:
            dets = self._carried
        self._carried, self._previous_gray = dets, gray
        if self.frames - self._last_offer >= self.detect_every and not self._worker.busy:
            self._worker.offer(self.frames, bgr, gray)
            self._last_offer = self.frames
        return dets

    def _detect(self, bgr: np.ndarray) -> list[Detection]:
        """The detector worker's job: the faces of one frame (run in the worker's thread)."""
        settings = scaled_settings(self.settings, bgr.shape[1])
        return self.recognizer.locate(bgr, order="bgr", settings=settings)

    @property
    def boxes(self) -> list[Detection]:
        """The faces as last placed (found, or carried since): what the latest frame drew."""
        return self._carried

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until the detector has answered every frame offered so far (a bench's warm-up, a test);
        True at once when it detects in the frame path."""
        return self._worker is None or self._worker.wait_idle(timeout)

    def close(self) -> None:
        """End the detector thread (the stream ended); a closed processor detects no more faces."""
        if self._worker is not None:
            self._worker.close()

    def _settings_for(self, width: int) -> DetectorSettings:
        if width != self._sized[0]:
            self._sized = (width, scaled_settings(self.settings, width))
        return self._sized[1]

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        out = self.process(frame.to_ndarray(format="bgr24"))
        new = av.VideoFrame.from_ndarray(out, format="bgr24")
        new.pts = frame.pts
        if frame.time_base is not None:
            new.time_base = frame.time_base
        return new

    def drain(self, limit: int = 10_000) -> list[dict]:
        """Everything queued so far (called from the page's thread)."""
        rows = []
        while len(rows) < limit:
            try:
                rows.append(self.history.get_nowait())
            except queue.Empty:
                break
        return rows


def scaled_settings(settings: DetectorSettings, width: int) -> DetectorSettings:
    """The live settings for a frame ``width`` wide: narrower than ``SETTINGS_WIDTH``, the smallest face
    shrinks in proportion."""
    if width < SETTINGS_WIDTH:
        return replace(settings, min_size=max(12, round(settings.min_size * width / SETTINGS_WIDTH)))
    return settings


def ice_servers(secrets: dict | None = None, env: dict[str, str] | None = None) -> list[dict]:
    """STUN/TURN servers from Streamlit secrets (``ice_servers``) or ``FER_ICE_SERVERS`` (JSON).

    None configured -> ``[]``: the browser and server connect directly, which works on
    localhost and offline, with no wait for an unreachable public STUN server.
    Raises ValueError on a malformed setting, so the page can say exactly what is wrong.
    """
    import json
    import os

    if secrets and "ice_servers" in secrets:
        servers = secrets["ice_servers"]
        source = "secrets ice_servers"
    else:
        raw = (env if env is not None else os.environ).get("FER_ICE_SERVERS", "").strip()
        if not raw:
            return []
        try:
            servers = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"FER_ICE_SERVERS is not valid JSON ({exc})") from None
        source = "FER_ICE_SERVERS"
    if isinstance(servers, list | tuple):
        servers = [dict(s) if isinstance(s, Mapping) else s for s in servers]
    if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
        raise ValueError(f"{source} must be a list of objects with 'urls' (and optional 'username', 'credential')")
    return servers
