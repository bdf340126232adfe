"""Test scenes with known faces: the ground truth that detection is measured against.

FER-2013's faces come pre-cropped, so a detector can only be judged on frames built around
them. A scene pastes faces at chosen sizes and in-plane angles onto a textured background
(blurred noise at several scales plus a few hard-edged shapes: a plain grey frame flatters
every detector) and returns the true boxes. The same scenes feed the detector tests, the
detection report and the pipeline benchmark, so their figures describe one thing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fer_core.recognition.detect import Box


def textured_background(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W) clutter: soft blobs, fine grain and a few rectangles and lines."""
    h, w = shape
    img = np.zeros((h, w), np.float32)
    for scale, weight in ((64, 60.0), (16, 25.0), (4, 10.0)):
        small = rng.normal(0, 1, (max(1, h // scale), max(1, w // scale))).astype(np.float32)
        img += weight * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img += 120
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = int(rng.integers(0, w)), int(rng.integers(0, h))
        shade = float(rng.integers(40, 220))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x1, y1), shade, -1)
        else:
            cv2.line(img, (x0, y0), (x1, y1), shade, int(rng.integers(2, 8)))
    return cv2.GaussianBlur(img, (0, 0), 1.0).clip(0, 255).astype(np.uint8)


def paste(canvas: np.ndarray, face: np.ndarray, center: tuple[float, float], side: int, angle: float = 0.0) -> Box:
    """Paste a gray face, resized to ``side`` and rotated by ``angle`` degrees (counter-clockwise),
    centred at ``center``; only the rotated square is drawn. Returns the face's upright box."""
    cx, cy = center
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    half = side / 2
    m = cv2.getRotationMatrix2D((half, half), angle, 1.0)
    m[:, 2] += np.array([cx - half, cy - half])
    h, w = canvas.shape[:2]
    warped = cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.full((side, side), 255, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST)
    canvas[mask > 0] = warped[mask > 0]
    return round(cx - half), round(cy - half), side, side


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # uint8 (H, W) gray, or (H, W, 3) RGB for a group of photographs
    boxes: list[Box]  # the true face boxes (upright squares around each pasted face)
    angles: list[float]


def compose_scene(faces: Sequence[np.ndarray], sides: Sequence[int], angles: Sequence[float],
                  shape: tuple[int, int] = (480, 640), seed: int = 0, max_tries: int = 200) -> Scene:
    """Faces placed at random, not overlapping (their rotated extents kept apart), on clutter."""
    rng = np.random.default_rng(seed)
    canvas = textured_background(shape, rng)
    h, w = shape
    items = list(zip(faces, sides, angles, strict=True))
    reach = [side * (abs(np.cos(np.radians(a))) + abs(np.sin(np.radians(a)))) / 2 for _, side, a in items]
    placed: dict[int, tuple[float, float]] = {}
    for i in sorted(range(len(items)), key=lambda k: -reach[k]):  # the biggest first: they are the hardest to fit
        if 2 * reach[i] > min(h, w):
            raise ValueError(f"a {items[i][1]} px face at {items[i][2]} degrees does not fit a {w}x{h} scene")
        for _ in range(max_tries):
            cx, cy = rng.uniform(reach[i], w - reach[i]), rng.uniform(reach[i], h - reach[i])
            if all(np.hypot(cx - px, cy - py) > reach[i] + reach[k] + 8 for k, (px, py) in placed.items()):
                placed[i] = (cx, cy)
                break
        else:
            raise ValueError("the faces do not fit the scene without overlapping; use fewer or smaller faces")
    boxes = [paste(canvas, face, placed[i], side, angle) for i, (face, side, angle) in enumerate(items)]
    used_angles = [float(a) for _, _, a in items]
    return Scene(canvas, boxes, used_angles)


def matches(found: Box, truth: Box, max_offset: float = 0.35, max_ratio: float = 2.0) -> bool:
    """A detection counts as a face when its centre lies within ``max_offset`` of the true side from
    the true centre and its size is within ``max_ratio`` of it: detectors frame a face differently
    (MTCNN brow-to-chin, Haar wider), so IoU alone would punish framing, not finding."""
    fx, fy, fw, fh = found
    tx, ty, tw, th = truth
    offset = np.hypot(fx + fw / 2 - tx - tw / 2, fy + fh / 2 - ty - th / 2)
    ratio = max(fw, fh) / max(tw, th)
    return offset <= max_offset * max(tw, th) and 1 / max_ratio <= ratio <= max_ratio


def score_detections(found: Sequence[Box], truth: Sequence[Box]) -> tuple[int, int]:
    """(true faces found, false boxes): each detection may claim one true face, greedily in order."""
    claimed: set[int] = set()
    false = 0
    for box in found:
        hit = next((i for i, t in enumerate(truth) if i not in claimed and matches(box, t)), None)
        if hit is None:
            false += 1
        else:
            claimed.add(hit)
    return len(claimed), false


@dataclass(frozen=True)
class Picture:
    """A real photograph (RGB) and the boxes of the faces in it."""

    image: np.ndarray
    boxes: list[Box]


def load_pictures(folder: str | os.PathLike) -> dict[str, Picture]:
    """The photographs listed in ``folder/faces.json`` (file name -> list of face boxes)."""
    folder = Path(folder)
    manifest = json.loads((folder / "faces.json").read_text())
    out = {}
    for name, boxes in manifest.items():
        bgr = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read {folder / name}")
        out[name] = Picture(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), [tuple(b) for b in boxes])
    return out


