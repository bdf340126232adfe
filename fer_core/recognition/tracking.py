"""Following faces across frames so each keeps an id and calm, smoothed scores.

Per-frame predictions flicker: the same face reads 'sad' then 'neutral' then 'sad' as
the head moves by a pixel. A greedy IoU match between this frame's boxes and the
previous ones is enough for webcam and short clips (faces move little between frames),
and an exponential moving average of each track's probabilities removes the flicker
at the cost of a short lag that the user controls (``smoothing``, 0 = none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fer_core.common.labels import EMOTIONS
from fer_core.recognition.detect import Box, Detection, iou
from fer_core.recognition.recognizer import Face


@dataclass
class Track:
    track_id: int
    box: Box
    probs: np.ndarray  # smoothed probabilities
    last_seen: int  # frame counter of the last match


class IoUTracker:
    """Greedy IoU matching + per-track EMA of the class probabilities.

    ``smoothing`` is the EMA weight of the past: new = smoothing * old + (1 - smoothing) * now.
    ``max_age`` frames without a match end a track. Not thread-safe: one per video stream.
    """

    def __init__(self, smoothing: float = 0.6, min_iou: float = 0.3, max_age: int = 10,
                 classes: tuple[str, ...] = EMOTIONS) -> None:
        self.smoothing = smoothing
        self.min_iou = min_iou
        self.max_age = max_age
        self.classes = classes
        self.tracks: dict[int, Track] = {}
        self.frame = 0
        self._next_id = 1

    @property
    def smoothing(self) -> float:
        return self._smoothing

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        if not 0.0 <= value < 1.0:
            raise ValueError("smoothing must be in [0, 1)")
        self._smoothing = float(value)

    def _match(self, boxes: list[Box]) -> dict[int, int]:
        """box index -> track id, best IoU first, each used once."""
        pairs = sorted(((iou(b, t.box), i, tid) for i, b in enumerate(boxes) for tid, t in self.tracks.items()),
                       reverse=True)
        used_b: set[int] = set()
        used_t: set[int] = set()
        out: dict[int, int] = {}
        for score, i, tid in pairs:
            if score < self.min_iou:
                break
            if i in used_b or tid in used_t:
                continue
            out[i] = tid
            used_b.add(i)
            used_t.add(tid)
        return out

    def update(self, found: Sequence[Box | Detection], probs: np.ndarray) -> list[Face]:
        """This frame's faces (detections, whose scores and landmarks carry over, or plain boxes) and
        their raw probabilities -> faces with track ids and smoothed scores."""
        detections = [d if isinstance(d, Detection) else None for d in found]
        boxes = [d.box if isinstance(d, Detection) else d for d in found]
        self.frame += 1
        matched = self._match(boxes)
        a = self._smoothing
        faces = []
        for i, box in enumerate(boxes):
            p = np.asarray(probs[i], dtype=np.float64)
            tid = matched.get(i)
            if tid is None:
                tid = self._next_id
                self._next_id += 1
                self.tracks[tid] = Track(tid, box, p.copy(), self.frame)
            else:
                t = self.tracks[tid]
                t.probs = a * t.probs + (1 - a) * p
                t.box = box
                t.last_seen = self.frame
            faces.append(Face.from_probs(box, self.tracks[tid].probs, self.classes, track_id=tid,
                                         detection=detections[i]))
        for tid in [tid for tid, t in self.tracks.items() if self.frame - t.last_seen > self.max_age]:
            del self.tracks[tid]
        return faces
