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
import time
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
"""Longer clips are cut here by default: the page is for short clips, and analysis time grows with length."""


class VideoError(ValueError):
    """A video that cannot be analysed; the message is meant for the user."""


class VideoLimitError(VideoError):
    """A video refused by one of its ``VideoLimits``; ``limit`` names which (a ``VideoLimits`` field)."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class VideoLimits:
    """How much one clip may cost. A clip over ``max_pixels`` a frame is refused before any frame is
    decoded; the other limits end the analysis early, keeping what was analysed (``VideoResult.stopped``)."""

    max_seconds: float = MAX_SECONDS  # of the clip's own time
    max_frames: int | None = None  # frames analysed (every Nth frame counts, the skipped ones do not)
    max_pixels: int | None = None  # width x height of a frame
    max_wall_seconds: float | None = None  # time the analysis may take


STOP_REASONS = {"max_seconds": "the length limit", "max_frames": "the limit on analysed frames",
                "max_wall_seconds": "the time limit", "stopped": "your request", "damaged": "damaged data",
                "max_pixels": "the frame-size limit (the frames grew larger mid-clip)"}
"""``VideoResult.stopped`` -> the words for it."""


@dataclass
class VideoResult:
    """A clip's analysis. Filled in place as frames are analysed, so a caller that is interrupted
    (a Stop button) still holds every row analysed so far."""

    rows: list[dict] = field(default_factory=list)  # one per face per analysed frame: frame, time_s, track_id, ...
    fps: float = 0.0  # the stream's nominal frame rate
    frames_decoded: int = 0
    frames_analysed: int = 0
    width: int = 0
    height: int = 0
    codec: str = ""
    stopped: str | None = None  # why the analysis ended before the clip did: a key of STOP_REASONS
    last_time_s: float = 0.0  # the clip time the analysis reached
    preview: np.ndarray | None = None  # the analysed frame with the most faces, annotated (RGB)
    preview_time: float = 0.0
    preview_faces: int = -1
    notes: list[str] = field(default_factory=list)


_MOV_ATOMS = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"}


def _demuxer(head: bytes) -> str | None:
    """The FFmpeg demuxer of the container (of VIDEO_TYPES) that a file's first 12 bytes announce, or
    None. Named to FFmpeg, it is the only one that parses the file: no other demuxer (playlists that
    fetch URLs, concat scripts that name other files, image sequences) ever reads an upload."""
    if head[4:8] in _MOV_ATOMS:
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska and WebM
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def _head(source: str | os.PathLike | BinaryIO) -> bytes:
    try:
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as fh:
                return fh.read(12)
        position = source.tell()
        head = source.read(12)
        source.seek(position)
        return head
    except (OSError, ValueError) as exc:  # unreadable, or a stream that cannot seek back
        raise VideoError(f"cannot read the video ({_reason(exc)})") from None


def _open(source: str | os.PathLike | BinaryIO) -> av.container.InputContainer:
    demuxer = _demuxer(_head(source))
    if demuxer is None:
        raise VideoError(f"not a video file this app can read (accepted: {', '.join(VIDEO_TYPES)})")
    try:
        return av.open(os.fspath(source) if isinstance(source, str | os.PathLike) else source, mode="r",
                       format=demuxer)
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
                 limits: VideoLimits = VideoLimits(), should_stop: Callable[[], bool] = lambda: False) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        self.recognizer, self.every, self.settings, self.limits = recognizer, every, settings, limits
        self.smoothing, self.should_stop = smoothing, should_stop
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
            _check_resolution(self.width, self.height, limits.max_pixels)
            stream.thread_type = "AUTO"
        except BaseException:
            self._container.close()
            raise
        self.frames_decoded = self.frames_analysed = 0
        self.stopped: str | None = None  # why iteration ended before the clip did (a key of STOP_REASONS)
        self.time_s = 0.0
        self.progress = 0.0

    def __enter__(self) -> VideoAnalysis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def _limit_reached(self, t: float, started: float) -> str | None:
        lim = self.limits
        if t > lim.max_seconds:
            return "max_seconds"
        if lim.max_frames is not None and self.frames_analysed >= lim.max_frames:
            return "max_frames"
        if lim.max_wall_seconds is not None and time.monotonic() - started > lim.max_wall_seconds:
            return "max_wall_seconds"
        if self.should_stop():
            return "stopped"
        return None

    def __iter__(self) -> Iterator[AnalysedFrame]:
        rec = self.recognizer
        tracker = IoUTracker(smoothing=self.smoothing, classes=rec.classes, max_age=3)
        total = min(self.duration or self.limits.max_seconds, self.limits.max_seconds)
        started = time.monotonic()
        origin: float | None = None  # the first frame's time: streams need not start at 0 (cut or muxed clips)
        try:
            for frame in self._container.decode(self._stream):
                stamp = (float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base
                         else None)
                if origin is None and stamp is not None:
                    origin = stamp
                t = stamp - origin if stamp is not None and origin is not None else self.frames_decoded / self.fps
                self.stopped = self._limit_reached(t, started)
                if self.stopped:
                    break
                if frame.width * frame.height != self.width * self.height:  # a stream that changes size mid-way
                    try:
                        _check_resolution(frame.width, frame.height, self.limits.max_pixels)
                    except VideoLimitError:
                        if self.frames_decoded == 0:
                            raise
                        self.stopped = "max_pixels"  # keep what was analysed before the frames grew
                        break
                index = self.frames_decoded
                self.frames_decoded += 1
                self.time_s = t
                if index % self.every:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                turn = round(getattr(frame, "rotation", 0) or 0) // 90  # a phone's portrait clip, stored sideways
                if turn % 4:
                    rgb = np.ascontiguousarray(np.rot90(rgb, k=turn))  # upright, as a player shows it
                    self.height, self.width = rgb.shape[:2]  # its size as shown, too
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
            self.stopped = "damaged"  # a damaged tail: keep what was read
        if self.frames_decoded == 0 and self.stopped is None:
            raise VideoError("the video has no frames that can be decoded")
        self.progress = 1.0


def _check_resolution(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise VideoLimitError(f"the video is {width}x{height} ({width * height / 1e6:.1f} megapixels a frame); "
                              f"at most {max_pixels / 1e6:.1f} megapixels a frame are analysed here", "max_pixels")


def analyse_video(source: str | os.PathLike | BinaryIO, recognizer: Recognizer, every: int = 5,
                  smoothing: float = 0.0, settings: DetectorSettings | None = None,
                  limits: VideoLimits = VideoLimits(), progress: Callable[[float], None] | None = None,
                  should_stop: Callable[[], bool] = lambda: False, into: VideoResult | None = None) -> VideoResult:
    """The whole clip's rows and a preview (the Video page); ``progress(fraction)`` as decoding advances.

    ``into`` is filled as frames are analysed (and returned): a caller whose run is interrupted
    mid-clip keeps the part already analysed."""
    result = into if into is not None else VideoResult()
    reported, reported_at = -1.0, time.monotonic()
    with VideoAnalysis(source, recognizer, every, smoothing, settings, limits, should_stop) as clip:
        result.fps, result.width, result.height, result.codec = clip.fps, clip.width, clip.height, clip.codec
        for frame in clip:
            result.width, result.height = clip.width, clip.height  # as shown: a portrait clip is turned upright
            result.rows += frame.rows()
            result.frames_decoded, result.frames_analysed = clip.frames_decoded, clip.frames_analysed
            result.last_time_s = frame.time_s
            if len(frame.faces) > result.preview_faces:
                result.preview_faces, result.preview_time = len(frame.faces), frame.time_s
                result.preview = draw_faces(frame.rgb, frame.faces, order="rgb") if frame.faces else None
            # at most ~100 UI updates per clip, but one a second at least: a clip without a duration (a
            # browser's recording) advances its fraction slowly, and the page's Stop acts at an update
            if progress and (clip.progress - reported >= 0.01 or time.monotonic() - reported_at >= 1.0):
                progress(clip.progress)
                reported, reported_at = clip.progress, time.monotonic()
        result.frames_decoded, result.frames_analysed = clip.frames_decoded, clip.frames_analysed
        result.last_time_s, result.stopped = clip.time_s, clip.stopped
    if progress:
        progress(1.0)
    return result
