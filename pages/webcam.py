"""Webcam: live emotion recognition in the browser over WebRTC (streamlit-webrtc).

The browser sends camera frames to this server; ``fer_core.recognition.webcam.WebcamProcessor``
annotates each one in streamlit-webrtc's worker thread and sends it back. Frames exist
only in memory. With no ICE servers configured the connection is direct, which works on
localhost and offline; set STUN/TURN servers in ``.streamlit/secrets.toml`` (``ice_servers``)
or ``FER_ICE_SERVERS`` (JSON) to reach the app across networks.
"""

import os
import time
from collections import deque

import pandas as pd
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from fer_core.common.paths import shown_message
from fer_core.models.checkpoint import CheckpointError
from fer_core.recognition.annotate import EMOTION_COLORS
from fer_core.recognition.detect import available_detectors
from fer_core.recognition.recognizer import Recognizer
from fer_core.recognition.webcam import WebcamProcessor, ice_servers

CHART_SECONDS = 30.0

st.title("Webcam")
st.markdown("Press **START** and allow the camera: each face is boxed and labelled live, with the frame rate "
            "and per-frame latency drawn on the video. Nothing is recorded or stored.")

detector = st.radio("Face detector", available_detectors(), horizontal=True,
                    help="mtcnn: learned, finds turned and tilted faces; it runs on every 3rd frame and the "
                         "tracker carries the boxes in between. haar: the paper's cascade, on every frame.")
smoothing = st.slider("Smoothing", 0.0, 0.95, 0.6, 0.05,
                      help="Exponential moving average of each face's scores over frames: 0 = raw, "
                           "higher = calmer labels that react later.")

try:
    rec = Recognizer.load(detector=detector)
except CheckpointError as exc:
    st.error(f"No usable model: {shown_message(str(exc))}. Train one on the Training page (or with `python train.py`).")
    st.stop()

try:
    secrets = st.secrets.to_dict()
except (FileNotFoundError, OSError, ValueError):  # no secrets.toml (StreamlitSecretNotFoundError) or a broken one
    secrets = {}
try:
    servers = ice_servers(secrets, dict(os.environ))
except ValueError as exc:
    st.error(f"Ignoring the configured ICE servers: {exc}")
    servers = []

proc: WebcamProcessor | None = st.session_state.get("webcam_processor")
if proc is None or proc.recognizer.weights != rec.weights or proc.recognizer.detector is not rec.detector:
    if proc is not None:
        proc.close()  # its detector thread: the new processor brings its own
    proc = WebcamProcessor(rec, smoothing=smoothing)
    st.session_state["webcam_processor"] = proc
proc.smoothing = smoothing

ctx = webrtc_streamer(
    key="fer-webcam",
    mode=WebRtcMode.SENDRECV,
    rtc_configuration={"iceServers": servers},
    media_stream_constraints={"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}, "audio": False},
    video_frame_callback=proc,
    async_processing=True,
)
st.caption("ICE servers: " + (", ".join(str(s["urls"]) for s in servers) if servers else
                               "none (direct connection: localhost / same network)"))

status = st.empty()
chart_title = st.empty()
chart = st.empty()
if not ctx.state.playing:
    status.info("Camera off. Press START above; the first frames take a few seconds to arrive.")
else:
    history: deque[dict] = deque()
    while ctx.state.playing:
        rows = proc.drain()
        history.extend(rows)
        if history:
            newest = history[-1]["t"]
            while history and history[0]["t"] < newest - CHART_SECONDS:
                history.popleft()
        faces_now = sum(1 for r in rows if r["t"] == rows[-1]["t"]) if rows else 0
        w, h = proc.frame_size
        status.markdown(f"**Live:** {proc.fps:.1f} FPS · {w}×{h} · {proc.latency_ms:.1f} ms per frame · "
                        f"{proc.frames} frames processed · {faces_now} face{'s' if faces_now != 1 else ''} "
                        f"in the latest frame")
        if history:
            df = pd.DataFrame(history)
            main = int(df["track_id"].value_counts().idxmax())  # the face seen most in the window
            part = df[df["track_id"] == main].set_index("t")[list(rec.classes)]
            chart_title.markdown(f"Face #{main}, last {CHART_SECONDS:.0f} s (smoothed scores)")
            chart.line_chart(part, color=[EMOTION_COLORS[c] for c in rec.classes], x_label="time (s)",
                             y_label="probability")
        time.sleep(0.5)
