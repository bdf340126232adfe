"""Video: emotions over time, per tracked face, in an uploaded clip."""

import pandas as pd
import plotly.express as px
import streamlit as st

from fer_core.common.paths import shown_message
from fer_core.models.checkpoint import CheckpointError
from fer_core.recognition.annotate import EMOTION_COLORS
from fer_core.recognition.detect import DetectorSettings, available_detectors
from fer_core.recognition.recognizer import Recognizer
from fer_core.recognition.video import (
    STOP_REASONS,
    VIDEO_TYPES,
    VideoError,
    VideoLimitError,
    VideoResult,
    analyse_video,
)
from fer_core.runs.app_settings import AppSettings, SettingsError, load_settings

st.title("Video")
try:
    app = load_settings()
except SettingsError as exc:
    st.error(f"This deployment's settings are invalid: {exc}")
    st.stop()
limits = app.video_limits()
st.markdown("Upload a short clip: every Nth frame is analysed, faces are followed from frame to frame, and each "
            "face gets its own emotion-over-time chart. The clip is read from memory and never stored.")

detector = st.radio("Face detector", available_detectors(), horizontal=True,
                    help="mtcnn: learned, finds turned and tilted faces (default); haar: the paper's cascade.")
c1, c2, c3 = st.columns(3)
every = c1.number_input("Analyse every Nth frame", 1, 120, 5, help="1 = every frame (slowest).")
smoothing = c2.slider("Smoothing", 0.0, 0.95, 0.0, 0.05,
                      help="Exponential moving average of each face's scores: 0 = raw per-frame scores.")
min_size = c3.slider("Smallest face (px)", 20, 400, DetectorSettings().min_size, 4)

try:
    rec = Recognizer.load(detector=detector)
except CheckpointError as exc:
    st.error(f"No usable model: {shown_message(str(exc))}. Train one on the Training page (or with `python train.py`).")
    st.stop()

upload = st.file_uploader(
    f"Video ({', '.join(VIDEO_TYPES)}; the first {limits.max_seconds / 60:g} min of a clip of up to "
    f"{limits.max_pixels / 1e6:.1f} megapixels a frame, at most {limits.max_frames:,} frames analysed)",
    type=list(VIDEO_TYPES))
if upload is None:
    st.info("Drop a video file above.")
    st.stop()


def request_stop() -> None:
    """The Stop button: the click itself interrupts the analysis (Streamlit ends the running script at
    its next progress update); this marks the interrupted analysis as stopped rather than to be redone."""
    st.session_state["video"]["stop_requested"] = True


def stop_note(result: VideoResult, settings: AppSettings) -> str:
    """Why the analysis ended before the clip did, naming the cap when one did it."""
    reason = STOP_REASONS.get(result.stopped or "", "")
    cap = f" ({settings.video_setting(result.stopped)})" if (result.stopped or "").startswith("max_") else ""
    return f" · stopped at {result.last_time_s:.1f} s by {reason}{cap}; the part before it is shown"


cache_key = (upload.file_id, int(every), smoothing, min_size, str(rec.weights), detector, limits)
state = st.session_state.get("video")
if state is not None and state["key"] == cache_key and (state["done"] or state.get("stop_requested")):
    result = state["result"]  # a rerun for another widget, or after Stop: do not analyse the clip again
    if not state["done"]:
        result.stopped = result.stopped or "stopped"
else:
    result = VideoResult()  # filled as frames are analysed, so Stop keeps what was done
    state = st.session_state["video"] = {"key": cache_key, "result": result, "done": False}
    bar = st.progress(0.0, text="Analysing…")
    stop = st.empty()
    stop.button("Stop", key="video-stop", on_click=request_stop, help="Stop the analysis and keep what is done.")
    try:
        analyse_video(upload, rec, every=int(every), smoothing=smoothing, settings=DetectorSettings(min_size=min_size),
                      limits=limits, into=result,
                      progress=lambda f: bar.progress(min(1.0, f), text=f"Analysing… {f * 100:.0f}%"))
    except VideoError as exc:
        named = f" ({app.video_setting(exc.limit)})" if isinstance(exc, VideoLimitError) else ""
        st.error(f"Cannot use **{upload.name}**: {exc}{named}.")
        st.stop()
    finally:
        bar.empty()
        stop.empty()
    state["done"] = True

duration = result.frames_decoded / result.fps if result.fps else 0
st.caption(f"{result.codec}, {result.width}×{result.height}, {result.fps:.1f} fps, {duration:.1f} s read · "
           f"{result.frames_analysed} of {result.frames_decoded} frames analysed"
           + (stop_note(result, app) if result.stopped else ""))
if not result.rows:
    st.warning("No face found in the analysed frames. Try a smaller 'Smallest face' or analysing more frames.")
    st.stop()

df = pd.DataFrame(result.rows).drop(columns=["landmarks"], errors="ignore").assign(detector=detector)
emotions = list(rec.classes)
tracks = df["track_id"].value_counts()
st.success(f"{len(tracks)} face track{'s' if len(tracks) != 1 else ''} found.")
if result.preview is not None:
    st.image(result.preview, caption=f"The analysed frame with the most faces (t = {result.preview_time:.1f} s)",
             width="stretch")

for track_id in tracks.index[:12]:  # the longest tracks first; very short ones are usually false faces
    part = df[df["track_id"] == track_id]
    long = part.melt(id_vars=["time_s"], value_vars=emotions, var_name="emotion", value_name="probability")
    fig = px.line(long, x="time_s", y="probability", color="emotion", color_discrete_map=EMOTION_COLORS,
                  range_y=[0, 1], title=f"Face #{track_id} — {len(part)} frames, mostly "
                  f"{part['label'].mode().iloc[0]}")
    fig.update_layout(height=300, margin={"t": 40}, xaxis_title="time (s)")
    st.plotly_chart(fig, key=f"track_{track_id}")
if len(tracks) > 12:
    st.caption(f"{len(tracks) - 12} shorter tracks are in the CSV only.")

st.dataframe(df, hide_index=True)
st.download_button("Download per-frame results (CSV)", df.to_csv(index=False).encode(),
                   file_name=f"{upload.name.rsplit('.', 1)[0]}_emotions.csv", mime="text/csv", on_click="ignore")
