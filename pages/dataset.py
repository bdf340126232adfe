"""Dataset: FER-2013 or FER+ as the model sees it — the class imbalance (the paper's Fig. 2), what the
faces look like, what training's cleaning step drops (blanks, duplicates, train/test leaks), and for
FER+ what its crowd votes say: how they split, how ambiguous each class is, the faces people disagree
on most, and where FER-2013's label and FER+'s majority part ways."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from fer_core.common.labels import EMOTIONS
from fer_core.common.paths import DATA_HELP, default_data_path, fer2013_copy_path
from fer_core.data.cleaning import REASONS, CleaningReport, clean_train
from fer_core.data.dataset import (
    DatasetError,
    Split,
    available_splits,
    is_ferplus,
    load_split,
    source_stamp,
)
from fer_core.data.label_match import LabelMatch, counterpart_split, fer2013_labels_for
from fer_core.data.vote_stats import (
    CLEAR_SHARE,
    agreement_by_label,
    class_ambiguity,
    label_crosstab,
    largest_disagreement,
    mean_shares_by_class,
    most_disputed,
    pair_indices,
    vote_caption,
)
from fer_core.data.votes import VOTE_COLUMNS
from fer_core.runs.app_settings import SettingsError, load_settings

SAMPLES_PER_CLASS = 8
EXAMPLES_SHOWN = 12
FACES_SHOWN = 24  # disputed faces, and faces of one FER-2013 x FER+ cell
REASON_TEXT = {"blank": "blank frames (one flat grey level)",
               "duplicate": "pixel-identical copies inside train (the first of each group is kept)",
               "leak": "train images that also appear in a held-out split (would inflate the test score)"}


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=2)
def load_all(path: str, stamp: tuple[str, int]) -> dict[str, Split]:
    """Every split of the source, decoded once per server (and cached on disk by fer_core.data.dataset)."""
    del stamp  # only part of the cache key
    return {s: load_split(path, s) for s in available_splits(path)}


@st.cache_resource(show_spinner="Checking for blanks, duplicates and leaks…", max_entries=2)
def cleaning_report(path: str, stamp: tuple[str, int]) -> CleaningReport:
    """The report training prints: train cleaned against every held-out split."""
    splits = load_all(path, stamp)
    _, report = clean_train(splits["train"], [s for n, s in splits.items() if n != "train"])
    return report


@st.cache_resource(show_spinner="Finding each face in the FER-2013 copy…", max_entries=4)
def matched_labels(path: str, stamp: tuple[str, int], split: str, copy_path: str, copy_stamp: tuple[str, int],
                   copy_split: str) -> LabelMatch:
    """FER-2013's label of each face of a FER+ split, by pixels (cached on disk by fer_core.data.label_match)."""
    del copy_stamp  # only part of the cache key
    return fer2013_labels_for(load_all(path, stamp)[split], load_split(copy_path, copy_split))


def enlarge(img: np.ndarray, size: int = 96) -> np.ndarray:
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)


def show_faces(split: Split, index: np.ndarray, label: str) -> None:
    """Faces with their votes as captions, then their sources as text that can be copied or searched for."""
    if not len(index):
        st.caption("none")
        return
    st.image([enlarge(split.images[i, 0].numpy()) for i in index], width=96,
             caption=[vote_caption(split.votes[i].tolist()) for i in index])
    st.caption(f"{label}: " + ", ".join(f"`{split.sources[i]}`" for i in index))


