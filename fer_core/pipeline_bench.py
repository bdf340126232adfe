"""Speed of the whole recognition pipeline on this machine (``python -m fer_core.bench --pipeline``).

Measures what a user waits for: per-face classification latency at batch 1, and the
end-to-end time of one 640x480 webcam frame with 1 and 3 faces: gray conversion,
detection, cropping, one classification batch, tracking/smoothing and drawing, exactly
the webcam callback's path. The test frames are real FER-2013 faces, upscaled and pasted
on a plain background, because the Haar cascade finds nothing in random pixels.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from fer_core import IMAGE_SIZE
from fer_core.detect import Box, DetectorSettings
from fer_core.device import cpu_name

FRAME_SHAPE = (480, 640)
FACE_SIDE = 150


def fer_test_dir() -> Path | None:
    """The FER-2013 test/ folder: ``FER_TEST_DATA``, else the app's data location."""
    from fer_core.paths import default_data_path

    for root in (os.environ.get("FER_TEST_DATA"), default_data_path()):
        if root and (Path(root) / "test").is_dir():
            return Path(root) / "test"
    return None


def compose_frame(faces: list[np.ndarray | None], shape: tuple[int, int] = FRAME_SHAPE, side: int = FACE_SIDE,
                  background: int = 128) -> tuple[np.ndarray, list[Box]]:
    """Gray faces upscaled to ``side`` px, evenly spaced in a row on a plain frame; returns (frame, boxes).

    ``None`` leaves its slot empty (and gets no box), so a layout can be filled one face at a time.
    """
    h, w = shape
    frame = np.full((h, w), background, np.uint8)
    n = len(faces)
    if n * side > w or side > h:
        raise ValueError(f"{n} faces of {side} px do not fit a {w}x{h} frame")
    gap = (w - n * side) // (n + 1)
    y = (h - side) // 2
    boxes = []
    for i, face in enumerate(faces):
        if face is None:
            continue
        x = gap + i * (side + gap)
        frame[y:y + side, x:x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        boxes.append((x, y, side, side))
    return frame, boxes


def _all_found(found: list[Box], truth: list[Box]) -> bool:
    from fer_core.detect import iou

    return len(found) == len(truth) and all(max(iou(t, f) for f in found) > 0.5 for t in truth)


def detectable_faces(test_dir: Path, n: int, side: int = FACE_SIDE, limit: int = 600,
                     settings: DetectorSettings | None = None) -> list[np.ndarray]:
    """``n`` test faces (first in file order) that the Haar cascade finds, each where it sits in
    ``compose_frame``'s ``n``-face layout: the cascade misses some faces at some positions, and a
    benchmark or test frame must contain exactly the faces it claims."""
    from fer_core.detect import HaarDetector

    det, s = HaarDetector(), settings or DetectorSettings()
    chosen: list[np.ndarray] = []
    for path in sorted(test_dir.glob("*/*.jpg"))[:limit]:
        face = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if face is None or face.std() < 10:
            continue
        trial = [*chosen, face]
        frame, truth = compose_frame(trial + [None] * (n - len(trial)), side=side)
        if _all_found(det.detect(frame, s), truth):
            chosen = trial
            if len(chosen) == n:
                break
    return chosen


def _time_ms(fn: Callable[[], object], min_seconds: float = 2.0) -> list[float]:
    for _ in range(3):
        fn()  # warm-up: oneDNN picks its kernels on the first calls
    times: list[float] = []
    t_end = time.perf_counter() + min_seconds
    while time.perf_counter() < t_end or len(times) < 20:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _recognizer(weights: Path | None, scratch: Path):
    """The given or active model; without one, an untrained fernet_s (the shipped architecture):
    weights do not change the speed, so the figures hold before any model is trained."""
    from fer_core.active import active_weights
    from fer_core.checkpoint import CheckpointError, save_checkpoint
    from fer_core.models import ModelConfig, create_model
    from fer_core.recognizer import Recognizer

    try:
        return Recognizer.load(weights if weights is not None else active_weights()), ""
    except CheckpointError as exc:
        path = save_checkpoint(create_model("fernet_s").eval(), ModelConfig(arch="fernet_s"),
                               scratch / "bench.safetensors")
        return Recognizer.load(path), f" (untrained fernet_s: {exc})"


def run(weights: Path | None = None, seconds: float = 2.0) -> tuple[list[dict], str]:
    """Timing rows and a one-line description of what was timed."""
    import tempfile

    from fer_core.webcam import WEBCAM_SETTINGS, WebcamProcessor

    test_dir = fer_test_dir()
    if test_dir is None:
        raise FileNotFoundError("FER-2013 test/ not found (set FER_TEST_DATA): the benchmark frames are real faces")
    with tempfile.TemporaryDirectory() as scratch:
        rec, note = _recognizer(weights, Path(scratch))
    layouts = {k: detectable_faces(test_dir, k, settings=WEBCAM_SETTINGS) for k in (1, 3)}
    if any(len(v) < k for k, v in layouts.items()):
        raise RuntimeError("too few detectable faces in the test data")
    rows = []
    crop = cv2.resize(layouts[1][0], (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)[None]
    t = _time_ms(lambda: rec.classify(crop), seconds)
    rows.append({"case": "classify 1 face (48x48, batch 1)", "ms": statistics.median(t), "p90": np.percentile(t, 90)})
    for k in (1, 3):
        gray, _ = compose_frame(layouts[k])
        bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
        proc = WebcamProcessor(rec)
        found = len(rec.faces_in_gray(gray, whole=False, settings=proc.settings)[0])
        t = _time_ms(lambda p=proc, b=bgr: p.process(b), seconds)
        rows.append({"case": f"640x480 frame, {k} face{'s' if k > 1 else ''} (found {found}): detect+classify+draw",
                     "ms": statistics.median(t), "p90": np.percentile(t, 90)})
        t = _time_ms(lambda g=gray, s=proc.settings: rec.detect(g, s), seconds)
        rows.append({"case": f"  of which detection ({k} face{'s' if k > 1 else ''})", "ms": statistics.median(t),
                     "p90": np.percentile(t, 90)})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    about = (f"weights {rec.weights.name}{note}, precision {rec.precision}, torch {torch.__version__}, "
             f"OpenCV {cv2.__version__}, {cpu_name()}, {os.cpu_count()} CPUs, load average {load:.1f} while measuring")
    return rows, about


def format_table(rows: list[dict]) -> str:
    lines = ["| case | median ms | p90 ms | FPS (1000 / median) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['case']} | {r['ms']:.2f} | {r['p90']:.2f} | {1000 / r['ms']:.0f} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    try:
        rows, about = run()
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(about)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
