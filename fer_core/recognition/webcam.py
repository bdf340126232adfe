"""The webcam page's per-frame work, as a plain frame -> frame callable with no Streamlit in it.

streamlit-webrtc calls ``video_frame_callback`` from its own worker thread for every
frame; this object is that callback. It finds the faces (with MTCNN on every third frame, the
tracker carrying the boxes in between), classifies all faces in one batch, smooths each
tracked face's scores, draws boxes, labels and an FPS/latency overlay, and pushes one row
per face onto a bounded thread-safe queue the page drains into its live chart. Frames exist
only in memory: nothing is written.
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
"""Detect on every Nth frame; the tracker carries the boxes in between (faces move little in a
tenth of a second). MTCNN costs more than a 30 FPS frame budget on a small CPU, and a stride of 3
keeps the whole pipeline above 25 FPS (``fer-bench --pipeline``)."""

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
                 detect_every: int | None = None, history_rows: int = HISTORY_ROWS) -> None:
        name = recognizer.detector.name
        self.recognizer = recognizer
        self.settings = settings or WEBCAM_SETTINGS.get(name, recognizer.settings)
        self.detect_every = detect_every or DETECT_EVERY.get(name, 1)
        if self.detect_every < 1:
            raise ValueError("detect_every must be >= 1")
        self._carried: list[Detection] = []  # the last detection frame's faces, reused until the next one
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
            if self.frames % self.detect_every == 0 or self._carried_size != self.frame_size:
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

    def _settings_for(self, width: int) -> DetectorSettings:
        if width != self._sized[0]:
            s = self.settings
            if width < SETTINGS_WIDTH:
                s = replace(s, min_size=max(12, round(s.min_size * width / SETTINGS_WIDTH)))
            self._sized = (width, s)
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