def show_distribution(splits: dict[str, Split], classes: tuple[str, ...]) -> None:
    counts = pd.DataFrame({name: s.class_counts() for name, s in splits.items()}, index=list(classes))
    fig = go.Figure([go.Bar(x=list(classes), y=counts[name], name=name, text=counts[name], textposition="outside")
                     for name in counts.columns])
    fig.update_layout(barmode="group", xaxis_title="emotion", yaxis_title="images", height=420,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10})
    st.plotly_chart(fig, width="stretch")
    shares = counts.copy()
    for name in counts.columns:
        shares[f"{name} %"] = (100 * counts[name] / max(int(counts[name].sum()), 1)).round(1)
    st.dataframe(shares, width="stretch")
    if "train" in counts.columns and counts["train"].sum():
        rare = counts["train"].idxmin()
        st.caption(f"The rarest class in train is **{rare}** ({shares.loc[rare, 'train %']}%): accuracy hides "
                   "how a model does on it; macro-F1 does not.")


def show_samples(splits: dict[str, Split]) -> None:
    c1, c2 = st.columns([1, 3])
    name = c1.selectbox("Split", list(splits), key="sample_split")
    seed = c2.number_input("Shuffle (seed)", 0, 10_000, 0, key="sample_seed",
                           help="Change to draw other faces.")
    split = splits[name]
    rng = np.random.default_rng(int(seed))
    labels = split.labels.numpy()
    for k, emotion in enumerate(split.classes):
        idx = np.flatnonzero(labels == k)
        if not len(idx):
            st.caption(f"{emotion}: no images in {name}")
            continue
        pick = rng.choice(idx, size=min(SAMPLES_PER_CLASS, len(idx)), replace=False)
        st.markdown(f"**{emotion}** · {len(idx):,} images")
        st.image([enlarge(split.images[i, 0].numpy()) for i in pick], width=80)


def show_cleaning(splits: dict[str, Split], report: CleaningReport) -> None:
    st.markdown(f"Training cleans **train** before every run: {report.before:,} → **{report.after:,}** images "
                f"({report.before - report.after:,} dropped; {report.duplicate_groups:,} groups of "
                "pixel-identical images).")
    table = pd.DataFrame({r: report.dropped[r] for r in REASONS}, index=list(report.classes))
    table.loc["total"] = table.sum()
    st.dataframe(table, width="stretch")
    train = splits["train"]
    where = {src: i for i, src in enumerate(train.sources)}
    for reason in REASONS:
        examples = [s for s in report.examples[reason] if s in where][:EXAMPLES_SHOWN]
        st.markdown(f"**{reason}** — {report.total(reason):,} {REASON_TEXT[reason]}")
        if examples:
            st.image([enlarge(train.images[where[s], 0].numpy()) for s in examples], width=80,
                     caption=[Path(s).name if "/" in s else s for s in examples])
            st.caption("Examples: " + ", ".join(f"`{s}`" for s in examples))
        else:
            st.caption("none")

# --------------------------------------------------------------------------- FER+'s votes


def present(split: Split) -> list[int]:
    """The classes with at least one face: a table row for an empty class says nothing."""
    return [c for c, n in enumerate(split.class_counts()) if n]


def show_vote_split(split: Split) -> None:
    shares = 100 * mean_shares_by_class(split.votes, split.labels, len(split.classes))
    rows = present(split)
    frame = pd.DataFrame(shares[rows], index=[split.classes[c] for c in rows], columns=list(VOTE_COLUMNS)).round(1)
    fig = go.Figure(go.Heatmap(z=frame.values, x=frame.columns, y=frame.index, colorscale="Blues", zmin=0, zmax=100,
                               text=frame.values, texttemplate="%{text:.0f}", colorbar={"title": "% of votes"}))
    fig.update_layout(xaxis_title="vote", yaxis_title="majority label", yaxis_autorange="reversed", height=420,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10})
    st.plotly_chart(fig, width="stretch")
    st.caption("Each row: the faces FER+ labels with that emotion, and where their annotators' votes went on "
               "average (% of all votes as cast). The diagonal is agreement; the rest is what people saw instead.")
    with st.expander("As a table"):
        st.dataframe(frame.rename_axis("majority label"), width="stretch")


