"""FER+: reading Microsoft's two layouts, its protocol on the votes, and the label space per model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fer_core.common.labels import EMOTIONS, FERPLUS_EMOTIONS, to_label_space
from fer_core.data.dataset import DatasetError, available_splits, dataset_classes, is_ferplus, load_split
from fer_core.data.votes import (
    annotator_agreement,
    majority_labels,
    multi_target_mask,
    vote_cross_entropy,
    vote_distribution,
)
from tests.conftest import write_ferplus_csv_pair, write_ferplus_folders
from tests.ferplus_support import votes as vote_row


def votes(**counts: int) -> torch.Tensor:
    return torch.from_numpy(vote_row(counts))[None]


# --------------------------------------------------------------------------- the protocol


def test_majority_drops_outlier_votes_then_needs_more_than_half() -> None:
    assert majority_labels(votes(happy=6, sad=3, angry=1)).item() == EMOTIONS.index("happy")
    # 4 of 9 after the single vote is dropped: no majority
    assert majority_labels(votes(neutral=4, sad=3, angry=2, fear=1)).item() == -1
    # the single 'fear' vote is an outlier: 5 of 8 left is a majority
    assert majority_labels(votes(neutral=5, sad=3, fear=1)).item() == EMOTIONS.index("neutral")
    assert majority_labels(votes(unknown=8, sad=2)).item() == -1  # the winner must be an emotion
    assert majority_labels(votes(not_a_face=10)).item() == -1
    assert majority_labels(votes(contempt=6, neutral=4)).item() == FERPLUS_EMOTIONS.index("contempt")


def test_distribution_multitarget_agreement_and_cross_entropy() -> None:
    v = votes(happy=6, surprise=3, sad=1)
    dist = vote_distribution(v)
    assert dist.shape == (1, 8)
    assert dist[0, EMOTIONS.index("happy")].item() == pytest.approx(6 / 9)
    assert dist[0, EMOTIONS.index("sad")].item() == 0  # an outlier vote
    mask = multi_target_mask(v)[0]
    assert mask.nonzero().flatten().tolist() == sorted([EMOTIONS.index("happy"), EMOTIONS.index("surprise")])
    probs = torch.zeros(1, 8)
    probs[0, EMOTIONS.index("surprise")] = 1.0
    assert annotator_agreement(probs, v).item() == pytest.approx(0.3)  # 3 of the 10 annotators
    perfect = vote_cross_entropy(dist, v).item()
    assert vote_cross_entropy(probs, v).item() > perfect


# --------------------------------------------------------------------------- Microsoft's folders


def test_folder_layout_reads_votes_in_our_class_order(ferplus_data: Path) -> None:
    assert is_ferplus(ferplus_data)
    assert dataset_classes(ferplus_data) == FERPLUS_EMOTIONS
    assert available_splits(ferplus_data) == ["train", "val"]
    train = load_split(ferplus_data, "train")
    assert train.classes == FERPLUS_EMOTIONS
    assert train.class_counts() == [12] * 8  # the ambiguous face of every class is dropped
    assert train.votes.shape == (len(train), 10)
    # every face's label is the column holding most of its votes
    assert torch.equal(train.votes[:, :8].argmax(1), train.labels)
    assert train.sources[0].startswith("FER2013Train/fer")
    again = load_split(ferplus_data, "train")  # from the cache
    assert torch.equal(again.votes, train.votes) and again.classes == FERPLUS_EMOTIONS


def test_the_row_order_of_label_csv_is_microsofts(tmp_path: Path) -> None:
    root = write_ferplus_folders(tmp_path / "fp", {"FER2013Train": 1}, ambiguous=0)
    label_csv = root / "FER2013Train" / "label.csv"
    first = label_csv.read_text().splitlines()[0].split(",")[0]
    # neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
    label_csv.write_text(f'{first},"(0, 0, 48, 48)",0,0,0,0,0,0,8,2,0,0\n')
    split = load_split(root, "train")
    assert split.classes[split.labels[0]] == "fear"


@pytest.mark.parametrize(("row", "message"), [
    ('missing.png,"(0, 0, 48, 48)",10,0,0,0,0,0,0,0,0,0', "missing.png is missing"),
    ('{name},"(0, 0, 48, 48)",10,0,0,x,0,0,0,0,0,0', "vote counts must be whole numbers"),
    ('{name},"(0, 0, 48, 48)",10,0,0,0,0,0,0,0,0', "11 fields"),
    ('{name},"(0, 0, 48, 48)",-1,0,0,0,0,0,0,0,0,0', "vote counts must be whole numbers"),
    ('{name},"(0, 0, 48, 48)",0,0,0,0,0,0,0,0,0,0', "no votes"),
    ('{name},"(0, 0, 48)",10,0,0,0,0,0,0,0,0,0', r"is not '\(left, top, right, bottom\)'"),
    ('{first},"(0, 0, 48, 48)",9,0,0,0,0,0,0,0,0,0', "listed twice"),
    ('../x.png,"(0, 0, 48, 48)",10,0,0,0,0,0,0,0,0,0', "is not a file name"),
])
def test_a_malformed_label_csv_names_its_row(tmp_path: Path, row: str, message: str) -> None:
    root = write_ferplus_folders(tmp_path / "fp", {"FER2013Train": 1}, ambiguous=0)
    label_csv = root / "FER2013Train" / "label.csv"
    lines = label_csv.read_text().splitlines()
    first = lines[0].split(",")[0]
    (root / "FER2013Train" / "extra.png").write_bytes((root / "FER2013Train" / first).read_bytes())
    label_csv.write_text("\n".join([*lines[:2], row.format(name="extra.png", first=first)]) + "\n")
    with pytest.raises(DatasetError, match=message) as err:
        load_split(root, "train", use_cache=False)
    assert "label.csv line 3" in str(err.value)


def test_a_folder_without_label_csv_or_a_broken_png_is_refused(tmp_path: Path) -> None:
    root = write_ferplus_folders(tmp_path / "fp", {"FER2013Train": 1}, ambiguous=0)
    first = sorted((root / "FER2013Train").glob("*.png"))[0]
    first.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=first.name):
        load_split(root, "train", use_cache=False)
    (root / "FER2013Train" / "label.csv").unlink()
    with pytest.raises(DatasetError, match=r"no label\.csv"):
        load_split(root, "train", use_cache=False)


# --------------------------------------------------------------------------- the CSV pair


def test_the_csv_pair_joins_votes_row_for_row_and_keeps_fer2013s_labels(tmp_path: Path) -> None:
    folder = write_ferplus_csv_pair(tmp_path / "pair", {"Training": 5, "PublicTest": 5})
    assert is_ferplus(folder) and available_splits(folder) == ["train", "val"]
    val = load_split(folder, "val")
    assert val.classes == FERPLUS_EMOTIONS
    assert len(val) == 35  # the row with no image name (not a face) is left out
    assert val.fer2013_labels is not None
    differ = (val.fer2013_labels != val.labels).sum().item()
    assert differ == 7  # every fifth face of each class was given another FER-2013 label
    assert load_split(folder / "fer2013new.csv", "val").content_hash() == val.content_hash()


def test_a_csv_pair_that_disagrees_in_length_is_refused(tmp_path: Path) -> None:
    folder = write_ferplus_csv_pair(tmp_path / "pair", {"Training": 3})
    new = folder / "fer2013new.csv"
    new.write_text("\n".join(new.read_text().splitlines()[:-2]) + "\n")
    with pytest.raises(DatasetError, match="same faces in the same order"):
        load_split(folder, "train", use_cache=False)
    (folder / "fer2013.csv").unlink()
    with pytest.raises(DatasetError, match=r"put fer2013\.csv beside it"):
        load_split(new, "train", use_cache=False)


def test_a_bad_vote_row_in_fer2013new_names_its_line(tmp_path: Path) -> None:
    folder = write_ferplus_csv_pair(tmp_path / "pair", {"Training": 3})
    new = folder / "fer2013new.csv"
    lines = new.read_text().splitlines()
    lines[4] = "Training,fer9999999.png,1,2,three,0,0,0,0,0,0,0"
    new.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"fer2013new\.csv line 5: vote counts"):
        load_split(folder, "train", use_cache=False)


# --------------------------------------------------------------------------- label spaces


def test_cross_label_rules() -> None:
    seven = np.array([[0.1, 0, 0, 0.6, 0.1, 0.1, 0.1]], np.float32)
    on_ferplus = to_label_space(seven, EMOTIONS, FERPLUS_EMOTIONS)
    assert on_ferplus.shape == (1, 8) and on_ferplus[0, 7] == 0  # a 7-class model never answers contempt
    eight = np.array([[0.1, 0, 0, 0.2, 0.1, 0.1, 0.1, 0.4]], np.float32)
    on_fer2013 = to_label_space(eight, FERPLUS_EMOTIONS, EMOTIONS)
    assert on_fer2013.shape == (1, 7) and on_fer2013.argmax() == EMOTIONS.index("happy")  # argmax over the 7


def test_a_split_restricted_to_fer2013s_classes_leaves_contempt_out(ferplus_data: Path) -> None:
    val = load_split(ferplus_data, "val")
    seven = val.restricted_to(EMOTIONS)
    assert seven.classes == EMOTIONS and len(seven) == len(val) - 4
    assert seven.class_counts() == [4] * 7


def test_flat_class_folders_are_one_test_split_in_their_own_classes(tmp_path: Path) -> None:
    import cv2

    from tests.conftest import make_ferplus_face

    rng = np.random.default_rng(0)
    for label, name in [(0, "angry"), (7, "contempt")]:
        (tmp_path / "ck" / name).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(tmp_path / "ck" / name / f"S{i}.png"), make_ferplus_face(label, rng))
    assert available_splits(tmp_path / "ck") == ["test"]
    split = load_split(tmp_path / "ck", "test")
    assert split.classes == FERPLUS_EMOTIONS and split.class_counts() == [3, 0, 0, 0, 0, 0, 0, 3]


def test_class_counts_come_from_the_votes_alone(ferplus_data: Path, tmp_path: Path) -> None:
    """What a duration estimate reads: the same counts as loading the faces, from label.csv or
    fer2013new.csv alone."""
    from fer_core.data.dataset import split_class_counts

    pair = write_ferplus_csv_pair(tmp_path / "pair", {"Training": 5, "PublicTest": 5})
    for data in (ferplus_data, pair):
        assert split_class_counts(data) == {s: tuple(load_split(data, s).class_counts()) for s in ("train", "val")}


def test_a_face_box_inside_a_larger_png_is_cut_out(tmp_path: Path) -> None:
    import cv2

    root = write_ferplus_folders(tmp_path / "fp", {"FER2013Train": 1}, ambiguous=0)
    big = np.zeros((96, 96), np.uint8)
    big[24:72, 24:72] = 200  # the face: the bright middle
    cv2.imwrite(str(root / "FER2013Train" / "big.png"), big)
    label_csv = root / "FER2013Train" / "label.csv"
    label_csv.write_text('big.png,"(24, 24, 72, 72)",10,0,0,0,0,0,0,0,0,0\n')
    assert load_split(root, "train", use_cache=False).images.min() == 200
    label_csv.write_text('big.png,"(24, 24, 120, 72)",10,0,0,0,0,0,0,0,0,0\n')
    with pytest.raises(DatasetError, match=r"lies outside big\.png"):
        load_split(root, "train", use_cache=False)
