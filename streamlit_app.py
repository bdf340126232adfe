"""The app's entry point: ``streamlit run streamlit_app.py``. Navigation only; each page
is a thin file in ``pages/`` over ``fer_core``."""

import streamlit as st

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
    "Experiment": [
        st.Page("pages/training.py", title="Training", icon="🏋️"),
        st.Page("pages/study.py", title="Optimizer study", icon="🧪"),
    ],
}
st.navigation(pages).run()
