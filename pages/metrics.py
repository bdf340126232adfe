"""Metrics: the paper's Table 1 and Fig. 3 as a place to explore what a model gets wrong.

Every number comes from ``fer_core.evaluation.evaluate.Evaluation`` (through the on-disk evaluation
cache), so the page shows exactly what ``fer-evaluate`` prints. Every table and picker is in the
evaluated data's classes (FER-2013's seven, or FER+'s eight with contempt), the model's scores mapped
to them by the cross-label rule; on FER+ data the page adds FER+'s measures against the annotators'
votes. Without a dataset the page falls back to the metrics stored in the model card.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from fer_core.common.formatting import percent
from fer_core.common.labels import EMOTIONS
from fer_core.common.paths import DATA_HELP, default_data_path, shown_path, shown_paths
from fer_core.data.dataset import DatasetError, Split, available_splits, load_split, source_stamp
from fer_core.data.splits import REPORT_SPLITS, describe_split
from fer_core.evaluation.cache import cached_evaluate, lookup, weights_hash
from fer_core.evaluation.calibration import reliability
from fer_core.evaluation.evaluate import Evaluation
from fer_core.models.active import model_choices
from fer_core.models.card import ModelCard, TestMetrics, load_card
from fer_core.models.checkpoint import CheckpointError, read_config
from fer_core.runs.app_settings import SettingsError, load_settings
from fer_core.training.history import read_history

GALLERY_PAGE = 48
CHART_KEY = "cm_chart"
CLASSES_KEY = "cm_classes"  # the classes the confusion matrix on screen is in, for its click handler
FERPLUS_HELP = {
    "FER+ majority accuracy": "Share of faces whose predicted emotion is the label most of their ten annotators "
                              "chose (FER+'s majority protocol; faces without a clear majority are left out).",
    "annotator agreement": "Mean share of a face's ten annotators who chose the emotion the model predicts: "
                           "1 when everyone would agree with it.",
    "cross-entropy vs votes": "How far the model's probabilities are from the annotators' vote distribution, in "
                              "nats: lower is better, and it rewards doubt where the annotators disagree.",
}


# --------------------------------------------------------------------------- choices


# --------------------------------------------------------------------------- cached loading


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=6)
def load_split_cached(path: str, split: str, stamp: tuple[str, int]) -> tuple[Split, str]:
    """The split and its content hash (the evaluation cache key), kept across reruns."""
    del stamp  # only part of the cache key
    s = load_split(path, split)
    return s, s.content_hash()


@st.cache_resource(show_spinner=False)
def _evaluations() -> dict[tuple, Evaluation]:
    """In-process memo over the disk cache; a plain dict so the first run can draw a progress bar."""
    return {}


def get_evaluation(weights: Path, split: Split, data_hash: str, tta: bool, compute: bool) -> Evaluation | None:
    """The evaluation, from memory or the disk cache; computed here only when ``compute`` (never on a
    public deployment, where ``fer-precompute`` fills the cache); None when it is not available."""
    key = (weights_hash(weights), data_hash, split.name, tta)
    memo = _evaluations()
    if key not in memo and not compute:
        hit = lookup(weights, split, tta, data_hash)
        if hit is None:
            return None
        memo[key] = hit
    if key not in memo:
        bar = st.progress(0.0, text=f"Evaluating on {len(split):,} images of {split.name}…")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"Evaluating… {done:,} / {total:,} images")

        memo[key], _ = cached_evaluate(weights, split, tta=tta, progress=progress, data_hash=data_hash)
        bar.empty()
    return memo[key]


# --------------------------------------------------------------------------- views


def report_table(report: dict, classes: tuple[str, ...]) -> pd.DataFrame:
    """The classification report as a table: one row per class, then macro and weighted averages."""
    rows = [*classes, "macro avg", "weighted avg"]
    df = pd.DataFrame([report[r] for r in rows], index=rows)[["precision", "recall", "f1-score", "support"]]
    df["support"] = df["support"].astype(int)
    return df


def show_report(df: pd.DataFrame) -> None:
    fmt = st.column_config.NumberColumn(format="%.4f")
    st.dataframe(df, column_config={"precision": fmt, "recall": fmt, "f1-score": fmt}, width="stretch")


def confusion_figure(cm: np.ndarray, normalise: bool, selected: tuple[int, int] | None,
                     classes: tuple[str, ...], true_title: str = "true") -> go.Figure:
    """Heatmap plus an invisible marker per cell: plotly heatmaps emit no selection events, markers do."""
    counts = np.asarray(cm, dtype=float)
    rows = counts.sum(1, keepdims=True)
    z = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) if normalise else counts
    k = len(classes)
    text = [[(f"{z[i, j]:.2f}" if normalise else f"{int(counts[i, j])}") for j in range(k)] for i in range(k)]
    fig = go.Figure(go.Heatmap(z=z, x=list(classes), y=list(classes), colorscale="Blues", text=text,
                               texttemplate="%{text}", hoverinfo="skip",
                               colorbar={"title": "share of row" if normalise else "images"}))
    xs = [p for _ in classes for p in classes]
    ys = [t for t in classes for _ in classes]
    custom = [[i, j, int(counts[i, j])] for i in range(k) for j in range(k)]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", customdata=custom, showlegend=False,
                             marker={"symbol": "square", "size": 38, "color": "rgba(0,0,0,0)"},
                             hovertemplate=f"{true_title} %{{y}} → predicted %{{x}}: %{{customdata[2]}} images"
                                           "<extra></extra>"))
    if selected is not None:
        t, p = selected
        fig.add_shape(type="rect", x0=p - 0.5, x1=p + 0.5, y0=t - 0.5, y1=t + 0.5,
                      line={"color": "crimson", "width": 3})
    fig.update_layout(xaxis={"title": "predicted", "side": "bottom"},
                      yaxis={"title": true_title, "autorange": "reversed"},
                      height=520, margin={"l": 10, "r": 10, "t": 30, "b": 10}, clickmode="event+select")
    return fig


def _on_cell_selected() -> None:
    """Chart selection -> the true/predicted pickers (runs before the script, so widgets accept it)."""
    event = st.session_state.get(CHART_KEY)
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    if not points:
        return
    point = points[0]
    true, pred = point.get("y"), point.get("x")
    classes = st.session_state.get(CLASSES_KEY, EMOTIONS)
    if true in classes and pred in classes:
        st.session_state["cm_true"], st.session_state["cm_pred"] = true, pred


def most_confused(cm: np.ndarray) -> tuple[int, int]:
    """The largest off-diagonal cell: the default cell to look at."""
    off = np.asarray(cm, dtype=float).copy()
    np.fill_diagonal(off, -1)
    t, p = np.unravel_index(int(off.argmax()), off.shape)
    return int(t), int(p)


def top3(probs: np.ndarray, classes: tuple[str, ...]) -> str:
    order = np.argsort(-probs)[:3]
    return " · ".join(f"{classes[k]} {probs[k]:.2f}" for k in order)


def cell_indices(ev: Evaluation, true: int, pred: int) -> np.ndarray:
    """Images whose label is ``true`` and prediction ``pred``, most confident prediction first."""
    idx = np.flatnonzero((ev.labels == true) & (ev.preds == pred))
    return idx[np.argsort(-ev.probs[idx, pred], kind="stable")]


def show_confusion(ev: Evaluation, split: Split) -> None:
    classes = tuple(ev.classes)
    cm = ev.confusion()
    st.session_state[CLASSES_KEY] = classes
    if st.session_state.get("cm_true") not in classes or st.session_state.get("cm_pred") not in classes:
        t0, p0 = most_confused(cm)  # first visit, or a pick in another label space (contempt on FER-2013)
        st.session_state["cm_true"], st.session_state["cm_pred"] = classes[t0], classes[p0]
    voted = ev.votes is not None
    mode = st.radio("Show", ["counts", "row-normalised"], horizontal=True, key="cm_mode",
                    help="Row-normalised: each row sums to 1, so the diagonal is each class's recall.")
    selected = (classes.index(st.session_state["cm_true"]), classes.index(st.session_state["cm_pred"]))
    st.plotly_chart(confusion_figure(cm, mode == "row-normalised", selected, classes,
                                     "majority label" if voted else "true"),
                    key=CHART_KEY, on_select=_on_cell_selected, selection_mode="points", width="stretch")
    st.caption("Click a cell (or pick it below) to see its faces. Rows: "
               + ("the majority label of FER+'s ten annotators" if voted else "true emotion")
               + "; columns: prediction.")
    c1, c2 = st.columns(2)
    c1.selectbox("Majority label" if voted else "True emotion", classes, key="cm_true")
    c2.selectbox("Predicted emotion", classes, key="cm_pred")
    true, pred = classes.index(st.session_state["cm_true"]), classes.index(st.session_state["cm_pred"])
    show_gallery(ev, split, true, pred)


def show_gallery(ev: Evaluation, split: Split, true: int, pred: int) -> None:
    classes = tuple(ev.classes)
    idx = cell_indices(ev, true, pred)
    st.markdown(f"#### {'majority' if ev.votes is not None else 'true'} **{classes[true]}** → predicted "
                f"**{classes[pred]}**: {len(idx):,} images")
    if not len(idx):
        st.info("No image of the split falls in this cell.")
        return
    pages = (len(idx) - 1) // GALLERY_PAGE + 1
    page = st.number_input(f"Page (of {pages})", 1, pages, 1, key=f"cm_page_{true}_{pred}") if pages > 1 else 1
    shown = idx[(page - 1) * GALLERY_PAGE: page * GALLERY_PAGE]
    faces = [cv2.resize(split.images[i, 0].numpy(), (96, 96), interpolation=cv2.INTER_CUBIC) for i in shown]
    st.image(faces, caption=[top3(ev.probs[i], classes) for i in shown], width=110)
    with st.expander("List of these images"):
        st.dataframe(pd.DataFrame({"source": [split.sources[i] for i in idx],
                                   f"p({classes[pred]})": ev.probs[idx, pred].round(4),
                                   "top 3": [top3(ev.probs[i], classes) for i in idx]}),
                     hide_index=True, width="stretch")


def show_calibration(ev: Evaluation) -> None:
    rel = reliability(ev.probs, ev.labels, n_bins=15)
    c1, c2 = st.columns([1, 3])
    c1.metric("Expected calibration error", percent(rel.ece, digits=2))
    c1.metric("Maximum calibration error", percent(rel.mce, digits=2))
    c1.caption("ECE: the count-weighted gap between confidence and accuracy over 15 confidence bins. "
               "Bars under the diagonal: over-confident.")
    filled = rel.counts > 0
    fig = go.Figure()
    fig.add_trace(go.Bar(x=rel.centers[filled], y=rel.accuracy[filled], width=1 / len(rel.counts),
                         name="accuracy", customdata=np.stack([rel.counts[filled], rel.confidence[filled]], 1),
                         hovertemplate="accuracy %{y:.3f}<br>mean confidence %{customdata[1]:.3f}"
                                       "<br>%{customdata[0]} images<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line={"dash": "dash", "color": "grey"}))
    fig.update_layout(xaxis={"title": "confidence (top probability)", "range": [0, 1]},
                      yaxis={"title": "accuracy", "range": [0, 1]}, height=380,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10})
    c2.plotly_chart(fig, width="stretch")


def show_training(weights: Path, card: ModelCard | None) -> None:
    run = weights.parent
    rows = read_history(run) if weights.name == "model.safetensors" else []
    if rows:
        df = pd.DataFrame(rows)
        needed = {"epoch", "train_loss", "val_loss", "train_acc", "val_acc"}
        if needed <= set(df.columns):
            c1, c2 = st.columns(2)
            for col, what in ((c1, "loss"), (c2, "acc")):
                fig = go.Figure([go.Scatter(x=df["epoch"], y=df[f"{s}_{what}"], mode="lines+markers", name=s)
                                 for s in ("train", "val")])
                fig.update_layout(title="loss" if what == "loss" else "accuracy", xaxis_title="epoch",
                                  height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10})
                col.plotly_chart(fig, width="stretch")
        else:
            st.warning(f"{shown_path(run / 'history.csv')} lacks the columns {', '.join(sorted(needed))}.")
        try:
            config = json.loads((run / "config.json").read_text())
            st.caption(f"Run folder `{shown_path(run)}` — its config (click to expand):")
            st.json(shown_paths(config, hide_outside=public), expanded=False)
        except (OSError, ValueError):
            st.caption("This run has no readable config.json.")
    elif card and card.config:
        st.caption("The shipped model's training configuration (from its model card):")
        st.json(card.config, expanded=False)
        if card.train_command:
            st.code(card.train_command, language="bash")
    else:
        st.caption("No training history is stored with this model.")


def show_headline(accuracy: float | None, macro_f1: float | None, weighted_f1: float | None, n: int | None,
                  agreement: float | None = None, vote_ce: float | None = None) -> None:
    """Accuracy, F1 and size; on FER+ data, FER+'s measures beside them, each explained in a line."""
    ferplus = agreement is not None and vote_ce is not None
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("FER+ majority accuracy" if ferplus else "Accuracy", percent(accuracy, digits=2),
              help=FERPLUS_HELP["FER+ majority accuracy"] if ferplus else None)
    c2.metric("Macro-F1", f"{macro_f1:.4f}" if macro_f1 is not None else "—")
    c3.metric("Weighted-F1", f"{weighted_f1:.4f}" if weighted_f1 is not None else "—")
    c4.metric("Images", f"{n:,}" if n is not None else "?")
    if ferplus:
        c1, c2, _, _ = st.columns(4)
        c1.metric("annotator agreement", f"{agreement:.3f}", help=FERPLUS_HELP["annotator agreement"])
        c2.metric("cross-entropy vs votes", f"{vote_ce:.3f} nats", help=FERPLUS_HELP["cross-entropy vs votes"])
        st.caption("  \n".join(f"**{name}**: {text}" for name, text in FERPLUS_HELP.items()))


