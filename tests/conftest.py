"""Shared fixtures: small generated FER-2013 look-alikes in both formats, and the real data when present."""

from __future__ import annotations

import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from fer_core import EMOTIONS
from fer_core.common.labels import FERPLUS_EMOTIONS
from fer_core.data.ferplus import FOLDERS
from fer_core.data.votes import MICROSOFT_COLUMNS, VOTE_COLUMNS
from tests.browser_support import app_url, chromium  # noqa: F401  (fixtures for browser tests)
from tests.ferplus_support import microsoft_row, write_ferplus_faces

REAL_DATA = Path(os.environ.get("FER_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "fer2013")


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the developer's caches, runs or active model."""
    base = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("FER_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("FER_RUNS_DIR", str(base / "runs"))
    monkeypatch.delenv("FER_WEIGHTS", raising=False)
    for name in [n for n in os.environ if n.startswith(("FER_MAX_", "FER_PUBLIC", "FER_ADMIN", "FER_ALLOW"))]:
        monkeypatch.delenv(name)  # a deployment's settings in the developer's shell must not change the tests


def make_face(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A learnable synthetic 'face': each class draws a bright bar at its own place and angle."""
    img = rng.normal(100, 12, (size, size)).clip(0, 255).astype(np.uint8)
    angle = label * np.pi / len(EMOTIONS)
    c = size / 2 + rng.normal(0, 1.5, 2)
    d = np.array([np.cos(angle), np.sin(angle)]) * size * 0.35
    p1, p2 = (c - d).astype(int), (c + d).astype(int)
    cv2.line(img, tuple(int(v) for v in p1), tuple(int(v) for v in p2), 230, 4)
    return img


def write_folder_dataset(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for label, name in enumerate(EMOTIONS):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                cv2.imwrite(str(d / f"{split}_{label}_{i}.png"), make_face(label, rng))
    return root


def write_csv_dataset(path: Path, per_usage: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["emotion,pixels,Usage"]
    for usage, n in per_usage.items():
        for label in range(len(EMOTIONS)):
            for _ in range(n):
                lines.append(f"{label},{' '.join(map(str, make_face(label, rng).ravel()))},{usage}")
    path.write_text("\n".join(lines) + "\n")
    return path


def make_ferplus_face(label: int, rng: np.random.Generator) -> np.ndarray:
    """``make_face`` for FER-2013's classes; contempt (label 7) is a ring, which no bar looks like."""
    if label < len(EMOTIONS):
        return make_face(label, rng)
    img = rng.normal(100, 12, (48, 48)).clip(0, 255).astype(np.uint8)
    cv2.circle(img, (24, 24), 12, 230, 3)
    return img


def ferplus_votes(label: int, rng: np.random.Generator, ambiguous: bool = False) -> np.ndarray:
    """Ten votes in ``VOTE_COLUMNS`` order: a clear majority for ``label`` (plus one outlier vote), or an
    ambiguous 4/3/3 split that FER+'s majority protocol drops."""
    votes = np.zeros(len(VOTE_COLUMNS), np.uint8)
    others = [i for i in range(len(FERPLUS_EMOTIONS)) if i != label]
    a, b = rng.choice(others, 2, replace=False)
    votes[label], votes[a], votes[b] = (4, 3, 3) if ambiguous else (7, 2, 1)
    return votes


def write_ferplus_folders(root: Path, per_class: dict[str, int], seed: int = 0, ambiguous: int = 1) -> Path:
    """FER+ in Microsoft's layout: FER2013{Train,Valid,Test}/ with PNGs and a headerless label.csv; every
    class gets ``per_class[folder]`` clear faces plus ``ambiguous`` faces without a majority."""
    rng = np.random.default_rng(seed)
    split_of = {folder: split for split, folder in FOLDERS.items()}
    faces: dict[str, list[np.ndarray]] = {}
    votes: dict[str, list[np.ndarray]] = {}
    for folder, n in per_class.items():
        split = split_of[folder]
        faces[split], votes[split] = [], []
        for label in range(len(FERPLUS_EMOTIONS)):
            for i in range(n + ambiguous):
                faces[split].append(make_ferplus_face(label, rng))
                votes[split].append(ferplus_votes(label, rng, ambiguous=i >= n))
    return write_ferplus_faces(root, faces, votes)


def write_ferplus_csv_pair(folder: Path, per_usage: dict[str, int], seed: int = 0) -> Path:
    """FER+ as the pair fer2013.csv + fer2013new.csv, row for row; FER-2013's label of each face is the
    FER+ majority except for every fifth face, and every usage gets one row with no image name (not a face)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    old, new = ["emotion,pixels,Usage"], ["Usage,Image name," + ",".join(MICROSOFT_COLUMNS)]
    k = 0
    for usage, n in per_usage.items():
        for label in range(len(EMOTIONS)):
            for i in range(n + (label == 0)):
                old_label = (label + 1) % len(EMOTIONS) if i % 5 == 4 else label
                old.append(f"{old_label},{' '.join(map(str, make_face(label, rng).ravel()))},{usage}")
                name = "" if i == n else f"fer{k:07d}.png"
                new.append(f"{usage},{name}," + ",".join(map(str, microsoft_row(ferplus_votes(label, rng)))))
                k += 1
    (folder / "fer2013.csv").write_text("\n".join(old) + "\n")
    (folder / "fer2013new.csv").write_text("\n".join(new) + "\n")
    return folder


@pytest.fixture
def ferplus_data(tmp_path: Path) -> Path:
    return write_ferplus_folders(tmp_path / "ferplus", {"FER2013Train": 12, "FER2013Valid": 4})


@pytest.fixture
def folder_data(tmp_path: Path) -> Path:
    return write_folder_dataset(tmp_path / "fer", {"train": 40, "test": 10})


@pytest.fixture
def csv_data(tmp_path: Path) -> Path:
    return write_csv_dataset(tmp_path / "fer2013.csv", {"Training": 12, "PublicTest": 4, "PrivateTest": 4})


REAL_FERPLUS = Path(os.environ.get("FER_TEST_FERPLUS") or Path(__file__).resolve().parents[2] / "shared" / "ferplus")


@pytest.fixture(scope="session")
def real_ferplus() -> Path:
    if not (REAL_FERPLUS / "FER2013Valid").is_dir():
        pytest.skip(f"FER+ not found at {REAL_FERPLUS}")
    return REAL_FERPLUS


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not (REAL_DATA / "train").is_dir():
        pytest.skip(f"FER-2013 not found at {REAL_DATA}")
    return REAL_DATA


QUIET = dict(log=lambda _: None, show_bar=False)  # train() without its log lines and progress bar


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 training and 12 test faces per class: enough for the tiny network; modules may override."""
    return write_folder_dataset(tmp_path_factory.mktemp("d") / "fer", {"train": 40, "test": 12})


def write_test_video(path: str | os.PathLike, frames: list[np.ndarray], fps: int = 10, codec: str = "mpeg4") -> None:
    """Gray or RGB frames -> a small video file."""
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
