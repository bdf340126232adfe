"""Home: what the app does, which model is answering, and where to go next."""

from pathlib import Path

import streamlit as st

from fer_core import EMOTIONS
from fer_core.common.formatting import percent
from fer_core.common.paths import shown_path
from fer_core.models.active import accurate_weights, active_weights, shipped_models
from fer_core.models.card import TestMetrics, load_card
from fer_core.models.checkpoint import CheckpointError, read_config
from fer_core.runs.app_settings import ADMIN_KEY, training_visible

st.title("fer — facial emotion recognition")
try:
    classes = tuple(read_config(accurate_weights()).classes)
except CheckpointError:
    classes = EMOTIONS
st.markdown(
    f"Find every face in a photo, a video or your webcam and read its expression as one of {len(classes)} "
    f"emotions: **{', '.join(classes)}**. Faces are found by MTCNN (or, as in the paper, "
    "OpenCV's Haar cascade), turned upright by their eyes and classified by a convolutional network "
    "trained on FER-2013's 48×48 grey faces"
    + (" and FER+'s ten votes per face (what people agree a face shows)" if "contempt" in classes else "")
    + ", after the paper *Deep Learning-Based Facial Emotion Recognition with Optimized CNN* "
    "(Bodapati et al.), which reached 65% — and much further."
)



def show_model(title: str, weights: Path) -> None:
    card = load_card(weights)
    st.subheader(title)
    if card is None:
        st.warning(f"No model card for `{shown_path(weights)}`. Train one on the Training page or with "
                   "`python train.py`.")
        return
    test = card.test or TestMetrics()
    c1, c2, c3, c4 = st.columns(4)
    members = card.ensemble_members  # the full list is long for a metric: in its tooltip and the table below
    c1.metric("Architecture", f"ensemble of {len(members)}" if members else card.architecture,
              help=card.architecture if members else None)
    c2.metric("FER+ majority accuracy" if test.agreement is not None else "Test accuracy", percent(test.accuracy))
    c3.metric("Macro-F1", f"{test.macro_f1:.3f}" if test.macro_f1 is not None else "—")
    c4.metric("Parameters", f"{card.params / 1e6:.2f} M" if card.params else "—")
    scored = card.test_words or f"the {test.split or 'test'} split"
    st.caption(f"Weights: `{shown_path(weights)}` · trained {card.date or 'in a run'} · "
               f"scored on {test.n if test.n is not None else '?'} images of {scored}"
               + (f" · answers {len(card.model_classes)} emotions, with {', '.join(extra)}"
                  if (extra := [c for c in card.model_classes if c not in EMOTIONS]) else ""))


live, accurate = active_weights(), accurate_weights()
if live == accurate:
    show_model("Active model", live)
else:
    show_model("Photos and reports", accurate)
    show_model("Live video (webcam, video files)", live)

shipped = {name: load_card(path) for name, path in shipped_models().items()}
scored_on = {c.test_words for c in shipped.values() if c and c.test and c.test.accuracy is not None}
rows = [{"model": name, "architecture": c.architecture, **({"scored on": c.test_words} if len(scored_on) > 1 else {}),
         "test accuracy": percent(c.test.accuracy),
         "with TTA": percent(c.test_tta.accuracy if c.test_tta else None),
         "macro-F1": f"{c.test.macro_f1:.3f}" if c.test.macro_f1 is not None else "—",
         "parameters": f"{c.params / 1e6:.2f} M" if c.params else "—",
         "ms per face": f"{c.latency.latency_b1_ms:.2f}" if c.latency else "—"}
        for name, c in shipped.items() if c and c.test and c.test.accuracy is not None]
if rows:
    st.subheader("Shipped models, side by side")
    st.dataframe(rows, hide_index=True, width="stretch")
    sizes = {c.test.n for c in shipped.values() if c and c.test and c.test.accuracy is not None}
    where = ""
    if len(scored_on) == 1 and None not in scored_on:  # else each row says where it was scored
        size = next(iter(sizes))
        where = f"All on {next(iter(scored_on))}" + (f" ({size:,} faces). " if len(sizes) == 1 and size else ". ")
    st.caption(where + "`paper` is the paper's CNN trained as the paper describes (AMSGrad, lr 0.01); the others "
               "are ours. Details: weights/MODEL_CARD.md.")

st.subheader("Where to go")
cols = st.columns(3)
with cols[0]:
    st.page_link("pages/photo.py", label="Photo — upload pictures", icon="🖼️")
    st.page_link("pages/video.py", label="Video — emotions over time", icon="🎞️")
    st.page_link("pages/webcam.py", label="Webcam — live, in the browser", icon="📷")
with cols[1]:
    st.page_link("pages/metrics.py", label="Metrics — report & confusion matrix", icon="📊")
    st.page_link("pages/dataset.py", label="Dataset — FER-2013 and its cleaning", icon="🗂️")
with cols[2]:
    if training_visible(st.session_state.get(ADMIN_KEY, False)):
        st.page_link("pages/training.py", label="Training — launch your own run", icon="🏋️")
    st.page_link("pages/study.py", label="Optimizer study — the paper's experiment", icon="🧪")
st.caption("Frames and uploads are processed in memory and never stored.")
