"""Generated FER+ faces that can be told apart by their pixels, with chosen votes, in Microsoft's folders,
and a FER-2013 image-release copy of them (JPEG, contrast-stretched, noisy, under other names): what the
label matcher and the Dataset page are tested on. (conftest.py's FER+ writers draw look-alike bars.)"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fer_core.common.labels import EMOTIONS
from fer_core.data.ferplus import FOLDERS, LABEL_FILE
from fer_core.data.votes import MICROSOFT_COLUMNS, VOTE_COLUMNS


def distinct_face(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A face unlike every other at low resolution (a smooth random pattern plus a little grain), as
    real faces are: what the pixel matcher relies on."""
    coarse = rng.normal(128, 45, (6, 6)).astype(np.float32)
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 4, (size, size))
    return img.clip(0, 255).astype(np.uint8)


def votes(counts: dict[str, int]) -> np.ndarray:
    """Ten vote counts in ``VOTE_COLUMNS`` order from {column: count}."""
    out = np.zeros(len(VOTE_COLUMNS), np.uint8)
    for name, n in counts.items():
        out[VOTE_COLUMNS.index(name)] = n
    return out


def clear_votes(label: int, rng: np.random.Generator) -> np.ndarray:
    """Votes whose majority is ``label`` (an index in FERPLUS_EMOTIONS), with a random runner-up."""
    top = int(rng.integers(6, 11))
    other = int(rng.integers(0, len(VOTE_COLUMNS) - 1))
    other += other >= label
    v = np.zeros(len(VOTE_COLUMNS), np.uint8)
    v[label], v[other] = top, 10 - top
    return v


def microsoft_row(counts: np.ndarray) -> list[int]:
    """``VOTE_COLUMNS`` order -> the order of label.csv and fer2013new.csv."""
    return [int(counts[VOTE_COLUMNS.index(c)]) for c in MICROSOFT_COLUMNS]


def write_ferplus_faces(root: Path, faces: dict[str, list[np.ndarray]], vote_rows: dict[str, list[np.ndarray]],
                         first_number: int = 0) -> Path:
    """Microsoft's layout: ROOT/FER2013{Train,Valid,Test}/ferNNNNNNN.png and a headerless label.csv."""
    number = first_number
    for split, imgs in faces.items():
        folder = root / FOLDERS[split]
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for img, v in zip(imgs, vote_rows[split], strict=True):
            name = f"fer{number:07d}.png"
            number += 1
            cv2.imwrite(str(folder / name), img)
            lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, microsoft_row(v))))
        (folder / LABEL_FILE).write_text("\n".join(lines) + "\n")
    return root


def release_jpeg(img: np.ndarray, rng: np.random.Generator, quality: int = 70) -> bytes:
    """What the FER-2013 image release did to a face: contrast-stretched, then saved as a lossy JPEG
    (plus some grain of our own)."""
    stretched = cv2.equalizeHist(img).astype(np.float32) + rng.normal(0, 6, img.shape)
    ok, buf = cv2.imencode(".jpg", stretched.clip(0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def write_release_copy(root: Path, split: str, faces: list[np.ndarray], labels: list[int],
                       rng: np.random.Generator) -> dict[str, int]:
    """The faces as the image release has them: ROOT/<split>/<emotion>/PublicTest_<id>.jpg, under
    shuffled random ids. Returns each written file's source (as load_split names it) -> face index."""
    ids = rng.choice(10**8, size=len(faces), replace=False)
    where: dict[str, int] = {}
    for i in rng.permutation(len(faces)):
        folder = root / split / EMOTIONS[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        name = f"PublicTest_{ids[i]}.jpg"
        (folder / name).write_bytes(release_jpeg(faces[i], rng))
        where[f"{split}/{EMOTIONS[labels[i]]}/{name}"] = int(i)
    return where
