"""Photo: upload pictures, see every face boxed and labelled, with probabilities and downloads."""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from fer_core.common.paths import shown_message
from fer_core.models.active import model_choices
from fer_core.models.checkpoint import CheckpointError
from fer_core.recognition.annotate import EMOTION_COLORS, draw_faces
from fer_core.recognition.detect import DETECTORS, DetectorSettings, available_detectors
from fer_core.recognition.imageio import IMAGE_TYPES, ImageError, ImageTooLarge, decode_image, encode_png
from fer_core.recognition.recognizer import Recognizer
from fer_core.runs.app_settings import SettingsError, load_settings

st.title("Photo")
try:
    app = load_settings()
except SettingsError as exc:
    st.error(f"This deployment's settings are invalid: {exc}")
    st.stop()
st.markdown("Upload one or more photos: every face found is boxed and labelled with its most likely emotion, "
            "and the network's seven probabilities are shown per face. Images stay in memory and are never stored.")

defaults = DetectorSettings()
detectors = available_detectors()
DETECTOR_HELP = {"mtcnn": "MTCNN (learned; finds turned and tilted faces, aligns them by the eyes)",
                 "haar": "Haar cascade (the paper's; frontal faces only)"}
detector = st.radio("Face detector", detectors, format_func=lambda d: DETECTOR_HELP.get(d, d), horizontal=True,
                    help="MTCNN finds more of the faces in real photos; the Haar cascade is the paper's pipeline.")
with st.expander("Detector settings"):
    c1, c2, c3 = st.columns(3)
    if detector == "haar":
        scale_factor = c1.slider("Pyramid step (scale factor)", 1.05, 1.5, defaults.scale_factor, 0.05,
                                 help="Smaller finds more faces but is slower.")
        min_neighbors = c2.slider("Min neighbours", 1, 12, defaults.min_neighbors,
                                  help="How many overlapping detections a face needs: higher = fewer false faces.")
        min_score = defaults.min_score
    else:
        scale_factor, min_neighbors = defaults.scale_factor, defaults.min_neighbors
        min_score = c1.slider("Minimum face score", 0.5, 0.99, defaults.min_score, 0.01,
                              help="How sure the detector must be that a box is a face: lower finds more, "
                                   "with more false boxes.")
        c2.caption("Faces are rotated upright by their eye landmarks before classification.")
    min_size = c3.slider("Smallest face (px)", 20, 400, defaults.min_size, 4)
    c4, c5, c6 = st.columns(3)
    # full size is for local use: on a public deployment one visitor's 50-megapixel pyramid would hold the
    # detector (shared by every visitor and webcam) for tens of seconds
    sides = [320, 480, 640, 960, 1280, 1920] + ([] if app.public else [0])
    max_side = c4.select_slider("Detect on a copy at most this wide (px)", sides,
                                value=defaults.max_side, format_func=lambda v: "full size" if v == 0 else str(v),
                                help="Downscaling speeds detection up; small faces in big photos need more pixels.")
    margin = c5.slider("Margin around each face", 0.0, 0.5, float(DETECTORS[detector].margin), 0.01,
                       help="Context added around the detected box before cropping to 48x48 (the default is the "
                            "one that reproduces FER-2013's framing for this detector).")
    tta = c6.checkbox("TTA", value=False, help="Test-time augmentation: also classify 13 shifted, zoomed and "
                       "mirrored copies of each face and average (about 2 points more accurate, 14x the work).")
settings = DetectorSettings(scale_factor=scale_factor, min_neighbors=min_neighbors, min_score=min_score,
                            min_size=min_size, max_side=max_side, margin=margin)
explain = st.toggle("Show what the network looked at (Grad-CAM)", value=False,
                    help="A heat map per face of the regions that drove its label.")

choices = model_choices()
model_name = st.selectbox("Model", list(choices), help="By default the shipped accurate model answers (or the run you "
                          "promoted on the Training page); the fast live-video model and the paper's CNN are "
                          "listed too, for comparison.")
try:
    rec = Recognizer.load(choices[model_name], tta=tta, detector=detector)
except CheckpointError as exc:
    st.error(f"No usable model: {shown_message(str(exc))}. Train one on the Training page (or with `python train.py`), "
             "or point `FER_WEIGHTS` at a .safetensors file.")
    st.stop()

@st.cache_data(max_entries=32, show_spinner=False)
def faces_in(data: bytes, weights: str, version: int, detector: str, settings: DetectorSettings, tta: bool,
             whole: bool | None, max_pixels: int) -> tuple[list, np.ndarray]:
    """Every face of one upload and the crops it was classified on (Grad-CAM explains those), computed
    once per (content, model, detector settings): reruns for other widgets, other visitors and repeated
    uploads of the same photo reuse them."""
    recognizer = Recognizer.load(weights, tta=tta, detector=detector)
    dets, crops = recognizer.find_faces(decode_image(data, max_pixels=max_pixels).rgb, order="rgb", whole=whole,
                                        settings=settings)
    return recognizer.faces(dets, recognizer.classify(crops)), crops