def show_ambiguity(split: Split) -> None:
    amb = class_ambiguity(split.votes, split.labels, len(split.classes))
    rows = present(split)
    frame = pd.DataFrame({"faces": amb.faces[rows],
                          "top emotion's share %": (100 * amb.top_share[rows]).round(1),
                          "vote entropy (bits)": amb.entropy[rows].round(2),
                          f"clear-cut % (≥ {CLEAR_SHARE:.0%} agree)": (100 * amb.clear[rows]).round(1)},
                         index=[split.classes[c] for c in rows]).rename_axis("majority label")
    st.dataframe(frame, width="stretch")
    worst = frame["top emotion's share %"].idxmin()
    st.caption(f"The most ambiguous class is **{worst}**: on average only {frame.loc[worst, frame.columns[1]]}% of "
               "its faces' votes went to it. These are the faces FER+ kept; the ones with no majority (or whose "
               "winner was unknown or not a face) were dropped when the split was loaded.")


def show_disputed(split: Split) -> None:
    options = ["all classes", *(split.classes[c] for c in present(split))]
    chosen = st.selectbox("Majority label", options, key="disputed_class")
    label = None if chosen == options[0] else split.classes.index(chosen)
    index = most_disputed(split.votes, FACES_SHOWN, split.labels, label)
    show_faces(split, index, "Most disputed")


def comparison_labels(split: Split, data_path: str, stamp: tuple[str, int], may_choose: bool) -> np.ndarray | None:
    """FER-2013's label per face (-1 unknown): from fer2013.csv when the data came with it, else by
    finding each face in a FER-2013 copy the user names (or the deployment configures)."""
    if split.fer2013_labels is not None:
        st.caption("FER-2013's labels come with fer2013.csv, row for row.")
        return split.fer2013_labels.numpy()
    copy_path = fer2013_copy_path()
    if may_choose:
        copy_path = st.text_input("FER-2013 copy to compare labels with", copy_path, key="fer2013_copy_path",
                                  help="A FER-2013 folder or fer2013.csv: FER+'s folders do not carry FER-2013's "
                                       "labels, so each face is found in the copy by its pixels.").strip()
    if not copy_path:
        st.info("FER+ in Microsoft's folders does not carry FER-2013's labels. "
                + ("Name a FER-2013 copy above (or set `FER2013_DATA`) to find each face in it."
                   if may_choose else "This deployment has no FER-2013 copy to compare with."))
        return None
    try:
        if is_ferplus(copy_path):
            st.warning("That copy is FER+ itself: give FER-2013 (its folders or fer2013.csv).")
            return None
        copy_splits = available_splits(copy_path)
    except (DatasetError, OSError) as exc:
        st.warning(f"No usable FER-2013 copy at `{copy_path}`: {exc}" if may_choose
                   else "This deployment's FER-2013 copy cannot be read.")
        return None
    default = counterpart_split(split.name, copy_splits)
    if default is None:
        st.warning("That FER-2013 copy holds no split." if may_choose else "This deployment's FER-2013 copy is empty.")
        return None
    copy_split = st.selectbox("Its split holding these faces", copy_splits, index=copy_splits.index(default),
                              key=f"fer2013_copy_split_{split.name}",  # each FER+ split has its own default
                              help="FER+'s val is FER-2013's PublicTest, which the image release calls test/.")
    try:
        match = matched_labels(data_path, stamp, split.name, copy_path, source_stamp(copy_path), copy_split)
    except (DatasetError, OSError) as exc:
        st.warning(f"Cannot read split {copy_split} of the FER-2013 copy: {exc}" if may_choose
                   else f"Cannot read split {copy_split} of this deployment's FER-2013 copy.")
        return None
    st.markdown(f"Found **{match.matched:,}** of {len(split):,} faces ({100 * match.matched / len(split):.1f}%) "
                f"in the copy's {copy_split} split; {match.labelled:,} have one FER-2013 label (copies that "
                "disagree give none). Unmatched faces are left out below.")
    if match.matched < len(split) / 2:
        st.caption("Few faces found: is this the copy's split that holds them? FER+ train is FER-2013's Training, "
                   "val its PublicTest, test its PrivateTest.")
    return match.labels


