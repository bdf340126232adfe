"""Emotions of the faces in images and videos, from the command line.

    fer-predict IMG_DIR_OR_VIDEO... [--json | --csv] [--detector mtcnn|haar]
                               [--weights PATH] [--tta] [--whole] [--every N] [--explain OUT_DIR]

A folder is searched recursively for images. Faces from many images are classified
together in batches of up to ``--batch`` crops (one forward pass per batch), so a folder
of FER-2013 crops goes as fast as the evaluation CLI. A video (mp4, webm, avi, mov, mkv)
streams one row per face per analysed frame (every ``--every``-th), with a track id, as it
is decoded: memory stays flat however long the clip, and a progress bar runs on stderr.
A file that cannot be read is reported on stderr and skipped; the exit status is 1 if any
file failed, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fer_core.models.active import accurate_weights
from fer_core.recognition.detect import DEFAULT_DETECTOR, DETECTORS, DetectorSettings, DetectorUnavailable
from fer_core.recognition.imageio import IMAGE_TYPES, ImageError, decode_image
from fer_core.recognition.recognizer import Face, Recognizer
from fer_core.recognition.video import VIDEO_TYPES, AnalysedFrame, VideoAnalysis, VideoError, VideoLimits

SUFFIXES = {f".{t}" for t in IMAGE_TYPES}
VIDEO_SUFFIXES = {f".{t}" for t in VIDEO_TYPES}
CSV_COLUMNS = ("path", "frame", "time_s", "face", "track_id", "x", "y", "w", "h", "label", "confidence")
"""Then the class scores, the detector's face score and the detector's name. Images leave
frame, time_s and track_id empty; a video's ``face`` counts faces within its frame."""


def iter_images(paths: list[str]) -> Iterator[Path]:
    """Files as given (whatever their extension), folders expanded to their images, sorted."""
    for raw in paths:
        p = Path(raw)
        if os.path.isdir(p):  # never raises: a path the OS refuses is read, and reported, as a file
            yield from sorted(f for f in p.rglob("*") if f.suffix.lower() in SUFFIXES and os.path.isfile(f))
        else:
            yield p


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def predict_paths(rec: Recognizer, paths: list[str], whole: bool | None = None, batch: int = 256,
                  settings: DetectorSettings | None = None
                  ) -> Iterator[tuple[Path, list[Face] | None, np.ndarray | None, str | None]]:
    """(path, faces, their 48x48 crops, None) per readable image and (path, None, None, error) per
    unreadable one, in order."""
    pending: list[tuple[Path, list, np.ndarray | None, str | None]] = []
    n_crops = 0

    def flush() -> Iterator[tuple[Path, list[Face] | None, np.ndarray | None, str | None]]:
        crops = [c for _, _, c, _ in pending if c is not None and len(c)]
        probs = rec.classify(np.concatenate(crops)) if crops else np.zeros((0, len(rec.classes)))
        i = 0
        for path, dets, face_crops, err in pending:
            if err is not None:
                yield path, None, None, err
                continue
            k = len(dets)
            yield path, rec.faces(dets, probs[i:i + k]), face_crops, None
            i += k
        pending.clear()

    for path in iter_images(paths):
        try:
            rgb = decode_image(path).rgb
            dets, crops = rec.find_faces(rgb, order="rgb", whole=whole, settings=settings)
        except (ImageError, ValueError) as exc:  # reported in its place, after the images before it
            pending.append((path, [], None, str(exc)))
            continue
        pending.append((path, dets, crops, None))
        n_crops += len(crops)
        if n_crops >= batch:
            yield from flush()
            n_crops = 0
    yield from flush()


