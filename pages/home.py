"""Home: what the app does, which model is answering, and where to go next."""

import streamlit as st

from fer_core import EMOTIONS
from fer_core.active import active_weights
from fer_core.app_settings import training_allowed
from fer_core.model_card import load_card

st.title("fer — facial emotion recognition")
st.markdown(
    "Find every face in a photo, a video or your webcam and read its expression as one of the seven "
    f"FER-2013 emotions: **{', '.join(EMOTIONS)}**. Faces are found with OpenCV's Haar cascade and "
    "classified by a convolutional network trained from scratch on FER-2013 (48×48 grey faces), "
    "after the paper *Deep Learning-Based Facial Emotion Recognition with Optimized CNN* "
    "(Bodapati et al.), which reached 65% — and much further."
)

weights = active_weights()
card = load_card(weights)
st.subheader("Active model")
if card is None:
    st.warning(f"No model card for `{weights}`. Train one on the Training page or with `python train.py`.")
else:
    test = card.get("test", {})
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Architecture", card.get("arch", "?"))
    c2.metric("Test accuracy", f"{test['accuracy'] * 100:.1f}%" if "accuracy" in test else "—")
    c3.metric("Macro-F1", f"{test['macro_f1']:.3f}" if "macro_f1" in test else "—")
    c4.metric("Parameters", f"{card['params'] / 1e6:.2f} M" if card.get("params") else "—")
    st.caption(f"Weights: `{weights}` · trained {card.get('date', 'in a run')} · "
               f"scored on {test.get('n', '?')} images of the {test.get('split', 'test')} split")

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
    if training_allowed():
        st.page_link("pages/training.py", label="Training — launch your own run", icon="🏋️")
    st.page_link("pages/study.py", label="Optimizer study — the paper's experiment", icon="🧪")
st.caption("Frames and uploads are processed in memory and never stored.")