def show_stored(card: ModelCard | None, weights: Path) -> None:
    """The metrics the model card stored: all we can show without the images."""
    test = card.test if card else None
    if card is None or test is None or not test.per_class:
        st.warning(f"No stored metrics for `{shown_path(weights)}` either.")
        return
    st.subheader("Stored metrics (from the model card)")
    show_headline(test.accuracy, test.macro_f1, test.weighted_f1, test.n, test.agreement, test.vote_cross_entropy)
    if card.test_words:
        st.caption(f"Measured on {card.test_words}.")
    classes = card.test_classes
    pc = test.per_class
    shown = [c for c in classes if c in pc]  # a card written by hand may leave classes out
    df = pd.DataFrame([{"precision": pc[c].precision, "recall": pc[c].recall, "f1-score": pc[c].f1,
                        "support": pc[c].support} for c in shown], index=shown)
    show_report(df)
    if test.confusion_matrix and len(test.confusion_matrix) == len(classes):  # the card checked it is square
        mode = st.radio("Show", ["counts", "row-normalised"], horizontal=True, key="cm_mode_stored")
        st.plotly_chart(confusion_figure(np.array(test.confusion_matrix), mode == "row-normalised", None, classes,
                                         "majority label" if test.agreement is not None else "true"),
                        width="stretch")
    show_also(card.also or [])


