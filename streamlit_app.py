"""The app's entry point: ``streamlit run streamlit_app.py``. Navigation only; each page
is a thin file in ``pages/`` over ``fer_core``."""

import streamlit as st

from fer_core.runs.app_settings import training_allowed

st.set_page_config(page_title="fer — facial emotion recognition", page_icon="🙂", layout="wide")

pages = {
    "": [st.Page("pages/home.py", title="Home", icon="🏠", default=True)],
    "Recognise": [
        st.Page("pages/photo.py", title="Photo", icon="🖼️"),
        st.Page("pages/video.py", title="Video", icon="🎞️"),
        st.Page("pages/webcam.py", title="Webcam", icon="📷"),
    ],
    "Understand": [
        st.Page("pages/metrics.py", title="Metrics", icon="📊"),
        st.Page("pages/dataset.py", title="Dataset", icon="🗂️"),
    ],
    "Experiment": [  # FER_ALLOW_TRAINING=0 hides the launcher (registered still, so links to it never break)
        st.Page("pages/training.py", title="Training", icon="🏋️",
                visibility="visible" if training_allowed() else "hidden"),
        st.Page("pages/study.py", title="Optimizer study", icon="🧪"),
    ],
}
st.navigation(pages).run()