def group_scene(placements: Sequence[tuple[Picture, float, float, tuple[float, float], bool]],
                shape: tuple[int, int] = (480, 640), seed: int = 0) -> Scene:
    """Real photographs scaled, tilted and optionally mirrored onto one colour canvas: a group photo
    whose faces are known. ``placements``: (picture, scale, angle in degrees, centre, mirrored).
    The true box of a tilted face is the upright square of its side around its moved centre."""
    rng = np.random.default_rng(seed)
    canvas = cv2.cvtColor(textured_background(shape, rng), cv2.COLOR_GRAY2RGB)
    h, w = shape
    boxes, angles = [], []
    for pic, scale, angle, (cx, cy), mirrored in placements:
        img = pic.image[:, ::-1] if mirrored else pic.image
        ph, pw = img.shape[:2]
        m = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, scale)
        m[:, 2] += np.array([cx - pw / 2, cy - ph / 2])
        warped = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_AREA)
        mask = cv2.warpAffine(np.full((ph, pw), 255, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST)
        canvas[mask > 0] = warped[mask > 0]
        for bx, by, bw, bh in pic.boxes:
            if mirrored:
                bx = pw - bx - bw
            fx, fy = m @ np.array([bx + bw / 2, by + bh / 2, 1.0])
            side = max(bw, bh) * scale
            boxes.append((round(fx - side / 2), round(fy - side / 2), round(side), round(side)))
            angles.append(float(angle))
    return Scene(canvas, boxes, angles)


def photo_group(pictures: dict[str, Picture], shape: tuple[int, int] = (480, 640), seed: int = 3) -> Scene:
    """Five real faces (the two fixture portraits, scaled 0.38-0.55, tilted up to 25 degrees, some
    mirrored) on one 640x480 canvas: the group photo of the detector tests, the report and the
    fake webcam."""
    a, g = pictures["astronaut.png"], pictures["grace_hopper.jpg"]
    h, w = shape
    sx, sy = w / 640, h / 480
    return group_scene([(a, 0.45, 0, (130 * sx, 130 * sy), False), (g, 0.38, -20, (330 * sx, 140 * sy), False),
                        (a, 0.42, 25, (530 * sx, 125 * sy), True), (g, 0.3, 15, (160 * sx, 360 * sy), True),
                        (a, 0.55, -12, (450 * sx, 350 * sy), False)], shape, seed)