def show_also(also: list[TestMetrics]) -> None:
    """The model card's extra evaluations on other data."""
    if not also:
        return
    st.markdown("**Also measured on** (from the model card)")
    st.dataframe(pd.DataFrame([{
        "data": a.data, "split": a.split, "images": a.n, "accuracy": percent(a.accuracy, digits=2),
        "macro-F1": a.macro_f1,
        "recall per class": " · ".join(f"{c} {pc.recall:.2f}" for c in a.label_space()
                                       if (pc := (a.per_class or {}).get(c)) is not None and pc.support)}
        for a in also]), hide_index=True, width="stretch")


# --------------------------------------------------------------------------- page


st.title("Metrics")
st.caption("Accuracy, the per-class report, the confusion matrix and calibration of any model, on any split "
           "— the same numbers `fer-evaluate` prints.")

try:
    public = load_settings().public
except SettingsError as exc:
    st.error(f"This deployment's settings are invalid: {exc}")
    st.stop()
choices = model_choices(runs=True)
c1, c2, c3, c4 = st.columns([3, 3, 1, 1.2], vertical_alignment="bottom")
label = c1.selectbox("Model", list(choices), key="model")
weights = choices[label]
if public:  # the configured copy only: no server path is typed, and nothing is evaluated on request
    data_path = str(default_data_path())
    c2.caption("Dataset: this deployment's FER-2013 copy. Evaluations shown here were computed in advance.")