class Output:
    """Writes results as text, JSON lines or CSV rows, all with the detector's name."""

    def __init__(self, fmt: str, classes: tuple[str, ...], detector: str) -> None:
        self.fmt, self.classes, self.detector = fmt, classes, detector
        self.writer = None
        if fmt == "csv":
            self.writer = csv.writer(sys.stdout)
            self.writer.writerow([*CSV_COLUMNS, *classes, "face_score", "detector"])

    def _row(self, path: Path, i: int, f: Face, frame: int | str = "", time_s: float | str = "") -> None:
        score = "" if f.face_score is None else f"{f.face_score:.4f}"
        track = "" if f.track_id is None else f.track_id
        self.writer.writerow([path, frame, time_s, i, track, *f.box, f.label, f"{f.confidence:.4f}",
                              *(f"{f.scores[c]:.4f}" for c in self.classes), score, self.detector])

    def image(self, path: Path, faces: list[Face]) -> None:
        if self.fmt == "json":
            print(json.dumps({"path": str(path), "detector": self.detector, "faces": [f.to_dict() for f in faces]}))
        elif self.fmt == "csv":
            for i, f in enumerate(faces, 1):
                self._row(path, i, f)
        elif not faces:
            print(f"{path}: no face found (try --whole)")
        else:
            for i, f in enumerate(faces, 1):
                top = sorted(f.scores.items(), key=lambda kv: -kv[1])[1:3]
                rest = ", ".join(f"{c} {v * 100:.0f}%" for c, v in top)
                print(f"{path}: face {i} at {f.box}: {f.label} {f.confidence * 100:.1f}% ({rest})")

    def video_frame(self, path: Path, frame: AnalysedFrame) -> None:
        if self.fmt == "json":
            print(json.dumps({"path": str(path), "detector": self.detector, "frame": frame.index,
                              "time_s": round(frame.time_s, 3), "faces": [f.to_dict() for f in frame.faces]}))
        elif self.fmt == "csv":
            for i, f in enumerate(frame.faces, 1):
                self._row(path, i, f, frame.index, f"{frame.time_s:.3f}")
        else:
            for f in frame.faces:
                print(f"{path} @ {frame.time_s:.2f} s: face #{f.track_id} at {f.box}: {f.label} "
                      f"{f.confidence * 100:.1f}%")


def predict_video(rec: Recognizer, path: Path, out: Output, every: int, settings: DetectorSettings | None,
                  explain_dir: Path | None = None, stem: str | None = None) -> str | None:
    """Stream a video's rows as they are analysed; returns an error message, or None. Grad-CAM PNGs
    (``explain_dir``) are named ``<stem>_frame<N>_face<i>.png``; if they cannot be written, the rows
    go on and the error is returned at the end."""
    from tqdm import tqdm

    write_error = None
    try:
        whole_clip = VideoLimits(max_seconds=float("inf"))
        with VideoAnalysis(path, rec, every=every, settings=settings, limits=whole_clip) as clip:
            total = round(clip.duration * clip.fps) if clip.duration else None
            with tqdm(total=total, unit="frame", desc=path.name, file=sys.stderr, leave=False) as bar:
                for frame in clip:
                    out.video_frame(path, frame)
                    bar.update(clip.frames_decoded - bar.n)
                    if explain_dir is not None and frame.faces and write_error is None:
                        try:
                            write_explanations(rec, frame.crops, frame.faces, explain_dir,
                                               f"{stem or path.stem}_frame{frame.index:06d}")  # unique at any fps
                        except OSError as exc:
                            write_error = f"cannot write its Grad-CAM into {explain_dir}: {exc.strerror or exc}"
    except VideoError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    return write_error


