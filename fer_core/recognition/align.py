"""From a detection to the 48x48 grey crop the network reads.

FER-2013 faces are upright and tightly framed, so the crop is a square around the box,
grown by the detector's margin, and, when the detector gives eye landmarks, rotated about
the box centre so the eyes lie level. A head tilted by 30 degrees then reaches the network
as upright as its training faces (docs/detection.md measures what this buys).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from fer_core.recognition.detect import Box, Detection

MAX_ROLL = 45.0
"""Eye lines steeper than this are not corrected: past it the landmarks of a profile face are guesses."""


def expand_box(box: Box, margin: float, width: int, height: int) -> Box:
    """A square around ``box`` grown by ``margin`` of its side each way, clipped to the image."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    x1, y1 = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def roll_degrees(det: Detection) -> float:
    """The in-plane rotation of the face (positive = the eye line goes down to the right), 0 without landmarks."""
    if det.landmarks is None or len(det.landmarks) < 2:
        return 0.0
    (lx, ly), (rx, ry) = det.landmarks[0], det.landmarks[1]
    angle = math.degrees(math.atan2(ry - ly, rx - lx))
    return angle if abs(angle) <= MAX_ROLL else 0.0


def crop_face(gray: np.ndarray, det: Detection, margin: float, size: int, align: bool = True,
              lift: float = 0.0) -> np.ndarray:
    """uint8 (size, size): the margin-expanded square around the box, its centre moved up by
    ``lift`` of the box's height (along the face's upright axis), rotated upright when ``align``.

    Rotation happens at full resolution and the area-averaged resize comes last, as for the
    unaligned crop: FER-2013's faces were downscaled that way, and a warp straight to 48 px
    would alias.
    """
    angle = roll_degrees(det) if align else 0.0
    h, w = gray.shape[:2]
    x, y, bw, bh = det.box
    if abs(angle) < 1.0:  # not worth a warp, unless the square runs off the image
        cx, cy, cw, ch = expand_box((x, round(y - lift * bh), bw, bh), margin, w, h)
        if abs(cw - ch) <= 1:
            return cv2.resize(gray[cy:cy + ch, cx:cx + cw], (size, size), interpolation=cv2.INTER_AREA)
        angle = 0.0  # at the edge: the warp keeps the square (edge pixels repeated) instead of squashing it
    side = max(bw, bh) * (1 + 2 * margin)
    out = max(1, round(side))
    m = cv2.getRotationMatrix2D((x + bw / 2, y + bh / 2), angle, 1.0)
    m[:, 2] += out / 2 - np.array([x + bw / 2, y + bh / 2 - lift * bh])
    upright = cv2.warpAffine(gray, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(upright, (size, size), interpolation=cv2.INTER_AREA)


def crop_faces(gray: np.ndarray, detections: list[Detection], margin: float, size: int,
               align: bool = True) -> np.ndarray:
    """uint8 (N, size, size) crops, one per detection."""
    out = np.empty((len(detections), size, size), np.uint8)
    for i, det in enumerate(detections):
        out[i] = crop_face(gray, det, margin, size, align)
    return out
