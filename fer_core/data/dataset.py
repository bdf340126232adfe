"""Loading FER-2013 and FER+ into memory, from the forms users actually have.

* the folder layout of the Kaggle image release: ``ROOT/{train,val,test}/<class>/*.jpg``
* the original ``fer2013.csv`` (``emotion,pixels,Usage``)
* FER+ in Microsoft's folders, ``ROOT/FER2013{Train,Valid,Test}/`` with ``label.csv``, or as the pair
  ``fer2013.csv`` + ``fer2013new.csv`` (``fer_core.data.ferplus``). A FER+ split is labelled in FER+'s
  eight classes by its majority protocol and keeps every face's ten votes (``fer_core.data.votes``).

A split is held as one uint8 tensor ``(N, 1, 48, 48)`` plus int64 labels: the whole of
FER-2013 is ~100 MB that way, so training never touches the disk or PIL again. Decoding
28k JPEGs takes seconds, so a decoded split is cached as ``.npz`` keyed by a signature of
its source files, and the second load is a memory-mapped read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fer_core.common.atomic import write_atomic
from fer_core.common.labels import EMOTIONS, FERPLUS_EMOTIONS, IMAGE_SIZE
from fer_core.common.paths import cache_dir
from fer_core.data import ferplus
from fer_core.data.decode import DatasetError, decode_face, read_file
from fer_core.data.votes import majority_labels

__all__ = ["DatasetError", "Split", "available_splits", "decode_face", "load_split", "resolve_source"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
CSV_USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CSV_NAME = "fer2013.csv"
CACHE_VERSION = 2
_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class Split:
    """One split of FER-2013 or FER+, fully in memory."""

    name: str
    images: torch.Tensor  # uint8 (N, 1, 48, 48)
    labels: torch.Tensor  # int64 (N,): an index into ``classes``
    sources: tuple[str, ...]  # where each image came from: a relative path or "fer2013.csv:LINE"
    classes: tuple[str, ...] = EMOTIONS  # the label space of ``labels``
    votes: torch.Tensor | None = None  # uint8 (N, 10) FER+ vote counts in VOTE_COLUMNS order; None for FER-2013
    fer2013_labels: torch.Tensor | None = None  # int64 (N,) FER-2013's own label of a FER+ face, where known

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()

    def select(self, index: torch.Tensor | np.ndarray | list[int], name: str | None = None) -> Split:
        idx = torch.as_tensor(index, dtype=torch.long)
        return Split(
            name=name or self.name,
            images=self.images[idx],
            labels=self.labels[idx],
            sources=tuple(self.sources[i] for i in idx.tolist()),
            classes=self.classes,
            votes=None if self.votes is None else self.votes[idx],
            fer2013_labels=None if self.fer2013_labels is None else self.fer2013_labels[idx],
        )

    def restricted_to(self, classes: tuple[str, ...]) -> Split:
        """Only the faces of ``classes``, labelled in that space: e.g. CK+ or FER+ scored in FER-2013's seven
        classes, which leaves their contempt faces out."""
        index = torch.tensor([classes.index(c) if c in classes else -1 for c in self.classes])
        mapped = index[self.labels]
        kept = self.select(torch.nonzero(mapped >= 0).flatten())
        return Split(kept.name, kept.images, index[kept.labels], kept.sources, tuple(classes), kept.votes,
                     kept.fer2013_labels)

    def content_hash(self) -> str:
        """sha256 over pixels and labels: names exactly the data a model saw or was scored on."""
        h = hashlib.sha256()
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.numpy().astype(np.int64).tobytes())
        if self.votes is not None:
            h.update(self.votes.numpy().tobytes())
        return h.hexdigest()[:16]


# --------------------------------------------------------------------------- discovery


def resolve_source(path: str | os.PathLike) -> Path:
    """The folder root or the CSV file a path designates: a folder holding fer2013.csv counts as that
    file, and one that also holds fer2013new.csv as FER+'s pair (the path of fer2013new.csv)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"dataset path {p} does not exist")
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise DatasetError(f"{p} is a file but not a .csv; give a FER-2013 or FER+ folder, fer2013.csv or "
                               f"{ferplus.NEW_CSV_NAME}")
        if p.name == ferplus.NEW_CSV_NAME and not (p.parent / CSV_NAME).is_file():
            raise DatasetError(f"{p} holds FER+'s votes but not the faces: put fer2013.csv beside it")
        return p
    if ferplus.is_folder_layout(p):
        return p
    if not any((p / s).is_dir() for s in SPLITS) and (p / CSV_NAME).is_file():
        return p / ferplus.NEW_CSV_NAME if (p / ferplus.NEW_CSV_NAME).is_file() else p / CSV_NAME
    return p


