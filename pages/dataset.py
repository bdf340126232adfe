"""Dataset: FER-2013 as the model sees it — the class imbalance (the paper's Fig. 2), what the
faces look like, and what training's cleaning step drops (blanks, duplicates, train/test leaks)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from fer_core import EMOTIONS
from fer_core.common.paths import DATA_HELP, default_data_path
from fer_core.data.cleaning import REASONS, CleaningReport, clean_train
from fer_core.data.dataset import DatasetError, Split, available_splits, load_split, source_stamp
from fer_core.runs.app_settings import SettingsError, load_settings

SAMPLES_PER_CLASS = 8
EXAMPLES_SHOWN = 12
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


def enlarge(img: np.ndarray, size: int = 96) -> np.ndarray:
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)


def show_distribution(splits: dict[str, Split]) -> None:
    counts = pd.DataFrame({name: s.class_counts() for name, s in splits.items()}, index=list(EMOTIONS))
    fig = go.Figure([go.Bar(x=list(EMOTIONS), y=counts[name], name=name, text=counts[name], textposition="outside")
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
    for k, emotion in enumerate(EMOTIONS):
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
    table = pd.DataFrame({r: report.dropped[r] for r in REASONS}, index=list(EMOTIONS))
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


st.title("Dataset")
st.caption("FER-2013: 48×48 grey faces in seven emotions — how many of each, what they look like, "
           "and what cleaning removes before training.")
try:
    may_choose = load_settings().may_choose_paths()
except SettingsError as exc:
    st.error(f"This deployment's settings are invalid: {exc}")
    st.stop()
if may_choose:
    data_path = st.text_input("Dataset (folder or fer2013.csv)", str(default_data_path()),
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

st.subheader("Class distribution per split")
show_distribution(splits)
st.subheader("Sample faces per class")
show_samples(splits)
st.subheader("Cleaning report")
if "train" in splits:
    show_cleaning(splits, cleaning_report(data_path, stamp))
else:
    st.info("This dataset has no train split, so there is nothing to clean.")
