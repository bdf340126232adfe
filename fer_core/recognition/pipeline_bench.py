"""Speed of the whole recognition pipeline on this machine (``fer-bench --pipeline``).

Measures what a user waits for, per detector: per-face classification latency at batch 1,
and for 640x480 webcam frames each stage (detection, alignment and cropping, classification,
tracking and drawing) and the end-to-end cost of the webcam callback: detecting in the frame path
every few frames (as video files are analysed), and as the Webcam page runs it, with the detector in
its own thread and frames arriving at a camera's 30 FPS, where the figures are what a viewer feels:
mean, median, p90 and worst frame, the FPS shown, and box lag (how far a drawn box is from where the
face is, on a clip panning at a known speed). The frames are real faces: the fixture group photo
(five faces from two portraits) and FER-2013 test faces pasted on a plain background (with
``FER_TEST_DATA`` or the data folder present).
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

from fer_core.common.device import cpu_flags, cpu_name
from fer_core.common.labels import IMAGE_SIZE
from fer_core.recognition.detect import Box, DetectorSettings

FRAME_SHAPE = (480, 640)
FACE_SIDE = 150


def fer_test_dir() -> Path | None:
    """The FER-2013 test/ folder: ``FER_TEST_DATA``, else the app's data location."""
    from fer_core.common.paths import default_data_path

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
    from fer_core.recognition.detect import iou

    return len(found) == len(truth) and all(max(iou(t, f) for f in found) > 0.5 for t in truth)


def detectable_faces(test_dir: Path, n: int, side: int = FACE_SIDE, limit: int = 600,
                     settings: DetectorSettings | None = None, detectors: tuple[str, ...] = ("haar",)
                     ) -> list[np.ndarray]:
    """``n`` test faces (first in file order) that every one of ``detectors`` finds, each where it sits
    in ``compose_frame``'s ``n``-face layout: detectors miss some faces at some positions, and a
    benchmark or test frame must contain exactly the faces it claims."""
    from fer_core.recognition.detect import get_detector

    dets, s = [get_detector(d) for d in detectors], settings or DetectorSettings()
    chosen: list[np.ndarray] = []
    for path in sorted(test_dir.glob("*/*.jpg"))[:limit]:
        face = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if face is None or face.std() < 10:
            continue
        trial = [*chosen, face]
        frame, truth = compose_frame(trial + [None] * (n - len(trial)), side=side)
        if all(_all_found([f.box for f in det.detect(frame, s)], truth) for det in dets):
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
    from fer_core.models.active import active_weights
    from fer_core.models.checkpoint import CheckpointError, save_checkpoint
    from fer_core.models.zoo import ModelConfig, create_model
    from fer_core.recognition.recognizer import Recognizer

    try:
        return Recognizer.load(weights if weights is not None else active_weights()), ""
    except CheckpointError as exc:
        path = save_checkpoint(create_model("fernet_s").eval(), ModelConfig(arch="fernet_s"),
                               scratch / "bench.safetensors")
        return Recognizer.load(path), f" (untrained fernet_s: {exc})"


def _stats(times: list[float]) -> dict:
    return {"ms": statistics.median(times), "p90": float(np.percentile(times, 90)), "mean": statistics.fmean(times),
            "worst": max(times)}


CAMERA_FPS = 30.0
PAN_PX_PER_FRAME = 4
"""A slow pan: 120 px a second at 30 FPS, a head turning or a hand-held camera drifting."""


