"""Finding FER+'s faces in a FER-2013 image-release copy by their pixels: the copy is lossy, contrast-
stretched and under other names, and a face it lacks must stay unmatched rather than be guessed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fer_core.common.paths import cache_dir
from fer_core.data import label_match
from fer_core.data.dataset import Split, load_split
from fer_core.data.label_match import (
    counterpart_split,
    fer2013_labels_for,
    match_faces,
    thumbnails,
    unique_faces,
)
from tests.ferplus_support import (
    clear_votes,
    distinct_face,
    release_jpeg,
    write_ferplus_faces,
    write_release_copy,
)

N_FACES, N_ABSENT, N_EXTRA = 40, 4, 10


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Split, Split, np.ndarray]:
    """A FER+ val split of 40 faces, and a release copy of the first 36 of them plus 10 other faces.
    Returns both splits and the FER-2013 label each FER+ face should get (-1: not in the copy)."""
    rng = np.random.default_rng(7)
    faces = [distinct_face(rng) for _ in range(N_FACES + N_EXTRA)]
    ferplus_votes = [clear_votes(int(rng.integers(0, 8)), rng) for _ in range(N_FACES)]
    write_ferplus_faces(tmp_path / "ferplus", {"val": faces[:N_FACES]}, {"val": ferplus_votes})
    in_copy = list(range(N_FACES - N_ABSENT)) + list(range(N_FACES, N_FACES + N_EXTRA))
    labels = [int(rng.integers(0, 7)) for _ in faces]
    where = write_release_copy(tmp_path / "fer2013", "test", [faces[i] for i in in_copy],
                               [labels[i] for i in in_copy], rng)
    ferplus, fer2013 = load_split(tmp_path / "ferplus", "val"), load_split(tmp_path / "fer2013", "test")
    assert sorted(fer2013.sources) == sorted(where)  # every copy file was loaded
    expected = np.array([labels[i] if i < N_FACES - N_ABSENT else -1 for i in range(N_FACES)])
    return ferplus, fer2013, expected


def test_every_face_is_found_in_a_lossy_shuffled_copy_and_absent_ones_stay_unmatched(pair) -> None:
    ferplus, fer2013, expected = pair
    assert len(ferplus) == N_FACES and ferplus.fer2013_labels is None  # Microsoft's folders carry no FER-2013 label
    match = match_faces(ferplus, fer2013)
    assert match.labels.tolist() == expected.tolist()
    assert match.matched == match.labelled == N_FACES - N_ABSENT
    found = match.index[match.index >= 0]
    assert len(set(found.tolist())) == len(found)  # no two faces claim the same copy
    assert (fer2013.labels.numpy()[found] == expected[expected >= 0]).all()


def test_the_copy_really_differs_from_the_faces(pair) -> None:
    """Guard on the fixture: were the copy near-identical, the test above would prove little."""
    ferplus, fer2013, _ = pair
    match = match_faces(ferplus, fer2013)
    ok = match.index >= 0
    diff = (ferplus.images[torch.from_numpy(ok)].float() - fer2013.images[match.index[ok]].float()).abs()
    assert diff.mean() > 15


def test_a_blank_face_matches_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    faces = [distinct_face(rng) for _ in range(5)] + [np.full((48, 48), 120, np.uint8)]
    ferplus = Split("val", torch.from_numpy(np.stack(faces))[:, None], torch.zeros(6, dtype=torch.long), ("x",) * 6)
    copies = [*faces[:5], np.full((48, 48), 90, np.uint8), np.full((48, 48), 140, np.uint8)]
    fer2013 = Split("test", torch.from_numpy(np.stack(copies))[:, None], torch.arange(7) % 7, ("y",) * 7)
    assert match_faces(ferplus, fer2013).labels.tolist() == [0, 1, 2, 3, 4, -1]


def test_pixel_identical_copies_are_one_face_and_conflicting_labels_give_none() -> None:
    rng = np.random.default_rng(2)
    faces = [distinct_face(rng) for _ in range(4)]
    jpeg = [cv2.imdecode(np.frombuffer(release_jpeg(f, rng), np.uint8), cv2.IMREAD_GRAYSCALE) for f in faces]
    copies = np.stack([jpeg[0], jpeg[1], jpeg[1], jpeg[2], jpeg[2], jpeg[3]])[:, None]
    fer2013 = Split("test", torch.from_numpy(copies), torch.tensor([0, 4, 4, 2, 5, 6]), ("y",) * 6)
    first, group_labels = unique_faces(fer2013.images, fer2013.labels)
    assert len(first) == 4 and sorted(group_labels.tolist()) == [-1, 0, 4, 6]
    ferplus = Split("val", torch.from_numpy(np.stack(faces))[:, None], torch.zeros(4, dtype=torch.long), ("x",) * 4)
    match = match_faces(ferplus, fer2013)
    assert match.labels.tolist() == [0, 4, -1, 6]  # found twice over, labelled twice alike: fine
    assert (match.index >= 0).all() and match.matched == 4 and match.labelled == 3


def test_thumbnails_ignore_a_contrast_curve_and_jpeg() -> None:
    rng = np.random.default_rng(3)
    face = distinct_face(rng)
    copy = cv2.imdecode(np.frombuffer(release_jpeg(face, rng), np.uint8), cv2.IMREAD_GRAYSCALE)
    other = distinct_face(rng)
    t = thumbnails(torch.from_numpy(np.stack([face, copy, other]))[:, None])
    assert t.norm(dim=1) == pytest.approx(torch.ones(3), abs=1e-5)
    assert float(t[0] @ t[1]) > 0.95 > float(t[0] @ t[2])


def test_a_single_reference_face_still_matches() -> None:
    rng = np.random.default_rng(4)
    face = distinct_face(rng)
    split = Split("s", torch.from_numpy(face)[None, None], torch.tensor([3]), ("z",))
    assert match_faces(split, split).labels.tolist() == [3]


def test_the_result_is_cached_on_disk_by_content(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    ferplus, fer2013, expected = pair
    first = fer2013_labels_for(ferplus, fer2013)
    files = list((cache_dir() / "label_match").glob("*.npz"))
    assert len(files) == 1 and ferplus.content_hash() in files[0].name and fer2013.content_hash() in files[0].name

    def refuse(*_):
        raise AssertionError("matched again instead of reading the cache")

    monkeypatch.setattr(label_match, "match_faces", refuse)
    again = fer2013_labels_for(ferplus, fer2013)
    assert again.labels.tolist() == first.labels.tolist() == expected.tolist()
    files[0].write_bytes(b"not an npz")  # a broken cache is rebuilt, not an error
    monkeypatch.undo()
    assert fer2013_labels_for(ferplus, fer2013).labels.tolist() == expected.tolist()


@pytest.mark.parametrize(("split", "available", "expected"), [
    ("val", ["train", "test"], "test"),  # the image release calls PublicTest test/
    ("val", ["train", "val", "test"], "val"),
    ("train", ["train", "test"], "train"),
    ("test", ["train"], "train"),
    ("test", [], None),
])
def test_counterpart_split(split: str, available: list[str], expected: str | None) -> None:
    assert counterpart_split(split, available) == expected
