"""The Dataset page on FER+, run headless with AppTest: the votes per class, how ambiguous each class is,
the most disputed faces, and FER-2013's labels against FER+'s majority, found by pixels in a FER-2013
copy (Microsoft's folders) or read from fer2013.csv (the CSV pair)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from fer_core.common.labels import EMOTIONS, FERPLUS_EMOTIONS
from fer_core.data.dataset import load_split
from fer_core.data.vote_stats import class_ambiguity, label_crosstab, mean_shares_by_class, most_disputed
from fer_core.data.votes import VOTE_COLUMNS
from tests.conftest import write_ferplus_csv_pair, write_folder_dataset
from tests.ferplus_support import (
    clear_votes,
    distinct_face,
    votes,
    write_ferplus_faces,
    write_release_copy,
)

PAGE = Path(__file__).resolve().parents[1] / "pages" / "dataset.py"
SAD, NEUTRAL = FERPLUS_EMOTIONS.index("sad"), FERPLUS_EMOTIONS.index("neutral")
DISPUTED = votes({"sad": 4, "neutral": 2, "happy": 1, "fear": 1, "unknown": 1, "angry": 1})  # kept: 4 of 6 left


@pytest.fixture(autouse=True)
def _fresh_streamlit_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """st.cache_* live for the whole process; each test starts as a fresh server would, and no
    FER-2013 copy configured in the developer's shell leaks in."""
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    monkeypatch.delenv("FER2013_DATA", raising=False)


@dataclass
class FerPlus:
    root: Path  # FER+ in Microsoft's folders: train and val
    copy: Path  # a FER-2013 image release holding val's faces (test/) and other faces (train/)
    val_fer2013: np.ndarray  # FER-2013's label of each val face


@pytest.fixture
def ferplus(tmp_path: Path) -> FerPlus:
    rng = np.random.default_rng(11)
    faces = {s: [distinct_face(rng) for _ in range(n)] for s, n in (("train", 24), ("val", 30))}
    vote_rows = {s: [clear_votes(i % 8, rng) for i in range(len(f))] for s, f in faces.items()}
    fer2013 = np.array([int(rng.integers(0, 7)) for _ in faces["val"]])
    for i in range(6):  # FER-2013 says sad where FER+ says neutral, six times over: the largest disagreement
        fer2013[i], vote_rows["val"][i] = SAD, votes({"neutral": 8, "sad": 2})
    vote_rows["val"][10] = vote_rows["val"][17] = DISPUTED
    root = write_ferplus_faces(tmp_path / "ferplus", faces, vote_rows)  # val's files are fer0000024.png on
    write_release_copy(tmp_path / "fer2013", "test", faces["val"], fer2013.tolist(), rng)
    write_release_copy(tmp_path / "fer2013", "train", [distinct_face(rng) for _ in range(7)], list(range(7)), rng)
    return FerPlus(root, tmp_path / "fer2013", fer2013)


def run_page(at: AppTest | None = None) -> AppTest:
    at = at or AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame_with_column(at: AppTest, column: str) -> pd.DataFrame:
    frames = [df.value for df in at.dataframe if column in df.value.columns]
    assert frames, f"no table with a '{column}' column"
    return frames[0]


def sources_in_caption(at: AppTest, label: str) -> list[str]:
    text = next(c.value for c in at.caption if c.value.startswith(f"{label}: "))
    return [s.strip("`") for s in text.removeprefix(f"{label}: ").split(", ")]