max_files = app.max_files
files = st.file_uploader(f"Photos ({', '.join(IMAGE_TYPES)}; up to {app.max_pixels / 1e6:g} megapixels each, "
                         f"{max_files} per upload)",
                         type=list(IMAGE_TYPES), accept_multiple_files=True)
if not files:
    st.info("Drop a photo above: a group photo works best. Small face crops (like FER-2013's 48×48 images) "
            "are classified as one face.")
    st.stop()

if len(files) > max_files:
    st.warning(f"Only the first {max_files} of {len(files)} photos are analysed: this app takes at most "
               f"{max_files} photos per upload (FER_MAX_FILES).")
    files = files[:max_files]

all_rows: list[dict] = []
for index, upload in enumerate(files):
    with st.container(border=True):
        st.subheader(upload.name)
        try:
            decoded = decode_image(upload, max_pixels=app.max_pixels)
        except ImageError as exc:
            named = f" ({app.setting('max_pixels')})" if isinstance(exc, ImageTooLarge) else ""
            st.error(f"Cannot use **{upload.name}**: {exc}{named}.")
            continue
        for note in decoded.notes:
            st.caption(f"ℹ️ {note}")
        whole_key = f"whole_{index}_{upload.file_id}"
        whole = True if st.session_state.get(whole_key) else None
        faces, crops = faces_in(upload.getvalue(), str(rec.weights), rec.weights.stat().st_mtime_ns, detector,
                                settings, tta, whole, app.max_pixels)
        if not faces:
            st.warning("No face found in this image. Try a smaller 'Smallest face' or fewer 'Min neighbours' in "
                       "the detector settings, or classify the whole image as one face.")
            st.checkbox("Classify the whole image as one face", key=whole_key)
            st.image(decoded.rgb, width=min(640, decoded.rgb.shape[1]))
            continue
        if whole:
            st.checkbox("Classify the whole image as one face", key=whole_key)
        annotated = draw_faces(decoded.rgb, faces, order="rgb")
        left, right = st.columns([3, 2])
        w, h = decoded.size
        left.image(annotated, caption=f"{len(faces)} face{'s' if len(faces) != 1 else ''} · {w}×{h}",
                   width="stretch")
        long = pd.DataFrame([{"face": f"face {i}", "emotion": c, "probability": p}
                             for i, f in enumerate(faces, 1) for c, p in f.scores.items()])
        cols = min(len(faces), 3)
        fig = px.bar(long, x="probability", y="emotion", color="emotion", facet_col="face", facet_col_wrap=cols,
                     orientation="h", color_discrete_map=EMOTION_COLORS, range_x=[0, 1],
                     category_orders={"emotion": list(rec.classes)}, facet_row_spacing=0.08)
        fig.update_layout(showlegend=False, height=60 + 300 * ((len(faces) + cols - 1) // cols), margin={"t": 40})
        # An explicit range: plotly's autorange cuts the first categories of faceted horizontal bars.
        fig.update_yaxes(title=None, range=[-0.5, len(rec.classes) - 0.5])
        fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
        right.plotly_chart(fig, key=f"bars_{index}")
        if explain:
            from fer_core.recognition.explain import EXPLAINED, explainer_for, gradcam, overlay

            maps, _ = gradcam(explainer_for(rec.weights), crops, [rec.classes.index(f.label) for f in faces])
            st.caption(f"Grad-CAM: {EXPLAINED}")
            cols = st.columns(min(len(faces), 6))
            for i, (f, crop, heat) in enumerate(zip(faces, crops, maps, strict=True)):
                cols[i % len(cols)].image(overlay(crop, heat), caption=f"face {i + 1}: {f.label}", width="stretch")
        rows = [{"file": upload.name, "face": i, "detector": detector,
                 **{k: v for k, v in f.to_dict().items() if k != "landmarks"}} for i, f in enumerate(faces, 1)]
        all_rows += rows
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        stem = upload.name.rsplit(".", 1)[0]
        st.download_button("Download the annotated image (PNG)", lambda a=annotated: encode_png(a),  # on click
                           file_name=f"{stem}_annotated.png", mime="image/png", key=f"png_{index}",
                           on_click="ignore")

if all_rows:
    st.subheader("All results")
    table = pd.DataFrame(all_rows)
    st.dataframe(table, hide_index=True)
    st.download_button("Download the table (CSV)", lambda: table.to_csv(index=False).encode(), file_name="emotions.csv",
                       mime="text/csv", key="csv_all", on_click="ignore")