def show_label_comparison(split: Split, fer2013: np.ndarray) -> None:
    table = label_crosstab(fer2013, split.labels, len(EMOTIONS), len(split.classes))
    if not table.sum():
        st.info("No face could be compared.")
        return
    frame = pd.DataFrame(table, index=list(EMOTIONS), columns=list(split.classes)).rename_axis("FER-2013 label")
    frame["FER+ agrees %"] = (100 * agreement_by_label(table)).round(1)
    st.dataframe(frame, width="stretch")
    agree = int(np.trace(table[:, :len(EMOTIONS)]))
    st.caption(f"Rows: FER-2013's label (one annotator); columns: FER+'s majority (ten). They agree on "
               f"{100 * agree / table.sum():.1f}% of the {int(table.sum()):,} faces compared.")
    row, col = largest_disagreement(table) or (0, 0)
    c1, c2 = st.columns(2)
    old = c1.selectbox("FER-2013 said", EMOTIONS, index=row, key=f"pair_fer2013_{split.name}")
    new = c2.selectbox("FER+'s majority says", split.classes, index=col, key=f"pair_ferplus_{split.name}")
    index = pair_indices(fer2013, split.labels, EMOTIONS.index(old), split.classes.index(new))
    st.markdown(f"**{len(index):,}** faces FER-2013 labels *{old}* and FER+ *{new}*")
    show_faces(split, index[:FACES_SHOWN], "Examples")


def show_votes(splits: dict[str, Split], data_path: str, stamp: tuple[str, int], may_choose: bool) -> None:
    """The FER+ sections, all on one split the user picks."""
    name = st.selectbox("FER+ split", list(splits), key="votes_split")
    split = splits[name]
    st.subheader("How the votes split")
    show_vote_split(split)
    st.subheader("How ambiguous each class is")
    show_ambiguity(split)
    st.subheader("The faces people disagree on most")
    show_disputed(split)
    st.subheader("FER-2013's label against FER+'s majority")
    fer2013 = comparison_labels(split, data_path, stamp, may_choose)
    if fer2013 is not None:
        show_label_comparison(split, fer2013)


st.title("Dataset")
st.caption("FER-2013 or FER+: 48×48 grey faces in seven (FER+: eight) emotions — how many of each, what they "
           "look like, what cleaning removes before training, and for FER+ what its ten votes per face say.")
try:
    may_choose = load_settings().may_choose_paths()
except SettingsError as exc:
    st.error(f"This deployment's settings are invalid: {exc}")
    st.stop()
if may_choose:
    data_path = st.text_input("Dataset (FER-2013 or FER+ folder, fer2013.csv)", str(default_data_path()),
                              key="dataset_data_path").strip()
else:  # a public deployment: the configured copy only, never a path a visitor types
    data_path = str(default_data_path())

stamp = source_stamp(data_path) if data_path else ("", 0)
try:
    splits = load_all(data_path, stamp) if data_path else {}
except (DatasetError, OSError) as exc:
    st.info(f"No usable dataset at `{data_path}`: {exc}. {DATA_HELP}" if may_choose
            else "This deployment has no FER-2013 copy to show.")
    st.stop()
if not splits:
    st.info(DATA_HELP)
    st.stop()

first = next(iter(splits.values()))
st.subheader("Class distribution per split")
show_distribution(splits, first.classes)
st.subheader("Sample faces per class")
show_samples(splits)
if first.votes is not None:
    st.header("FER+'s votes")
    show_votes(splits, data_path, stamp, may_choose)
st.subheader("Cleaning report")
if "train" in splits:
    show_cleaning(splits, cleaning_report(data_path, stamp))
else:
    st.info("This dataset has no train split, so there is nothing to clean.")