def test_ferplus_votes_sections_match_the_stats(ferplus: FerPlus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_DATA", str(ferplus.root))
    at = run_page()
    at.selectbox(key="votes_split").select("val")
    run_page(at)
    val = load_split(ferplus.root, "val")
    counts = frame_with_column(at, "val")
    assert list(counts.index) == list(FERPLUS_EMOTIONS) and counts["val"].tolist() == val.class_counts()

    split = frame_with_column(at, "not_a_face")
    expected = (100 * mean_shares_by_class(val.votes, val.labels, 8)).round(1)
    present = [c for c, n in enumerate(val.class_counts()) if n]
    assert list(split.index) == [FERPLUS_EMOTIONS[c] for c in present] and list(split.columns) == list(VOTE_COLUMNS)
    np.testing.assert_allclose(split.to_numpy(), expected[present])

    amb = frame_with_column(at, "vote entropy (bits)")
    stats = class_ambiguity(val.votes, val.labels, 8)
    assert amb["faces"].tolist() == stats.faces[present].tolist()
    np.testing.assert_allclose(amb["top emotion's share %"], (100 * stats.top_share[present]).round(1))

    disputed = sources_in_caption(at, "Most disputed")
    assert disputed == [val.sources[i] for i in most_disputed(val.votes, 24)]
    assert disputed[:2] == ["FER2013Valid/fer0000034.png", "FER2013Valid/fer0000041.png"]  # the two 4-of-10 faces
    at.selectbox(key="disputed_class").select("sad")
    run_page(at)
    assert sources_in_caption(at, "Most disputed") == [val.sources[i] for i in most_disputed(val.votes, 24, val.labels,
                                                                                               SAD)]


def test_fer2013_labels_found_in_a_copy_and_compared(ferplus: FerPlus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_DATA", str(ferplus.root))
    at = run_page()
    assert any("FER2013_DATA" in i.value for i in at.info)  # no copy named yet: the page says how to name one
    at.selectbox(key="votes_split").select("val")
    at.text_input(key="fer2013_copy_path").input(str(ferplus.copy))
    run_page(at)
    assert at.selectbox(key="fer2013_copy_split_val").value == "test"  # the image release's name for PublicTest
    assert any("Found **30** of 30 faces" in m.value for m in at.markdown)
    val = load_split(ferplus.root, "val")
    table = frame_with_column(at, "FER+ agrees %")
    expected = label_crosstab(ferplus.val_fer2013, val.labels, 7, 8)
    assert list(table.index) == list(EMOTIONS)
    np.testing.assert_array_equal(table[list(FERPLUS_EMOTIONS)].to_numpy(), expected)
    pair = at.selectbox(key="pair_fer2013_val").value, at.selectbox(key="pair_ferplus_val").value
    assert pair == ("sad", "neutral")
    assert sources_in_caption(at, "Examples") == [f"FER2013Valid/fer{24 + i:07d}.png" for i in range(6)]
    at.selectbox(key="pair_fer2013_val").select("happy")
    at.selectbox(key="pair_ferplus_val").select("angry")
    run_page(at)
    cell = np.flatnonzero((ferplus.val_fer2013 == EMOTIONS.index("happy")) & (val.labels.numpy() == 0))
    assert len(cell) and sources_in_caption(at, "Examples") == [val.sources[i] for i in cell]


def test_a_copy_from_the_environment_and_a_wrong_split(ferplus: FerPlus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_DATA", str(ferplus.root))
    monkeypatch.setenv("FER2013_DATA", str(ferplus.copy))
    at = run_page()
    assert at.text_input(key="fer2013_copy_path").value == str(ferplus.copy)
    assert at.selectbox(key="fer2013_copy_split_train").value == "train"  # FER+ train's counterpart
    assert any("Found **0** of 24 faces" in m.value for m in at.markdown)  # the copy's train holds none of them
    assert any("No face could be compared" in i.value for i in at.info)


def test_a_copy_that_is_not_fer2013_is_named(ferplus: FerPlus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_DATA", str(ferplus.root))
    at = run_page()
    at.text_input(key="fer2013_copy_path").input(str(ferplus.root))
    run_page(at)
    assert any("FER+ itself" in w.value for w in at.warning)
    at.text_input(key="fer2013_copy_path").input(str(tmp_path / "nowhere"))
    run_page(at)
    assert any("No usable FER-2013 copy" in w.value for w in at.warning)


def test_public_mode_compares_with_the_configured_copy_only(ferplus: FerPlus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_PUBLIC", "1")
    monkeypatch.setenv("FER_DATA", str(ferplus.root))
    monkeypatch.setenv("FER2013_DATA", str(ferplus.copy))
    at = run_page()
    assert not at.text_input  # no server path is typed
    at.selectbox(key="votes_split").select("val")
    run_page(at)
    assert any("Found **30** of 30 faces" in m.value for m in at.markdown)
    shown = " ".join(e.value for e in [*at.markdown, *at.caption, *at.info, *at.warning])
    assert str(ferplus.copy) not in shown and str(ferplus.root) not in shown


def test_the_csv_pair_brings_fer2013_labels_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_ferplus_csv_pair(tmp_path / "pair", {"Training": 6, "PublicTest": 2})
    monkeypatch.setenv("FER_DATA", str(folder))
    at = run_page()
    assert not any(t.key == "fer2013_copy_path" for t in at.text_input)
    assert any("come with fer2013.csv" in c.value for c in at.caption)
    table = frame_with_column(at, "FER+ agrees %")[list(FERPLUS_EMOTIONS)].to_numpy()
    expected = np.zeros((7, 8), np.int64)  # the fixture's FER-2013 label is the next class for every fifth face
    for label in range(7):
        expected[label, label], expected[(label + 1) % 7, label] = 5, 1
    np.testing.assert_array_equal(table, expected)


def test_fer2013_data_shows_no_vote_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_DATA", str(write_folder_dataset(tmp_path / "fer", {"train": 3, "test": 2})))
    at = run_page()
    assert not any(s.key == "votes_split" for s in at.selectbox)
    assert list(frame_with_column(at, "train").index) == list(EMOTIONS)
