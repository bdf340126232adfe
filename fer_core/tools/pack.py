"""Pack the cleaned training faces into one file, for training on a machine that gets nothing else.

A rented GPU machine is typically sent train/ alone (test/ stays here, out of reach of any choice).
Cleaning drops the training faces that duplicate test faces only where test/ is present, so a run
there would keep a few hundred copies of PublicTest faces, train on them, and carve a different
validation slice; its test score here would be inflated and its validation not comparable with
local runs. Packing *after* cleaning sends exactly the faces a local run trains and validates on:
the remote run records the same train and val hashes, so its checkpoints join `choose_ensemble`
beside local ones.

The archive is a zip without compression: FER-2013's JPEGs do not shrink further, and a tar of
28k tiny files is far larger (512-byte headers and padding per file). Face files keep their bytes,
so they decode to identical pixels and the remote hashes match. Faces from ``fer2013.csv`` become
lossless PNGs in class folders: the same faces and the same val split (PublicTest), but read back
in class order, so the hashes (which are order-sensitive) differ from the local ones.

    python -m fer_core.tools.pack --data data/fer2013 --out train-clean.zip
    # there (Python alone; a lent GPU machine may have no unzip):
    python3 -m zipfile -e train-clean.zip fer2013 && python train.py --data fer2013 --device cuda ...
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2

from fer_core.common.labels import EMOTIONS
from fer_core.data.cleaning import clean_train
from fer_core.data.dataset import DatasetError, Split, available_splits, load_held_out, load_split, resolve_source


def _entries(root: Path, split: Split, folder: str) -> Iterator[tuple[str, bytes]]:
    """(name in the archive, bytes) per face, in the order the folder loader will read them back."""
    for i, source in enumerate(split.sources):
        path = root / source
        if root.is_dir() and path.is_file():
            yield source, path.read_bytes()
        else:  # a fer2013.csv row: zero-padded names keep the row order when sorted
            ok, png = cv2.imencode(".png", split.images[i, 0].numpy())
            if not ok:
                raise DatasetError(f"{source}: could not encode as PNG")
            yield f"{folder}/{EMOTIONS[int(split.labels[i])]}/{i:06d}.png", png.tobytes()


def pack_clean_train(data: str | Path, out: str | Path) -> dict[str, int]:
    """Writes the zip (train/ cleaned against every held-out split, plus val/ when the data has
    one, never test/) and returns how many faces of each split went in."""
    src = resolve_source(data)
    root = src if src.is_dir() else src.parent
    held = load_held_out(src, available_splits(src))
    train, _ = clean_train(load_split(src, "train"), list(held.values()))
    parts = {"train": train, **({"val": held["val"]} if "val" in held else {})}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            for folder, split in parts.items():
                for name, payload in _entries(root, split, folder):
                    z.writestr(name, payload)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {folder: len(split) for folder, split in parts.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fer_core.tools.pack", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="FER-2013 folder or fer2013.csv")
    ap.add_argument("--out", required=True, type=Path, help="the .zip to write")
    args = ap.parse_args(argv)
    try:
        counts = pack_clean_train(args.data, args.out)
    except (DatasetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    faces = ", ".join(f"{n} {s}" for s, n in counts.items())
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): {faces} faces, cleaned; test/ left out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
