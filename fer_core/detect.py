"""Finding faces: OpenCV's Haar cascade (the detector the paper pairs with its CNN) behind
a one-method interface, so another detector can be dropped in later without touching
the recogniser, the pages or the CLI.

Detection runs on a grayscale copy downscaled so its long side is at most
``max_side`` pixels: the cascade's cost grows with the pixel count, and a face the
network can read (48 px and up) survives a 2x downscale. Boxes come back in the
original image's coordinates, without duplicates (nested or heavily overlapping boxes
are merged), largest first.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import cv2
import numpy as np

Box = tuple[int, int, int, int]
"""(x, y, w, h) in pixels of the image that was passed in."""


@dataclass(frozen=True)
class DetectorSettings:
    """The knobs a user may turn (the Photo page shows them in an expander)."""

    scale_factor: float = 1.1  # image-pyramid step of the cascade: smaller finds more, slower
    min_neighbors: int = 5  # overlapping hits needed to accept a face: higher = fewer false faces
    min_size: int = 40  # smallest face, in pixels of the original image
    max_side: int = 640  # detect on a copy whose long side is at most this (0 = full size)
    # Extra context around the detected box, as a fraction of its side, each way. Measured on 239
    # FER-2013 test faces pasted into a frame: the Haar box's side is a median 1/1.04 of the face
    # crop's, and crops cut with 0-2% margin correlate best with the originals (median r = 0.69 /
    # 0.68, vs 0.47 at 10% and 0.28 at 20%): FER-2013 is framed as tightly as the cascade's box.
    margin: float = 0.02

    def __post_init__(self) -> None:
        if not self.scale_factor > 1.0:
            raise ValueError("scale_factor must be > 1")
        if self.min_neighbors < 0 or self.min_size < 1 or self.max_side < 0 or not 0 <= self.margin <= 1:
            raise ValueError("invalid detector settings")


class Detector(Protocol):
    """Anything that turns a grayscale image into face boxes."""

    def detect(self, gray: np.ndarray, settings: DetectorSettings) -> list[Box]: ...


def to_gray(image: np.ndarray, order: str = "rgb") -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 -> (H, W) uint8."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = {("rgb", 3): cv2.COLOR_RGB2GRAY, ("bgr", 3): cv2.COLOR_BGR2GRAY,
                ("rgb", 4): cv2.COLOR_RGBA2GRAY, ("bgr", 4): cv2.COLOR_BGRA2GRAY}[(order, image.shape[2])]
        return cv2.cvtColor(image, code)
    raise ValueError(f"expected a gray, RGB or RGBA image, got an array of shape {image.shape}")


def _overlap(a: Box, b: Box) -> tuple[float, float]:
    """(IoU, intersection over the smaller box)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    if inter == 0:
        return 0.0, 0.0
    return inter / (aw * ah + bw * bh - inter), inter / min(aw * ah, bw * bh)


def iou(a: Box, b: Box) -> float:
    return _overlap(a, b)[0]


def suppress_overlaps(boxes: list[Box], max_iou: float = 0.3, max_containment: float = 0.6) -> list[Box]:
    """Keep the largest of every group of overlapping or nested boxes; result largest first."""
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: b[2] * b[3], reverse=True):
        if all(i <= max_iou and c <= max_containment for i, c in (_overlap(box, k) for k in kept)):
            kept.append(box)
    return kept


@lru_cache(maxsize=4)
def _cascade_file(name: str) -> str:
    return cv2.data.haarcascades + name


class HaarDetector:
    """OpenCV's frontal-face Haar cascade.

    A ``CascadeClassifier`` keeps scratch buffers, so two threads must not share one at the
    same time (the webcam thread and every browser session detect concurrently). Loading
    one costs ~20 ms and Streamlit runs each rerun in a fresh thread, so instead of one per
    thread there is a pool: a detection borrows an idle classifier, or loads one if all are busy.
    """

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml") -> None:
        self.path = _cascade_file(cascade)
        self._pool: queue.SimpleQueue[cv2.CascadeClassifier] = queue.SimpleQueue()
        self._pool.put(self._load())  # fail now, not in the webcam thread, if the file is missing

    def _load(self) -> cv2.CascadeClassifier:
        clf = cv2.CascadeClassifier(self.path)
        if clf.empty():
            raise RuntimeError(f"cannot load the Haar cascade {self.path}")
        return clf

    def _borrow(self) -> cv2.CascadeClassifier:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            return self._load()

    def detect(self, gray: np.ndarray, settings: DetectorSettings | None = None) -> list[Box]:
        s = settings or DetectorSettings()
        h, w = gray.shape[:2]
        scale = 1.0
        if s.max_side and max(h, w) > s.max_side:
            scale = s.max_side / max(h, w)
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA)
        min_px = max(24, round(s.min_size * scale))  # the cascade's own window is 24x24
        if min(gray.shape[:2]) < min_px:
            return []
        clf = self._borrow()
        try:
            found = clf.detectMultiScale(gray, scaleFactor=s.scale_factor, minNeighbors=s.min_neighbors,
                                         minSize=(min_px, min_px))
        finally:
            self._pool.put(clf)
        boxes = [(round(x / scale), round(y / scale), round(bw / scale), round(bh / scale))
                 for x, y, bw, bh in (found if len(found) else [])]
        boxes = [(x, y, min(bw, w - x), min(bh, h - y)) for x, y, bw, bh in boxes]
        return suppress_overlaps(boxes)


def expand_box(box: Box, margin: float, width: int, height: int) -> Box:
    """A square around ``box`` grown by ``margin`` of its side each way, clipped to the image."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    x1, y1 = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def crop_faces(gray: np.ndarray, boxes: list[Box], margin: float, size: int) -> np.ndarray:
    """uint8 (N, size, size) crops, each a margin-expanded box resized with area averaging."""
    h, w = gray.shape[:2]
    out = np.empty((len(boxes), size, size), np.uint8)
    for i, box in enumerate(boxes):
        x, y, bw, bh = expand_box(box, margin, w, h)
        out[i] = cv2.resize(gray[y:y + bh, x:x + bw], (size, size), interpolation=cv2.INTER_AREA)
    return out
