"""Emotions over time in a video file: decode with PyAV, analyse every Nth frame, track faces.

``VideoAnalysis`` streams one ``AnalysedFrame`` at a time and keeps nothing behind it, so the
CLI's CSV of an hour-long clip needs as little memory as a second of it; the Video page
collects the same stream with ``analyse_video``. Every frame has to be decoded (inter-coded
frames depend on their predecessors), but only every ``every``-th one is converted to pixels
and analysed, which is where the time goes. Faces are followed with the IoU tracker so the
result is one time series per person. Unsupported or damaged files raise ``VideoError`` with a message for the user.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import av
import numpy as np

from fer_core.recognition.annotate import draw_faces
from fer_core.recognition.detect import DetectorSettings
from fer_core.recognition.recognizer import Face, Recognizer
from fer_core.recognition.tracking import IoUTracker

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


@dataclass
class AnalysedFrame:
    index: int  # frame number in the stream, from 0
    time_s: float
    faces: list[Face]  # with track ids
    rgb: np.ndarray  # the decoded frame (H, W, 3)
    crops: np.ndarray  # the faces' 48x48 crops, as the network read them

    def rows(self) -> list[dict]:
        """One table row per face: frame, time_s, then ``Face.to_dict()``."""
        return [{"frame": self.index, "time_s": round(self.time_s, 3), **f.to_dict()} for f in self.faces]


class VideoAnalysis:
    """Iterate over a clip's analysed frames. Opening reads the stream's description (and raises
    ``VideoError`` for anything that is not a readable video); iterating decodes and analyses.

        with VideoAnalysis("clip.mp4", recognizer, every=5) as clip:
            for frame in clip:
                ...  # frame.faces, frame.time_s; clip.progress in [0, 1]
    """

    def __init__(self, source: str | os.PathLike | BinaryIO, recognizer: Recognizer, every: int = 5,
                 smoothing: float = 0.0, settings: DetectorSettings | None = None,
                 max_seconds: float = MAX_SECONDS) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        self.recognizer, self.every, self.settings, self.max_seconds = recognizer, every, settings, max_seconds
        self.smoothing = smoothing
        self._container = _open(source)
        try:
            if not self._container.streams.video:
                raise VideoError("the file has no video stream")
            self._stream = stream = self._container.streams.video[0]
            ctx = stream.codec_context
            self.codec = ctx.name if ctx else (getattr(stream, "codec_tag", "") or "unknown")
            self.width, self.height = (ctx.width, ctx.height) if ctx else (0, 0)
            self.fps = float(stream.average_rate or stream.guessed_rate or 25)
            duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
            if duration is None and self._container.duration:
                duration = self._container.duration / av.time_base
            self.duration = duration
            stream.thread_type = "AUTO"
        except BaseException:
            self._container.close()
            raise
        self.frames_decoded = self.frames_analysed = 0
        self.truncated = False  # stopped at max_seconds or at damaged data
        self.progress = 0.0

    def __enter__(self) -> VideoAnalysis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def __iter__(self) -> Iterator[AnalysedFrame]:
        rec = self.recognizer
        tracker = IoUTracker(smoothing=self.smoothing, classes=rec.classes, max_age=3)
        total = min(self.duration or self.max_seconds, self.max_seconds)
        try:
            for frame in self._container.decode(self._stream):
                t = (float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base
                     else self.frames_decoded / self.fps)
                if t > self.max_seconds:
                    self.truncated = True
                    break
                index = self.frames_decoded
                self.frames_decoded += 1
                if index % self.every:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                dets, crops = rec.find_faces(rgb, order="rgb", whole=False, settings=self.settings)
                faces = tracker.update(dets, rec.classify(crops))
                self.frames_analysed += 1
                self.progress = min(1.0, t / total) if total else 0.0
                yield AnalysedFrame(index, t, faces, rgb, crops)
        except av.FFmpegError as exc:
            if self.frames_decoded == 0:
                named = f" '{self.codec}'" if self.codec != "unknown" else ""
                raise VideoError(f"the video cannot be decoded: unsupported codec{named} or damaged data "
                                 f"({_reason(exc)}). Try an MP4 (H.264) or WebM file.") from None
            self.truncated = True  # a damaged tail: keep what was read
        if self.frames_decoded == 0:
            raise VideoError("the video has no frames that can be decoded")
        self.progress = 1.0


def analyse_video(source: str | os.PathLike | BinaryIO, recognizer: Recognizer, every: int = 5,
                  smoothing: float = 0.0, settings: DetectorSettings | None = None,
                  max_seconds: float = MAX_SECONDS,
                  progress: Callable[[float], None] | None = None) -> VideoResult:
    """The whole clip's rows and a preview (the Video page); ``progress(fraction)`` as decoding advances."""
    rows: list[dict] = []
    best: tuple[int, AnalysedFrame | None] = (-1, None)
    reported = -1.0
    with VideoAnalysis(source, recognizer, every, smoothing, settings, max_seconds) as clip:
        for frame in clip:
            rows += frame.rows()
            if len(frame.faces) > best[0]:
                best = (len(frame.faces), frame)
            if progress and clip.progress - reported >= 0.01:  # at most ~100 UI updates per clip
                progress(clip.progress)
                reported = clip.progress
    shown = best[1]
    if progress:
        progress(1.0)
    return VideoResult(rows=rows, fps=clip.fps, frames_decoded=clip.frames_decoded,
                       frames_analysed=clip.frames_analysed, width=clip.width, height=clip.height, codec=clip.codec,
                       truncated=clip.truncated,
                       preview=draw_faces(shown.rgb, shown.faces, order="rgb") if shown else None,
                       preview_time=shown.time_s if shown else 0.0)