else:
    data_path = c2.text_input("Dataset (FER-2013 or FER+ folder, or fer2013.csv)", str(default_data_path()),
                              key="metrics_data_path").strip()
card = load_card(weights)

splits: list[str] = []
data_error = None
try:
    splits = available_splits(data_path) if data_path else []
except (DatasetError, OSError) as exc:
    data_error = str(exc)
report = next((s for s in REPORT_SPLITS if s in splits), None)  # where a model's figures are quoted
split_name = c3.selectbox("Split", splits or ["test"], index=splits.index(report) if report else 0,
                          key="split", disabled=not splits)
tta = c4.toggle("TTA", key="tta", help="Test-time augmentation: average each face's prediction over 14 shifted, "
                "zoomed and mirrored views (`--tta` of the CLI; 14x the work).")

if not splits:
    if public:
        st.info("This deployment has no FER-2013 copy to evaluate on.")
    else:
        st.info((f"No dataset at `{data_path}`: {data_error}. " if data_error else "") + DATA_HELP)
    show_stored(card, weights)
    st.stop()

try:
    split, data_hash = load_split_cached(data_path, split_name, source_stamp(data_path, split_name))
    ev = get_evaluation(weights, split, data_hash, tta, compute=not public)
except (DatasetError, OSError) as exc:
    st.error(f"Could not load the {split_name} split of `{shown_path(data_path)}`: {exc}")
    show_stored(card, weights)
    st.stop()