def write_explanations(rec: Recognizer, crops: np.ndarray, faces: list[Face], out_dir: Path,
                       stem: str) -> list[Path]:
    """One PNG per face: the crop the network read (as the pipeline cut it), with its Grad-CAM heat map."""
    from fer_core.common.atomic import write_bytes
    from fer_core.recognition.explain import explainer_for, gradcam, overlay
    from fer_core.recognition.imageio import encode_png

    maps, _ = gradcam(explainer_for(rec.weights), crops, [rec.classes.index(f.label) for f in faces])
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (crop, heat) in enumerate(zip(crops, maps, strict=True), 1):
        written.append(write_bytes(out_dir / f"{stem}_face{i}.png", encode_png(overlay(crop, heat))))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fer-predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", metavar="IMG_DIR_OR_VIDEO")
    fmt = ap.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per image (or analysed video frame)")
    fmt.add_argument("--csv", action="store_true", help="one CSV row per face (images without a face get none)")
    ap.add_argument("--weights", default=None,
                    help="a .safetensors file or run folder (default: the promoted run, else the shipped "
                         "accurate model)")
    ap.add_argument("--detector", choices=list(DETECTORS), default=DEFAULT_DETECTOR,
                    help="mtcnn: learned, finds turned and tilted faces, gives landmarks (default); "
                         "haar: the paper's Haar cascade")
    ap.add_argument("--no-align", action="store_true", help="do not rotate faces upright by their eye landmarks")
    ap.add_argument("--tta", action="store_true",
                    help="test-time augmentation: average 14 shifted, zoomed and mirrored views")
    whole = ap.add_mutually_exclusive_group()
    whole.add_argument("--whole", action="store_true", help="classify each whole image as one face (no detection)")
    whole.add_argument("--detect", action="store_true", help="always detect, even in small (<=96 px) images")
    ap.add_argument("--min-size", type=int, default=DetectorSettings.min_size, help="smallest face in pixels")
    ap.add_argument("--min-neighbors", type=int, default=DetectorSettings.min_neighbors, help="haar only")
    ap.add_argument("--min-score", type=float, default=DetectorSettings.min_score,
                    help="mtcnn only: the face probability a detection needs")
    ap.add_argument("--every", type=int, default=5, help="videos: analyse every Nth frame")
    ap.add_argument("--explain", metavar="OUT_DIR", default=None,
                    help="write one Grad-CAM PNG per face (what the network looked at) into OUT_DIR")
    ap.add_argument("--batch", type=int, default=256, help="crops per forward pass")
    args = ap.parse_args(argv)

    from fer_core.models.checkpoint import CheckpointError

    if args.every < 1 or args.batch < 1:
        print("error: --every and --batch must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = DetectorSettings(min_size=args.min_size, min_neighbors=args.min_neighbors,
                                    min_score=args.min_score, align=not args.no_align)
        rec = Recognizer.load(args.weights or accurate_weights(), tta=args.tta, detector=args.detector,
                              settings=settings)
    except (CheckpointError, ValueError, DetectorUnavailable, OSError) as exc:  # OSError: a path the OS refuses
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mode = True if args.whole else False if args.detect else None
    explain_dir = Path(args.explain) if args.explain else None
    if explain_dir is not None:
        try:  # before any work: a bad output folder is a usage error, not a crash after the first image
            explain_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: --explain {explain_dir}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    try:
        return _predict_all(args, rec, settings, mode, explain_dir)
    except BrokenPipeError:  # fer-predict ... | head: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _predict_all(args: argparse.Namespace, rec: Recognizer, settings: DetectorSettings, mode: bool | None,
                 explain_dir: Path | None) -> int:
    out = Output("json" if args.json else "csv" if args.csv else "text", rec.classes, rec.detector.name)
    failed = done = 0
    used: set[str] = set()  # explanation names given so far

    def unique(stem: str) -> str:
        """a/x.jpg, b/x.png (and a real x-2.jpg after them): x, x-2, x-2-2; no PNG overwrites another."""
        name, k = stem, 2
        while name in used:
            name, k = f"{stem}-{k}", k + 1
        used.add(name)
        return name
    groups: list[list[str]] = []  # runs of image arguments, and each video alone, in the given order
    for raw in args.paths:
        if is_video(Path(raw)) or not groups or is_video(Path(groups[-1][0])):
            groups.append([raw])
        else:
            groups[-1].append(raw)
    for group in groups:
        if is_video(Path(group[0])):
            err = predict_video(rec, Path(group[0]), out, args.every, settings, explain_dir,
                                unique(Path(group[0]).stem))
            failed, done = failed + (err is not None), done + (err is None)
            if err is not None:
                print(f"{group[0]}: error: {err}", file=sys.stderr)
            continue
        for path, faces, crops, err in predict_paths(rec, group, whole=mode, batch=args.batch, settings=settings):
            if err is not None:
                failed += 1
                print(f"{path}: error: {err}", file=sys.stderr)
                continue
            done += 1
            out.image(path, faces)
            if explain_dir is not None and faces:
                try:
                    write_explanations(rec, crops, faces, explain_dir, unique(path.stem))
                except OSError as exc:
                    failed += 1
                    print(f"{path}: error: cannot write its Grad-CAM into {explain_dir}: {exc.strerror or exc}",
                          file=sys.stderr)
    if done + failed == 0:
        print("error: no images found in the given paths", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
