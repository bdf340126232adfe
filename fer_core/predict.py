"""Emotions of the faces in images, from the command line.

    python -m fer_core.predict IMG_OR_DIR... [--json | --csv] [--weights PATH] [--tta] [--whole]

A folder is searched recursively for images. Faces from many images are classified
together in batches of up to ``--batch`` crops (one forward pass per batch), so a folder
of FER-2013 crops goes as fast as the evaluation CLI. A file that cannot be read is
reported on stderr and skipped; the exit status is 1 if any file failed, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fer_core.active import accurate_weights
from fer_core.detect import DetectorSettings, to_gray
from fer_core.imageio import IMAGE_TYPES, ImageError, decode_image
from fer_core.recognizer import Face, Recognizer

SUFFIXES = {f".{t}" for t in IMAGE_TYPES}


def iter_images(paths: list[str]) -> Iterator[Path]:
    """Files as given (whatever their extension), folders expanded to their images, sorted."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
        else:
            yield p


def predict_paths(rec: Recognizer, paths: list[str], whole: bool | None = None, batch: int = 256,
                  settings: DetectorSettings | None = None) -> Iterator[tuple[Path, list[Face] | None, str | None]]:
    """(path, faces, None) per readable image and (path, None, error) per unreadable one, in order."""
    pending: list[tuple[Path, list, np.ndarray | None, str | None]] = []
    n_crops = 0

    def flush() -> Iterator[tuple[Path, list[Face] | None, str | None]]:
        crops = [c for _, _, c, _ in pending if c is not None and len(c)]
        probs = rec.classify(np.concatenate(crops)) if crops else np.zeros((0, len(rec.classes)))
        i = 0
        for path, boxes, _crops, err in pending:
            if err is not None:
                yield path, None, err
                continue
            k = len(boxes)
            yield path, [Face.from_probs(b, p, rec.classes) for b, p in zip(boxes, probs[i:i + k], strict=True)], None
            i += k
        pending.clear()

    for path in iter_images(paths):
        try:
            gray = to_gray(decode_image(path).rgb, "rgb")
        except ImageError as exc:
            pending.append((path, [], None, str(exc)))
            continue
        boxes, crops = rec.faces_in_gray(gray, whole=whole, settings=settings)
        pending.append((path, boxes, crops, None))
        n_crops += len(crops)
        if n_crops >= batch:
            yield from flush()
            n_crops = 0
    yield from flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fer_core.predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", metavar="IMG_OR_DIR")
    fmt = ap.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per image, one per line")
    fmt.add_argument("--csv", action="store_true", help="one CSV row per face (images without a face get none)")
    ap.add_argument("--weights", default=None,
                    help="a .safetensors file or run folder (default: the promoted run, else the shipped "
                         "accurate model)")
    ap.add_argument("--tta", action="store_true",
                    help="test-time augmentation: average 14 shifted, zoomed and mirrored views")
    whole = ap.add_mutually_exclusive_group()
    whole.add_argument("--whole", action="store_true", help="classify each whole image as one face (no detection)")
    whole.add_argument("--detect", action="store_true", help="always detect, even in small (<=96 px) images")
    ap.add_argument("--min-size", type=int, default=DetectorSettings.min_size, help="smallest face in pixels")
    ap.add_argument("--min-neighbors", type=int, default=DetectorSettings.min_neighbors)
    ap.add_argument("--batch", type=int, default=256, help="crops per forward pass")
    args = ap.parse_args(argv)

    from fer_core.checkpoint import CheckpointError

    try:
        rec = Recognizer.load(args.weights or accurate_weights(), tta=args.tta)
        settings = DetectorSettings(min_size=args.min_size, min_neighbors=args.min_neighbors)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mode = True if args.whole else False if args.detect else None
    failed = done = 0
    writer = None
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "face", "x", "y", "w", "h", "label", "confidence", *rec.classes])
    for path, faces, err in predict_paths(rec, args.paths, whole=mode, batch=args.batch, settings=settings):
        if err is not None:
            failed += 1
            print(f"{path}: error: {err}", file=sys.stderr)
            continue
        done += 1
        if args.json:
            print(json.dumps({"path": str(path), "faces": [f.to_dict() for f in faces]}))
        elif writer is not None:
            for i, f in enumerate(faces, 1):
                writer.writerow([path, i, *f.box, f.label, f"{f.confidence:.4f}",
                                 *(f"{f.scores[c]:.4f}" for c in rec.classes)])
        elif not faces:
            print(f"{path}: no face found (try --whole)")
        else:
            for i, f in enumerate(faces, 1):
                top = sorted(f.scores.items(), key=lambda kv: -kv[1])[1:3]
                rest = ", ".join(f"{c} {v * 100:.0f}%" for c, v in top)
                print(f"{path}: face {i} at {f.box}: {f.label} {f.confidence * 100:.1f}% ({rest})")
    if done + failed == 0:
        print("error: no images found in the given paths", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