def is_ferplus(path: str | os.PathLike) -> bool:
    """Whether a dataset carries FER+'s votes (and so FER+'s eight classes)."""
    src = resolve_source(path)
    return src.name == ferplus.NEW_CSV_NAME or ferplus.is_folder_layout(src)


def dataset_classes(path: str | os.PathLike) -> tuple[str, ...]:
    """The label space a dataset's splits are labelled in."""
    src = resolve_source(path)
    if is_ferplus(src):
        return FERPLUS_EMOTIONS
    if src.is_dir():
        folders = [_split_dir(src, s) for s in SPLITS]
        if any((f / "contempt").is_dir() for f in [*folders, src]):
            return FERPLUS_EMOTIONS
    return EMOTIONS


def _pixels_csv(src: Path) -> Path:
    """The fer2013.csv that holds the pixels of a source that is a CSV file."""
    return src.parent / CSV_NAME if src.name == ferplus.NEW_CSV_NAME else src


def available_splits(path: str | os.PathLike) -> list[str]:
    src = resolve_source(path)
    if src.is_file():
        usages = {CSV_USAGE_TO_SPLIT[usage] for _, usage, _, _ in _csv_rows(_pixels_csv(src))}
        return [s for s in SPLITS if s in usages]
    if ferplus.is_folder_layout(src):
        return ferplus.folder_splits(src)
    if _is_flat(src):
        return ["test"]
    found = [s for s in SPLITS if (src / s).is_dir()]
    if not found:
        raise DatasetError(f"{src} holds none of the split folders {', '.join(SPLITS)}, none of FER+'s "
                           f"{', '.join(ferplus.FOLDERS.values())} and no {CSV_NAME}")
    return found