except CheckpointError as exc:
    st.error(f"Could not use this model: {exc}. Pick another model above, or train one on the Training page "
             "(`python train.py`).")
    st.stop()

if ev is None:
    st.info(f"The {split_name} split{' with TTA' if tta else ''} of this model has not been evaluated in advance "
            "on this public deployment (FER_PUBLIC=1 computes no evaluation on request; its operator runs "
            "`fer-precompute`).")
    show_stored(card, weights)
    st.stop()
m = ev.metrics()
show_headline(m["accuracy"], m["macro_f1"], m["weighted_f1"], m["n"], m.get("agreement"), m.get("vote_cross_entropy"))
where = "this deployment's FER-2013" if public else f"`{shown_path(data_path)}`"
try:
    model_classes = tuple(read_config(weights).classes)
except CheckpointError:
    model_classes = tuple(ev.classes)
lacks = [c for c in ev.classes if c not in model_classes]
st.caption(f"`{label}` on the {split_name} split of {where} ({describe_split(data_path, split_name)}; data hash "
           f"{data_hash}), test-time augmentation {'on' if tta else 'off'}. "
           + (f"The model does not answer {', '.join(lacks)}: it counts as never predicted. " if lacks else "")
           + (f"The model's {', '.join(c for c in model_classes if c not in ev.classes)} is left out of its "
              "choice: this data does not hold it. " if set(model_classes) - set(ev.classes) else ""))

st.subheader("Classification report")
show_report(report_table(ev.report_dict(), tuple(ev.classes)))
st.subheader("Confusion matrix")
show_confusion(ev, split)
tab_cal, tab_train = st.tabs(["Calibration", "Training run"])
with tab_cal:
    show_calibration(ev)
with tab_train:
    show_training(weights, card)