def panned(bgr: np.ndarray, dx: float) -> np.ndarray:
    """The frame moved ``dx`` px to the right, its edge repeated: a camera panning over the scene."""
    shift = np.float32([[1, 0, dx], [0, 1, 0]])
    return cv2.warpAffine(bgr, shift, (bgr.shape[1], bgr.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def live_run(proc, bgr: np.ndarray, seconds: float, pan: float = 0.0,
             truth: list[Box] | None = None) -> tuple[list[float], list[float], float]:
    """Frames at ``CAMERA_FPS`` through ``proc`` (the frame panning ``pan`` px per frame): the ms each
    frame took, the distance (px) of each drawn box's centre from its face's true centre (with ``truth``,
    the boxes on the unpanned frame), and the FPS a viewer sees."""
    period = 1 / CAMERA_FPS
    proc.process(bgr)  # warm-up: the first detection, which nothing before it can carry
    proc.settle()
    times, lag = [], []
    start = next_at = time.perf_counter()
    k = 0
    while time.perf_counter() - start < seconds or k < 20:
        reach = bgr.shape[1] / 4  # pan back and forth over a quarter of the frame, at a steady speed
        dx = reach - abs((k * pan) % (2 * reach) - reach)
        frame = panned(bgr, dx) if pan else bgr
        t0 = time.perf_counter()
        proc.process(frame)
        times.append((time.perf_counter() - t0) * 1000)
        if truth:
            centres = [(x + dx + w / 2, y + h / 2) for x, y, w, h in truth]
            for d in proc.boxes:
                cx, cy = d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2
                lag.append(min(float(np.hypot(cx - tx, cy - ty)) for tx, ty in centres))
        k += 1
        next_at += period
        time.sleep(max(0.0, next_at - time.perf_counter()))  # the camera's next frame; a late one is not waited for
        next_at = max(next_at, time.perf_counter())
    shown = k / (time.perf_counter() - start)
    return times, lag, shown


def _frames(test_dir: Path | None, detectors: list[str]) -> dict[str, np.ndarray]:
    """BGR 640x480 frames, by a name that ends in how many faces the frame holds."""
    from fer_core.recognition.detection_report import FIXTURES
    from fer_core.recognition.scenes import load_pictures, photo_group

    pictures = load_pictures(FIXTURES)
    group = photo_group(pictures)
    frames = {f"fixture group photo, {len(group.boxes)} faces": cv2.cvtColor(group.image, cv2.COLOR_RGB2BGR)}
    if test_dir is not None:
        from fer_core.recognition.webcam import WEBCAM_SETTINGS

        for k in (1, 3):
            layout = detectable_faces(test_dir, k, settings=WEBCAM_SETTINGS["haar"], detectors=tuple(detectors))
            if len(layout) == k:
                gray, _ = compose_frame(layout)
                frames[f"FER-2013 test frame, {k} face{'s' if k > 1 else ''}"] = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    return frames


def run(weights: Path | None = None, seconds: float = 2.0) -> tuple[list[dict], str]:
    """Timing rows (case, ms, p90, mean) and a one-line description of what was timed."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:  # holds the untrained stand-in while it is timed
        rec, note = _recognizer(weights, Path(scratch))
        return _run(rec, note, seconds)


def _run(rec, note: str, seconds: float) -> tuple[list[dict], str]:
    from fer_core.recognition.annotate import draw_faces
    from fer_core.recognition.detect import available_detectors, to_gray
    from fer_core.recognition.recognizer import Recognizer
    from fer_core.recognition.tracking import IoUTracker
    from fer_core.recognition.webcam import WebcamProcessor

    detectors = available_detectors()
    rows = []
    crop = np.full((1, IMAGE_SIZE, IMAGE_SIZE), 128, np.uint8)
    rows.append({"case": "classify 1 face (48x48, batch 1)", **_stats(_time_ms(lambda: rec.classify(crop), seconds))})
    for name, bgr in _frames(fer_test_dir(), detectors).items():
        for detector in detectors:
            r = Recognizer(rec.weights, detector=detector)
            proc = WebcamProcessor(r)
            s = proc.settings
            dets, crops = r.find_faces(bgr, order="bgr", whole=False, settings=s)
            label = f"{detector}: {name} (found {len(dets)})"
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            gray = to_gray(bgr, "bgr")
            probs = r.classify(crops)
            tracker = IoUTracker()
            stages = {
                "detection": lambda r=r, rgb=rgb, s=s: r.detect(rgb, s),
                "alignment and 48x48 crops": lambda r=r, g=gray, d=dets, s=s: r.crops(g, d, s),
                "classification": lambda r=r, c=crops: r.classify(c),
                "tracking and drawing": lambda t=tracker, d=dets, p=probs, b=bgr: draw_faces(
                    b, t.update(d, p), order="bgr"),
            }
            for stage, fn in stages.items():
                rows.append({"case": f"  {label}: {stage}", **_stats(_time_ms(fn, seconds / 4))})
            every = proc.detect_every
            stride = f", detection every {every} frames" if every > 1 else ""
            sync = WebcamProcessor(r, asynchronous=False)
            rows.append({"case": f"{label}: webcam frame end to end, detecting in the frame path{stride}",
                         **_stats(_time_ms(lambda p=sync, b=bgr: p.process(b), seconds))})
            truth = [d.box for d in dets]
            for mode, live in (("in the frame path", sync), ("in its own thread (as the Webcam page)", proc)):
                times, lag, shown = live_run(live, bgr, seconds, PAN_PX_PER_FRAME, truth)
                rows.append({"case": f"{label}: webcam at {CAMERA_FPS:.0f} FPS panning {PAN_PX_PER_FRAME} px/frame, "
                                     f"detector {mode}", **_stats(times), "shown_fps": shown,
                             "lag_px": statistics.fmean(lag) if lag else float("nan"),
                             "lag_p90_px": float(np.percentile(lag, 90)) if lag else float("nan")})
            proc.close()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    about = (f"weights {rec.weights.name}{note}, precision {rec.precision}, torch {torch.__version__}, "
             f"OpenCV {cv2.__version__}, {cpu_name()}, {os.cpu_count()} CPUs ({cpu_flags()}), "
             f"load average {load:.1f} while measuring")
    return rows, about


def format_table(rows: list[dict]) -> str:
    """Timing rows as markdown. FPS is 1000 / mean where frames come as fast as they can, and the FPS
    shown where they come at a camera's rate; box lag (px from the face's true centre, mean / p90) where
    the clip pans."""
    lines = ["| case | mean ms | median ms | p90 ms | worst ms | FPS | box lag px (mean / p90) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        fps = r.get("shown_fps", 1000 / r["mean"])
        lag = f"{r['lag_px']:.1f} / {r['lag_p90_px']:.1f}" if "lag_px" in r else ""
        lines.append(f"| {r['case']} | {r['mean']:.2f} | {r['ms']:.2f} | {r['p90']:.2f} | {r['worst']:.2f} | "
                     f"{fps:.0f} | {lag} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="fer-bench --pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=None, help="the classifier to time (default: the active model)")
    ap.add_argument("--seconds", type=float, default=2.0, help="how long to time each case")
    args = ap.parse_args(argv)
    try:
        rows, about = run(Path(args.weights) if args.weights else None, seconds=args.seconds)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(about)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
