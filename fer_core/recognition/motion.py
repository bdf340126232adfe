"""Moving face boxes with the picture between two frames, by sparse optical flow.

Why: live video cannot wait for the face detector (MTCNN takes about 100 ms a frame on a small CPU),
so its results arrive a few frames late and are reused for the frames in between. A box found on an
old frame is where the face *was*; drawn as is on a panning or moving picture, it trails the face.
Here each box is carried to the current frame by the median motion of corner points inside it
(Lucas-Kanade on an image pyramid, about a millisecond per face), so a late detection lands where
the face is now, and the boxes between detections follow the face.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from fer_core.recognition.detect import Detection

MAX_POINTS = 24
"""Corner points tracked per face: enough for a robust median, few enough to cost well under 1 ms."""
MIN_POINTS = 4
"""With fewer points tracked, the motion is not trusted and the box stays where it was."""
_LK = dict(winSize=(15, 15), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))


def face_shift(before: np.ndarray, after: np.ndarray, box: tuple[int, int, int, int]) -> tuple[float, float] | None:
    """The (dx, dy) the picture inside ``box`` moved from ``before`` to ``after`` (grey frames of one
    size), or None when too few points could be followed (a blank or blurred face)."""
    x, y, w, h = box
    height, width = before.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    # corners found in the box alone (not on the whole frame under a mask): this runs per face per frame
    points = cv2.goodFeaturesToTrack(before[y0:y1, x0:x1], MAX_POINTS, 0.01, max(2.0, min(w, h) / 10))
    if points is None or len(points) < MIN_POINTS:
        return None
    points = points + np.float32([x0, y0])
    moved, status, _ = cv2.calcOpticalFlowPyrLK(before, after, points, None, **_LK)
    if moved is None:
        return None
    ok = status.reshape(-1) == 1
    if ok.sum() < MIN_POINTS:
        return None
    delta = (moved.reshape(-1, 2) - points.reshape(-1, 2))[ok]
    dx, dy = np.median(delta, axis=0)
    return float(dx), float(dy)


def carried(detections: list[Detection], before: np.ndarray, after: np.ndarray) -> list[Detection]:
    """``detections`` found on ``before``, moved with the picture to ``after`` (landmarks too)."""
    if before is after or not detections or before.shape != after.shape:
        return detections
    out = []
    for d in detections:
        shift = face_shift(before, after, d.box)
        if shift is None:
            out.append(d)
            continue
        dx, dy = shift
        x, y, w, h = d.box
        landmarks = None if d.landmarks is None else tuple((px + dx, py + dy) for px, py in d.landmarks)
        out.append(replace(d, box=(round(x + dx), round(y + dy), w, h), landmarks=landmarks))
    return out