def split_class_counts(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Images per class of each split present, from file names or CSV rows, without decoding a
    pixel: what a duration estimate needs in a fraction of a load's time."""
    src = resolve_source(path)
    if is_ferplus(src):  # from the votes alone, as FER+'s majority protocol labels them
        out = {}
        for split in available_splits(src):
            votes = _pair_votes(src, split)[2] if src.is_file() else ferplus.folder_votes(src, split)
            labels = majority_labels(torch.from_numpy(votes))
            out[split] = tuple(torch.bincount(labels[labels >= 0], minlength=len(FERPLUS_EMOTIONS)).tolist())
        return out
    counts = {s: [0] * len(EMOTIONS) for s in SPLITS}
    if src.is_file():
        for _, usage, emotion, _ in _csv_rows(src):
            label = _csv_label(emotion)
            if label is not None:
                counts[CSV_USAGE_TO_SPLIT[usage]][label] += 1
    else:
        for split in SPLITS:
            for i, name in enumerate(EMOTIONS):
                d = src / split / name
                if d.is_dir():
                    counts[split][i] = sum(1 for f in os.scandir(d) if f.name.lower().endswith(IMAGE_SUFFIXES))
    return {s: tuple(c) for s, c in counts.items() if sum(c)}


def validate_dataset(path: str | os.PathLike) -> list[str]:
    """Cheap check before a long job: the path exists and has a train split. Returns its splits."""
    splits = available_splits(path)
    if "train" not in splits:
        raise DatasetError(f"{path} has no train split (found: {', '.join(splits) or 'none'})")
    return splits


# --------------------------------------------------------------------------- folder layout


def _class_dirs(split_dir: Path) -> list[tuple[int, Path]]:
    """The class folders of a split, as (index in FERPLUS_EMOTIONS, folder): FER-2013's seven, and
    contempt where a data set has it (CK+, say)."""
    out: list[tuple[int, Path]] = []
    for child in sorted(split_dir.iterdir()):
        if not child.is_dir():
            continue
        name = child.name.lower()
        if name not in FERPLUS_EMOTIONS:
            raise DatasetError(
                f"unknown class folder {child}: expected one of {', '.join(FERPLUS_EMOTIONS)} (case-insensitive)"
            )
        out.append((FERPLUS_EMOTIONS.index(name), child))
    if not out:
        raise DatasetError(f"{split_dir} holds no class folders ({', '.join(EMOTIONS)})")
    return out


def _is_flat(root: Path) -> bool:
    """A folder of class folders with no split folders (as CK+48 is shared): one split, read as test."""
    return (root.is_dir() and not any((root / s).is_dir() for s in SPLITS)
            and any(c.is_dir() and c.name.lower() in FERPLUS_EMOTIONS for c in root.iterdir()))


def _split_dir(root: Path, split: str) -> Path:
    return root if _is_flat(root) and split == "test" else root / split


def _folder_files(split_dir: Path) -> list[tuple[Path, int]]:
    files: list[tuple[Path, int]] = []
    for label, cdir in _class_dirs(split_dir):
        for f in sorted(cdir.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                files.append((f, label))
    return files


def _load_folder_split(root: Path, split: str) -> dict[str, np.ndarray]:
    split_dir = _split_dir(root, split)
    if not split_dir.is_dir():
        raise DatasetError(f"split '{split}' is missing: no folder {split_dir}")
    files = _folder_files(split_dir)
    if not files:
        raise DatasetError(f"{split_dir} holds no images (.jpg/.jpeg/.png)")
    images = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for i, (f, _) in enumerate(files):
        images[i] = decode_face(read_file(f), str(f))
    labels = np.array([lab for _, lab in files], np.int64)
    sources = [str(f.relative_to(root)) for f, _ in files]
    classes = FERPLUS_EMOTIONS if (labels == FERPLUS_EMOTIONS.index("contempt")).any() else EMOTIONS
    return {"images": images, "labels": labels, "sources": np.array(sources), "classes": np.array(classes)}


def _folder_signature(root: Path, split: str) -> str:
    h = hashlib.sha256()
    for f, label in _folder_files(_split_dir(root, split)):
        st = f.stat()
        h.update(f"{f.relative_to(root)}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- fer2013.csv


def _shown(field: str, limit: int = 24) -> str:
    """A field as a message quotes it: on one line and short, however long or multi-line the field is."""
    flat = " ".join(field.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def _csv_label(emotion: str) -> int | None:
    """The class an emotion field names (0..6), or None. The one rule, so that counting rows and loading
    them agree; the length check comes first because ``int()`` refuses strings of over 4300 digits."""
    text = emotion.strip()
    if _INTEGER.fullmatch(text) and len(text) <= 3 and 0 <= int(text) < len(EMOTIONS):
        return int(text)
    return None


def _csv_header_error(csv_path: Path, header: list[str]) -> DatasetError | None:
    """Why a header is not ``emotion,pixels,Usage`` (in any order, extra columns allowed), or None."""
    if not header:
        return DatasetError(f"{csv_path} is empty: expected a header line emotion,pixels,Usage")
    missing = {"emotion", "pixels", "Usage"} - set(header)
    if not missing:
        return None
    if any("\x00" in c or "\ufffd" in c for c in header):
        return DatasetError(f"{csv_path} is not a UTF-8 text CSV file (binary data, or text in another encoding "
                            "such as UTF-16: save it as 'CSV UTF-8')")
    return DatasetError(f"{csv_path}: header lacks column(s) {', '.join(sorted(missing))} "
                        f"(expected emotion,pixels,Usage; found '{_shown(','.join(header), 60)}')")


def _csv_format_error(csv_path: Path, line_no: int, exc: csv.Error) -> DatasetError:
    if "field larger than field limit" in str(exc):
        return DatasetError(f"{csv_path} line {line_no}: not a well-formed CSV row (a field is over "
                            f"{csv.field_size_limit() // 1024} KB, where a row of 48x48 pixels is about 9 KB)")
    return DatasetError(f"{csv_path} line {line_no}: not a well-formed CSV row ({exc})")


def _csv_rows(csv_path: Path) -> Iterator[tuple[int, str, str, str]]:
    """Every row of a fer2013.csv as (line number, Usage, emotion, pixels), the header and each
    row's shape checked. The one reader of the format: listing the splits and loading one both go
    through it, so a file is accepted or refused the same way everywhere, with the line to fix."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig", errors="replace") as fh:  # -sig: a BOM is fine
            reader = csv.reader(fh)
            header = [c.strip().lstrip("\ufeff").strip() for c in next(reader, [])]  # a BOM saved twice, too
            error = _csv_header_error(csv_path, header)
            if error:
                raise error
            ie, ip, iu = header.index("emotion"), header.index("pixels"), header.index("Usage")
            for row in reader:
                line_no = reader.line_num
                if not row:
                    continue
                if len(row) < len(header):
                    raise DatasetError(f"{csv_path} line {line_no}: {len(row)} fields, expected {len(header)}")
                usage = row[iu].strip()
                if usage not in CSV_USAGE_TO_SPLIT:
                    raise DatasetError(
                        f"{csv_path} line {line_no}: Usage '{_shown(usage)}' is not one of "
                        f"{', '.join(CSV_USAGE_TO_SPLIT)}"
                    )
                yield line_no, usage, row[ie], row[ip]
    except csv.Error as exc:  # a field over csv's size limit, a NUL byte, an unclosed quote
        raise _csv_format_error(csv_path, reader.line_num, exc) from None
    except OSError as exc:
        raise DatasetError(f"cannot read {csv_path}: {exc.strerror or exc}") from None


def _load_csv_split(csv_path: Path, split: str) -> dict[str, np.ndarray]:
    wanted = {u for u, s in CSV_USAGE_TO_SPLIT.items() if s == split}
    images: list[np.ndarray] = []
    labels: list[int] = []
    sources: list[str] = []
    for line_no, usage, emotion, pixels in _csv_rows(csv_path):
        if usage not in wanted:
            continue
        label = _csv_label(emotion)
        if label is None:
            if not _INTEGER.fullmatch(emotion.strip()):
                raise DatasetError(f"{csv_path} line {line_no}: emotion '{_shown(emotion)}' is not an integer")
            raise DatasetError(f"{csv_path} line {line_no}: emotion {_shown(emotion)} out of range "
                               f"0..{len(EMOTIONS) - 1}")
        parts = pixels.split()
        if len(parts) != IMAGE_SIZE * IMAGE_SIZE:
            raise DatasetError(f"{csv_path} line {line_no}: {len(parts)} pixels, expected {IMAGE_SIZE * IMAGE_SIZE}")
        try:
            px = np.array(parts, dtype=np.int64)
        except (ValueError, OverflowError):  # OverflowError: a number beyond 64 bits
            raise DatasetError(f"{csv_path} line {line_no}: pixels must be integers 0..255") from None
        if px.min() < 0 or px.max() > 255:
            raise DatasetError(f"{csv_path} line {line_no}: pixel values must lie in 0..255")
        images.append(px.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE))
        labels.append(label)
        sources.append(f"{csv_path.name}:{line_no}")
    if not images:
        usage = " / ".join(sorted(wanted))
        raise DatasetError(f"split '{split}' is missing: {csv_path} has no rows with Usage {usage}")
    return {"images": np.stack(images), "labels": np.array(labels, np.int64), "sources": np.array(sources)}


def _file_signature(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()


# --------------------------------------------------------------------------- public API


def source_stamp(path: str | os.PathLike, split: str | None = None) -> tuple[str, int]:
    """A cheap change detector for in-memory caches (the app's): the modification times of the source
    (or of one split's folder) and of the folders two levels below it (splits, then emotions), where
    adding or removing an image shows, without reading or listing a single image. The disk cache's
    signature, which stats every file, is the thorough one."""
    p, depth = Path(path).expanduser(), 2
    if split is not None and (p / split).is_dir():
        p, depth = p / split, 1
    try:
        folders = level = [p]
        for _ in range(depth if p.is_dir() else 0):  # a fer2013.csv is one file: its own time says it all
            level = [c for f in level for c in f.iterdir() if c.is_dir()]
            folders = folders + level
        return str(p.resolve()), hash(tuple(f.stat().st_mtime_ns for f in folders))
    except OSError:
        return str(p), 0


def load_split(path: str | os.PathLike, split: str, use_cache: bool = True) -> Split:
    """Load one split ('train', 'val' or 'test') from a folder root or a fer2013.csv."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
    src = resolve_source(path)
    is_csv = src.is_file()
    if is_csv:
        signature = _file_signature(src) + (_file_signature(_pixels_csv(src)) if src.name == ferplus.NEW_CSV_NAME
                                            else "")
    elif ferplus.is_folder_layout(src):
        label_file = src / ferplus.FOLDERS[split] / ferplus.LABEL_FILE
        signature = _file_signature(label_file) + _file_signature(label_file.parent) if label_file.is_file() else None
    else:
        signature = _folder_signature(src, split) if _split_dir(src, split).is_dir() else None
    cache_file = None
    if use_cache and signature is not None:
        key = hashlib.sha256(f"v{CACHE_VERSION}|{src.resolve()}|{split}|{signature}".encode()).hexdigest()[:24]
        cache_file = cache_dir() / "datasets" / f"{split}-{key}.npz"
        if cache_file.is_file():
            try:
                with np.load(cache_file, allow_pickle=False) as z:
                    return _split(split, {k: z[k] for k in z.files})
            except (OSError, ValueError, KeyError):
                cache_file.unlink(missing_ok=True)  # a corrupt cache is just rebuilt
    if is_csv:
        arrays = _load_csv_split(_pixels_csv(src), split)
        if src.name == ferplus.NEW_CSV_NAME:
            arrays = _with_csv_votes(src, split, arrays)
    elif ferplus.is_folder_layout(src):
        arrays = _load_ferplus_folder_split(src, split)
    else:
        arrays = _load_folder_split(src, split)
    if cache_file is not None:
        def _save(tmp: Path) -> None:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            tmp.write_bytes(buf.getvalue())
        try:
            write_atomic(cache_file, _save)
        except OSError:
            pass  # an unwritable cache only costs speed
    return _split(split, arrays)


def _split(name: str, arrays: dict[str, np.ndarray]) -> Split:
    """A Split from the arrays a loader returns (and the cache stores): images, labels, sources, and
    for FER+ votes and, where known, FER-2013's labels."""
    votes = arrays.get("votes")
    fer2013 = arrays.get("fer2013_labels")
    classes = tuple(arrays["classes"].tolist()) if "classes" in arrays else EMOTIONS
    return Split(name, torch.from_numpy(arrays["images"]).unsqueeze(1), torch.from_numpy(arrays["labels"]),
                 tuple(arrays["sources"].tolist()), classes=FERPLUS_EMOTIONS if votes is not None else classes,
                 votes=None if votes is None else torch.from_numpy(votes),
                 fer2013_labels=None if fer2013 is None else torch.from_numpy(fer2013))


def _by_majority(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Only the faces FER+'s majority protocol keeps, labelled with their majority emotion."""
    labels = majority_labels(torch.from_numpy(arrays["votes"])).numpy()
    keep = labels >= 0
    if not keep.any():
        raise DatasetError("no face of this split has a FER+ majority emotion")
    return {**{k: v[keep] for k, v in arrays.items()}, "labels": labels[keep].astype(np.int64)}


def _load_ferplus_folder_split(root: Path, split: str) -> dict[str, np.ndarray]:
    images, sources, votes = ferplus.read_folder_split(root, split)
    return _by_majority({"images": images, "labels": np.zeros(len(images), np.int64),
                         "sources": np.array(sources), "votes": votes})


def _with_csv_votes(new_csv: Path, split: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """fer2013.csv's faces of ``split`` joined with fer2013new.csv's votes, row for row. Rows without an
    image name (not faces) are dropped, and so are the file names the file gives to several rows."""
    rows, keep, votes = _pair_votes(new_csv, split)
    if len(rows) != len(arrays["labels"]):
        raise DatasetError(f"{new_csv} has {len(rows)} rows of split '{split}' but {CSV_NAME} has "
                           f"{len(arrays['labels'])}: the two files must list the same faces in the same order")
    arrays = {k: v[keep] for k, v in arrays.items()}
    return _by_majority({**arrays, "fer2013_labels": arrays["labels"], "votes": votes})


def _pair_votes(new_csv: Path, split: str) -> tuple[list, list[int], np.ndarray]:
    """fer2013new.csv's rows of ``split``, which of them are faces with votes (a row without an image
    name is not a face; a file name given to several rows is no one face's), and those faces' votes."""
    rows = ferplus.read_new_csv(new_csv)
    wanted = {u for u, s in CSV_USAGE_TO_SPLIT.items() if s == split}
    mine = [r for r in rows if r[1] in wanted]
    shared = {n for n, k in Counter(r[2] for r in rows if r[2]).items() if k > 1}
    keep = [i for i, r in enumerate(mine) if r[3] is not None and r[2] not in shared]
    if not keep:
        raise DatasetError(f"{new_csv}: no face of split '{split}' has votes")
    return mine, keep, np.stack([mine[i][3] for i in keep])


def load_held_out(path: str | os.PathLike, splits: list[str]) -> dict[str, Split]:
    """The splits beside train/ (of ``splits``, as ``available_splits`` found them) that training
    must never see: cleaning removes their copies from train/."""
    return {s: load_split(path, s) for s in ("val", "test") if s in splits}


def stratified_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Carve a validation slice out of ``split`` with the same class mix (seeded)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must lie strictly between 0 and 1, got {fraction}")
    g = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c in range(len(split.classes)):
        idx = torch.nonzero(split.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = round(len(idx) * fraction)
        held.append(idx[:n_val])
        keep.append(idx[n_val:])
    keep_idx, held_idx = torch.cat(keep).sort().values, torch.cat(held).sort().values
    return split.select(keep_idx, split.name), split.select(held_idx, "val")


def per_class_subset(split: Split, per_class: int, seed: int) -> Split:
    """At most ``per_class`` images of each class (seeded): for short runs."""
    if per_class <= 0:
        raise ValueError(f"subset must be a positive number of images per class, got {per_class}")
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(len(split.classes)):
        idx = torch.nonzero(split.labels == c).flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return split.select(torch.cat(chosen).sort().values)
