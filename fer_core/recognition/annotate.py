"""Drawing results on frames: a box and 'label 87%' per face, in one colour per emotion.

The same colours are used by the pages' plotly charts (``EMOTION_COLORS``), so a green
box and a green bar always mean the same emotion. Drawing uses OpenCV primitives, which
cost well under a millisecond per face on a 640x480 frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fer_core.recognition.recognizer import Face

EMOTION_COLORS: dict[str, str] = {
    "angry": "#d62728",
    "disgust": "#8c564b",
    "fear": "#9467bd",
    "happy": "#2ca02c",
    "sad": "#1f77b4",
    "surprise": "#ff7f0e",
    "neutral": "#7f7f7f",
    "contempt": "#bcbd22",
}
"""Hex colours per emotion, for boxes and charts alike."""


def rgb_color(label: str) -> tuple[int, int, int]:
    h = EMOTION_COLORS.get(label, "#17becf").lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _color(label: str, order: str) -> tuple[int, int, int]:
    r, g, b = rgb_color(label)
    return (b, g, r) if order == "bgr" else (r, g, b)


def face_caption(face: Face) -> str:
    prefix = f"#{face.track_id} " if face.track_id is not None else ""
    return f"{prefix}{face.label} {face.confidence * 100:.0f}%"


def draw_faces(image: np.ndarray, faces: Sequence[Face], order: str = "rgb", copy: bool = True) -> np.ndarray:
    """Boxes and captions on a colour (H, W, 3) uint8 image (gray input is made colour)."""
    out = image.copy() if copy else image
    if out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)
    h, w = out.shape[:2]
    thick = max(2, round(min(h, w) / 300))
    font_scale = max(0.45, min(h, w) / 900)
    for face in faces:
        x, y, bw, bh = face.box
        color = _color(face.label, order)
        cv2.rectangle(out, (x, y), (x + bw, y + bh), color, thick)
        text = face_caption(face)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, thick - 1))
        ty = y - 4 if y - th - base - 4 >= 0 else y + bh + th + base + 4  # above the box, else below
        cv2.rectangle(out, (x, ty - th - base), (x + tw + 4, ty + base // 2), color, -1)
        cv2.putText(out, text, (x + 2, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    max(1, thick - 1), cv2.LINE_AA)
    return out


def draw_overlay(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """White-on-black status lines (FPS, latency) in the top-left corner, in place."""
    y = 8
    for line in lines:
        (tw, th), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)
        cv2.rectangle(image, (6, y), (14 + tw, y + th + base + 6), (0, 0, 0), -1)
        cv2.putText(image, line, (10, y + th + 3), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        y += th + base + 10
    return image
