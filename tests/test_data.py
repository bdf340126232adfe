"""Loading FER-2013 in both layouts, caching, and a clear error for every kind of bad input."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fer_core import EMOTIONS
from fer_core.data.dataset import (
    DatasetError,
    available_splits,
    load_split,
    per_class_subset,
    stratified_split,
    validate_dataset,
)
from tests.conftest import make_face, write_csv_dataset, write_folder_dataset


def test_folder_layout_loads_as_uint8_tensor(folder_data: Path) -> None:
    train = load_split(folder_data, "train")
    assert train.images.dtype == torch.uint8 and train.images.shape == (40 * 7, 1, 48, 48)
    assert train.labels.dtype == torch.int64
    assert train.class_counts() == [40] * 7
    assert available_splits(folder_data) == ["train", "test"]
    assert train.sources[0].startswith("train/angry/")


def test_class_folders_are_case_insensitive_and_any_size_is_resized(tmp_path: Path) -> None:
    root = tmp_path / "fer"
    rng = np.random.default_rng(0)
    for i, name in enumerate(EMOTIONS):
        d = root / "train" / name.upper()
        d.mkdir(parents=True)
        big = cv2.resize(make_face(i, rng), (96, 120))
        cv2.imwrite(str(d / "a.jpg"), cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
    train = load_split(root, "train")
    assert train.images.shape == (7, 1, 48, 48)
    assert sorted(train.labels.tolist()) == list(range(7))


def test_csv_usage_maps_to_splits(csv_data: Path) -> None:
    assert available_splits(csv_data) == ["train", "val", "test"]
    train, val, test = (load_split(csv_data, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (12 * 7, 4 * 7, 4 * 7)
    assert train.sources[0] == "fer2013.csv:2"
    # a folder that holds fer2013.csv is accepted too
    assert len(load_split(csv_data.parent, "train")) == len(train)


def test_csv_and_folder_decode_to_identical_pixels(tmp_path: Path) -> None:
    csv_path = write_csv_dataset(tmp_path / "fer2013.csv", {"Training": 2})
    rows = csv_path.read_text().splitlines()[1:]
    first = np.array(rows[0].split(",")[1].split(), np.uint8).reshape(48, 48)
    assert torch.equal(load_split(csv_path, "train").images[0, 0], torch.from_numpy(first))


def test_second_load_comes_from_the_cache(folder_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_split(folder_data, "train")

    def no_decoding(*_args: object) -> None:
        raise AssertionError("the cached split was decoded again")

    monkeypatch.setattr("fer_core.data.dataset._load_folder_split", no_decoding)
    t0 = time.perf_counter()
    again = load_split(folder_data, "train")
    assert time.perf_counter() - t0 < 2.0
    assert torch.equal(first.images, again.images) and first.sources == again.sources


def test_cache_invalidates_when_a_file_changes(folder_data: Path) -> None:
    load_split(folder_data, "train")
    target = folder_data / "train" / "angry" / "train_0_0.png"
    cv2.imwrite(str(target), np.zeros((48, 48), np.uint8))
    assert load_split(folder_data, "train").images[0].sum() == 0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda root: (root / "train" / "happy" / "bad.jpg").write_bytes(b"not an image"), "bad.jpg: not a readable"),
        (lambda root: (root / "train" / "happy" / "empty.png").write_bytes(b""), "empty.png: empty file"),
        (lambda root: (root / "train" / "bored").mkdir(), "unknown class folder"),
    ],
)
def test_bad_folder_input_names_the_file(folder_data: Path, mutate, message: str) -> None:
    mutate(folder_data)
    with pytest.raises(DatasetError, match=message):
        load_split(folder_data, "train", use_cache=False)


def test_missing_split_and_missing_path(folder_data: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="split 'val' is missing"):
        load_split(folder_data, "val")
    with pytest.raises(DatasetError, match="does not exist"):
        load_split(tmp_path / "nowhere", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="none of the split folders"):
        validate_dataset(tmp_path / "empty")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("3,1 2 3,Training", "line 3: 3 pixels, expected 2304"),
        ("9," + " ".join(["0"] * 2304) + ",Training", "line 3: emotion 9 out of range"),
        ("x," + " ".join(["0"] * 2304) + ",Training", "line 3: emotion 'x' is not an integer"),
        ("1," + " ".join(["300"] * 2304) + ",Training", "line 3: pixel values must lie in 0..255"),
        ("1," + " ".join(["a"] * 2304) + ",Training", "line 3: pixels must be integers"),
        ("1," + " ".join(["0"] * 2304) + ",Validation", "line 3: Usage 'Validation'"),
    ],
)
def test_bad_csv_rows_name_the_line(tmp_path: Path, row: str, message: str) -> None:
    csv_path = write_csv_dataset(tmp_path / "fer2013.csv", {"Training": 0})
    good = "0," + " ".join(["10"] * 2304) + ",Training"
    csv_path.write_text(f"emotion,pixels,Usage\n{good}\n{row}\n")
    with pytest.raises(DatasetError, match=message):
        load_split(csv_path, "train", use_cache=False)


def test_csv_with_a_bom_loads(tmp_path: Path) -> None:
    """Spreadsheet tools save CSV with a byte-order mark before the header."""
    p = tmp_path / "fer2013.csv"
    p.write_bytes("\ufeffemotion,pixels,Usage\n3,".encode() + " ".join(["10"] * 2304).encode() + b",Training\n")
    assert available_splits(p) == ["train"]
    assert load_split(p, "train", use_cache=False).labels.tolist() == [3]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"0," + b"1" * 200_000 + b",Training\n", "line 2: not a well-formed CSV row"),  # over csv's field limit
    ],
)
def test_malformed_csv_is_one_clear_line_everywhere(tmp_path: Path, body: bytes, message: str) -> None:
    p = tmp_path / "fer2013.csv"
    p.write_bytes(b"emotion,pixels,Usage\n" + body)
    for call in (lambda: available_splits(p), lambda: validate_dataset(p), lambda: load_split(p, "train")):
        with pytest.raises(DatasetError, match=message):
            call()


def test_csv_without_required_columns(tmp_path: Path) -> None:
    p = tmp_path / "fer2013.csv"
    p.write_text("label,pixels\n1,2 3\n")
    with pytest.raises(DatasetError, match="lacks column"):
        load_split(p, "train")


def test_stratified_validation_slice_keeps_class_mix(folder_data: Path) -> None:
    train = load_split(folder_data, "train")
    rest, val = stratified_split(train, 0.25, seed=1)
    assert val.class_counts() == [10] * 7 and rest.class_counts() == [30] * 7
    assert set(rest.sources).isdisjoint(val.sources)
    again, _ = stratified_split(train, 0.25, seed=1)
    assert rest.sources == again.sources


def test_per_class_subset(tmp_path: Path) -> None:
    root = write_folder_dataset(tmp_path / "fer", {"train": 5})
    sub = per_class_subset(load_split(root, "train"), 3, seed=0)
    assert sub.class_counts() == [3] * 7


def test_the_source_stamp_sees_an_image_added_to_any_emotion_folder(tmp_path: Path) -> None:
    from fer_core.data.dataset import source_stamp

    root = write_folder_dataset(tmp_path / "fer", {"train": 2, "test": 2})
    before, test_before = source_stamp(root), source_stamp(root, "test")
    assert source_stamp(root) == before  # nothing changed, nothing seen
    time.sleep(0.01)
    cv2.imwrite(str(root / "test" / "fear" / "new.png"), make_face(2, np.random.default_rng(0)))
    assert source_stamp(root) != before and source_stamp(root, "test") != test_before
    assert source_stamp(tmp_path / "missing") == (str(tmp_path / "missing"), 0)
