"""The app's entry point: ``streamlit run streamlit_app.py``. Navigation only; each page
is a thin file in ``pages/`` over ``fer_core``."""

import streamlit as st

from fer_core.runs.app_settings import ADMIN_KEY, SettingsError, load_settings

st.set_page_config(page_title="fer — facial emotion recognition", page_icon="🙂", layout="wide")
try:
    settings = load_settings()
    public, training_listed = settings.public, settings.may_control_runs(st.session_state.get(ADMIN_KEY, False))
except SettingsError:  # the pages name the bad setting; error details stay hidden meanwhile
    public, training_listed = True, True
if public:  # tracebacks go to the server log only; visitors get no developer menu
    st.set_option("client.showErrorDetails", "none")
    st.set_option("client.toolbarMode", "viewer")

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
    "Experiment": [  # listed only where this visitor may train; registered still, and the page itself refuses
        st.Page("pages/training.py", title="Training", icon="🏋️",
                visibility="visible" if training_listed else "hidden"),
        st.Page("pages/study.py", title="Optimizer study", icon="🧪"),
    ],
}
st.navigation(pages).run()
