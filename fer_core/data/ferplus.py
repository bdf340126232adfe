"""FER+ as users have it on disk: the votes of Microsoft's layouts, read and checked row by row.

* Microsoft's folders (``generate_training_data.py``): ``ROOT/FER2013{Train,Valid,Test}/`` with the PNGs
  and a headerless ``label.csv`` (file name, face box, ten vote counts);
* the pair ``fer2013.csv`` + ``fer2013new.csv`` (``Usage,Image name,<ten counts>``, one row per row of
  fer2013.csv, in the same order); ``fer_core.data.dataset`` reads the pixels and joins the votes.

Votes come back in ``VOTE_COLUMNS`` order; which faces are kept is the protocol's business
(``fer_core.data.votes``), not the reader's.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fer_core.common.labels import IMAGE_SIZE
from fer_core.data.decode import DatasetError, decode_gray, read_file, to_face_size
from fer_core.data.votes import FROM_MICROSOFT, MICROSOFT_COLUMNS

FOLDERS: dict[str, str] = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
"""Our split names for Microsoft's folders: FER2013Valid is FER-2013's PublicTest, FER2013Test its PrivateTest."""
LABEL_FILE = "label.csv"
NEW_CSV_NAME = "fer2013new.csv"
MAX_VOTES = 100
"""More votes than any face could have had: a count above it is a broken row, not a face."""
_BOX = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)")
_COUNT = re.compile(r"[0-9]+(\.0*)?")


def is_folder_layout(root: Path) -> bool:
    return root.is_dir() and any((root / f).is_dir() for f in FOLDERS.values())


def folder_splits(root: Path) -> list[str]:
    return [s for s, f in FOLDERS.items() if (root / f).is_dir()]


def _vote_counts(fields: list[str], where: str) -> np.ndarray:
    """Ten vote counts in Microsoft's order -> ``VOTE_COLUMNS`` order, or a DatasetError naming the row."""
    if len(fields) != len(MICROSOFT_COLUMNS):
        raise DatasetError(f"{where}: {len(fields)} vote counts, expected {len(MICROSOFT_COLUMNS)} "
                           f"({', '.join(MICROSOFT_COLUMNS)})")
    text = [f.strip() for f in fields]
    if not all(_COUNT.fullmatch(t) and len(t) <= 6 for t in text):
        raise DatasetError(f"{where}: vote counts must be whole numbers >= 0, got {', '.join(text)}")
    counts = np.array([int(float(t)) for t in text], np.int64)
    if counts.max() > MAX_VOTES:
        raise DatasetError(f"{where}: a vote count of {counts.max()} is more than any face had")
    if counts.sum() == 0:
        raise DatasetError(f"{where}: no votes at all")
    return counts[list(FROM_MICROSOFT)].astype(np.uint8)


def _box(field: str, where: str) -> tuple[int, int, int, int]:
    m = _BOX.fullmatch(field.strip())
    if not m:
        raise DatasetError(f"{where}: face box '{field.strip()[:40]}' is not '(left, top, right, bottom)'")
    left, top, right, bottom = (int(g) for g in m.groups())
    if right <= left or bottom <= top:
        raise DatasetError(f"{where}: face box {field.strip()} is empty")
    return left, top, right, bottom


def _label_rows(root: Path, split: str) -> Iterator[tuple[str, str, tuple[int, int, int, int], np.ndarray]]:
    """Every row of one folder's ``label.csv`` as (where, file name, face box, votes in ``VOTE_COLUMNS``
    order), each checked: the one reader of the file, for the faces and for counting them alike."""
    folder = root / FOLDERS[split]
    label_file = folder / LABEL_FILE
    if not folder.is_dir():
        raise DatasetError(f"split '{split}' is missing: no folder {folder}")
    if not label_file.is_file():
        raise DatasetError(f"{folder} has no {LABEL_FILE} (file name, face box, ten vote counts per row)")
    seen: dict[str, int] = {}
    try:
        with open(label_file, newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.reader(fh)
            for row in reader:
                line = reader.line_num
                where = f"{label_file} line {line}"
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 2 + len(MICROSOFT_COLUMNS):
                    raise DatasetError(f"{where}: {len(row)} fields, expected {2 + len(MICROSOFT_COLUMNS)} "
                                       "(file name, face box, ten vote counts)")
                name = row[0].strip()
                if not name or "/" in name or "\\" in name or name in (".", ".."):
                    raise DatasetError(f"{where}: '{name[:40]}' is not a file name in {folder}")
                if name in seen:
                    raise DatasetError(f"{where}: {name} is listed twice (first on line {seen[name]})")
                seen[name] = line
                counts = _vote_counts(row[2:], where)
                yield where, name, _box(row[1], where), counts
    except csv.Error as exc:
        raise DatasetError(f"{label_file} line {reader.line_num}: not a well-formed CSV row ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {label_file}: {exc.strerror or exc}") from None
    if not seen:
        raise DatasetError(f"{label_file} lists no faces")


def folder_votes(root: Path, split: str) -> np.ndarray:
    """(N, 10) votes of one of Microsoft's folders, read from ``label.csv`` alone: no image is decoded."""
    return np.stack([counts for *_, counts in _label_rows(root, split)])


def read_folder_split(root: Path, split: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """One of Microsoft's folders -> (images (N,48,48) uint8, sources, votes (N,10) uint8), in
    ``label.csv``'s order."""
    folder = root / FOLDERS[split]
    images, sources, votes = [], [], []
    for where, name, box, counts in _label_rows(root, split):
        png = folder / name
        if not png.is_file():
            raise DatasetError(f"{where}: {name} is missing from {folder}")
        images.append(to_face_size(_cut(decode_gray(read_file(png), str(png)), box, where, name)))
        sources.append(f"{FOLDERS[split]}/{name}")
        votes.append(counts)
    return np.stack(images), sources, np.stack(votes)


def _cut(img: np.ndarray, box: tuple[int, int, int, int], where: str, name: str) -> np.ndarray:
    """The face box of an image, as Microsoft's tools cut it; their usual box, (0, 0, 48, 48), is the
    whole image, whatever its size."""
    left, top, right, bottom = box
    if box == (0, 0, IMAGE_SIZE, IMAGE_SIZE):
        return img
    if right > img.shape[1] or bottom > img.shape[0]:
        raise DatasetError(f"{where}: face box {box} lies outside {name}")
    return img[top:bottom, left:right]


def read_new_csv(path: Path) -> list[tuple[int, str, str, np.ndarray | None]]:
    """Every row of ``fer2013new.csv`` as (line, Usage, image name, votes or None). None: a row with
    no image name, which FER+ marks as not a face."""
    rows: list[tuple[int, str, str, np.ndarray | None]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.reader(fh)
            header = [c.strip() for c in next(reader, [])]
            if len(header) != 2 + len(MICROSOFT_COLUMNS) or header[:2] != ["Usage", "Image name"]:
                raise DatasetError(f"{path}: header must be 'Usage,Image name' then ten vote columns "
                                   f"({', '.join(MICROSOFT_COLUMNS)}); found '{','.join(header)[:80]}'")
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                where = f"{path} line {line}"
                if len(row) != len(header):
                    raise DatasetError(f"{where}: {len(row)} fields, expected {len(header)}")
                name = row[1].strip()
                rows.append((line, row[0].strip(), name, _vote_counts(row[2:], where) if name else None))
    except csv.Error as exc:
        raise DatasetError(f"{path} line {reader.line_num}: not a well-formed CSV row ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    return rows
