"""Emotions over time in a video file: decode with PyAV, analyse every Nth frame, track faces.

Every frame has to be decoded (inter-coded frames depend on their predecessors), but
only every ``every``-th one is converted to pixels and analysed, which is where the time
goes. Faces are followed with the IoU tracker so the result is one time series per
person. Unsupported or damaged files raise ``VideoError`` with a message for the user.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import av
import numpy as np

from fer_core.annotate import draw_faces
from fer_core.detect import DetectorSettings, to_gray
from fer_core.recognizer import Face, Recognizer
from fer_core.tracking import IoUTracker

VIDEO_TYPES = ("mp4", "webm", "avi", "mov", "mkv")
MAX_SECONDS = 600.0
"""Longer clips are cut here: the page is for short clips, and analysis time grows with length."""


class VideoError(ValueError):
    """A video that cannot be analysed; the message is meant for the user."""


@dataclass
class VideoResult:
    rows: list[dict]  # one per face per analysed frame: frame, time_s, track_id, label, confidence, 7 scores
    fps: float  # the stream's nominal frame rate
    frames_decoded: int
    frames_analysed: int
    width: int
    height: int
    codec: str
    truncated: bool = False  # stopped at MAX_SECONDS
    preview: np.ndarray | None = None  # the analysed frame with the most faces, annotated (RGB)
    preview_time: float = 0.0
    notes: list[str] = field(default_factory=list)


def _open(source: str | os.PathLike | BinaryIO) -> av.container.InputContainer:
    try:
        return av.open(os.fspath(source) if isinstance(source, str | os.PathLike) else source, mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"not a video file this app can read ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__


def analyse_video(source: str | os.PathLike | BinaryIO, recognizer: Recognizer, every: int = 5,
                  smoothing: float = 0.0, settings: DetectorSettings | None = None,
                  max_seconds: float = MAX_SECONDS,
                  progress: Callable[[float], None] | None = None) -> VideoResult:
    """Analyse every ``every``-th frame; ``progress(fraction)`` is called as decoding advances."""
    if every < 1:
        raise ValueError("every must be >= 1")
    container = _open(source)
    try:
        if not container.streams.video:
            raise VideoError("the file has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        codec = ctx.name if ctx else (getattr(stream, "codec_tag", "") or "unknown")
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        if duration is None and container.duration:
            duration = container.duration / av.time_base
        total = min(duration or max_seconds, max_seconds)
        stream.thread_type = "AUTO"
        tracker = IoUTracker(smoothing=smoothing, classes=recognizer.classes, max_age=3)
        rows: list[dict] = []
        decoded = analysed = 0
        best: tuple[int, np.ndarray | None, float] = (-1, None, 0.0)
        truncated = False
        reported = -1.0
        try:
            for frame in container.decode(stream):
                t = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else decoded / fps
                if t > max_seconds:
                    truncated = True
                    break
                if decoded % every == 0:
                    rgb = frame.to_ndarray(format="rgb24")
                    faces = _analyse(rgb, recognizer, tracker, settings)
                    analysed += 1
                    for f in faces:
                        rows.append({"frame": decoded, "time_s": round(t, 3), **f.to_dict()})
                    if len(faces) > best[0]:
                        best = (len(faces), (rgb, faces), t)
                    done = min(1.0, t / total) if total else 0.0
                    if progress and done - reported >= 0.01:  # at most ~100 UI updates per clip
                        progress(done)
                        reported = done
                decoded += 1
        except av.FFmpegError as exc:
            if decoded == 0:
                named = f" '{codec}'" if codec != "unknown" else ""
                raise VideoError(f"the video cannot be decoded: unsupported codec{named} or damaged data "
                                 f"({_reason(exc)}). Try an MP4 (H.264) or WebM file.") from None
            truncated = True  # a damaged tail: keep what was read
        if decoded == 0:
            raise VideoError("the video has no frames that can be decoded")
        h, w = (ctx.height, ctx.width) if ctx else (0, 0)
    finally:
        container.close()
    preview = None
    if best[1] is not None:
        rgb, faces = best[1]
        preview = draw_faces(rgb, faces, order="rgb")
    if progress:
        progress(1.0)
    return VideoResult(rows=rows, fps=fps, frames_decoded=decoded, frames_analysed=analysed, width=w, height=h,
                       codec=codec, truncated=truncated, preview=preview, preview_time=best[2])


def _analyse(rgb: np.ndarray, recognizer: Recognizer, tracker: IoUTracker,
             settings: DetectorSettings | None) -> list[Face]:
    boxes, crops = recognizer.faces_in_gray(to_gray(rgb, "rgb"), whole=False, settings=settings)
    return tracker.update(boxes, recognizer.classify(crops))


def write_test_video(path: str | os.PathLike, frames: list[np.ndarray], fps: int = 10, codec: str = "mpeg4") -> None:
    """Gray or RGB frames -> a small video file (used by tests and the benchmark)."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=fps)
        h, w = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for img in frames:
            rgb = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
