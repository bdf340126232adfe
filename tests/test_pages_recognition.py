"""The Photo, Video and Webcam pages under ``streamlit.testing``: they render, show results for
good input and a clear error (never a traceback) for bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from fer_core.recognition.pipeline_bench import compose_frame
from fer_core.recognition.scenes import score_detections
from tests.conftest import make_face, write_test_video
from tests.test_recognizer import real_layout, tiny_weights  # noqa: F401  (fixture)

TIMEOUT = 60
PAGES = Path(__file__).resolve().parents[1] / "pages"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "faces"


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


@pytest.fixture
def no_webrtc_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """AppTest mocks Streamlit's runtime; streamlit-webrtc asks it for the session, which is
    optional for the component (None means 'no session info'), so answer None."""
    monkeypatch.setattr("streamlit_webrtc.component.get_this_session_info", lambda: None)


def _run(page: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


# ----------------------------------------------------------------------------- photo


def test_photo_page_renders_and_asks_for_a_photo(tiny_weights):  # noqa: F811
    at = _run("photo")
    assert at.title[0].value == "Photo"
    assert "Drop a photo" in at.info[0].value
    assert len(at.file_uploader) == 1


def test_photo_page_shows_a_face_crop_result(tiny_weights):  # noqa: F811
    at = _run("photo")
    at.file_uploader[0].set_value(("crop.png", _png(make_face(3, np.random.default_rng(0))), "image/png"))
    at.run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert len(table) == 1 and table.loc[0, "label"] in table.columns
    assert abs(table.loc[0, ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]].sum() - 1) < 1e-3
    assert any(b.label.startswith("Download the annotated image") for b in at.get("download_button"))


@pytest.mark.parametrize(("name", "data", "message"), [
    ("corrupt.jpg", b"\xff\xd8\xff this is not really a jpeg", "JPEG header is damaged"),
    ("empty.png", b"", "empty"),
    ("tiny.png", None, "too small"),
    ("huge.png", "huge", "this app decodes (FER_MAX_PIXELS)"),  # the refusal names its cap
])
def test_photo_page_reports_bad_files(tiny_weights, name, data, message):  # noqa: F811
    if data is None:
        data = _png(np.full((20, 30), 100, np.uint8))
    elif data == "huge":
        from tests.test_imageio import _png_header_only

        data = _png_header_only(20000, 20000)
    at = _run("photo")
    at.file_uploader[0].set_value((name, data, "image/png"))
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and name in at.error[0].value and message in at.error[0].value


def test_photo_page_no_face_then_whole_image(tiny_weights):  # noqa: F811
    at = _run("photo")
    at.file_uploader[0].set_value(("wall.png", _png(np.full((300, 400), 128, np.uint8)), "image/png"))
    at.run()
    assert "No face found" in at.warning[0].value and not at.dataframe
    at.checkbox(key=next(c.key for c in at.checkbox if c.key and c.key.startswith("whole_"))).check()
    at.run()
    assert not at.exception and not at.warning
    assert at.dataframe[0].value.loc[0, "w"] == 400


@pytest.mark.data
def test_photo_page_labels_every_face_of_a_group_photo(tiny_weights, real_data):  # noqa: F811
    frame, _ = compose_frame(real_layout(real_data, 3))
    at = _run("photo")
    at.file_uploader[0].set_value([("group.png", _png(frame), "image/png"), ("bad.jpg", b"nope", "image/jpeg")])
    at.run()
    assert not at.exception
    assert len(at.dataframe[0].value) == 3  # this photo's table
    assert len(at.dataframe[-1].value) == 3  # all results (the bad file adds none)
    assert len(at.error) == 1 and "bad.jpg" in at.error[0].value


def _group_photo():
    from fer_core.recognition.scenes import load_pictures, photo_group

    scene = photo_group(load_pictures(FIXTURES))
    return _png(cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR)), scene.boxes


def test_photo_page_finds_real_faces_with_either_detector_and_explains_them(tiny_weights):  # noqa: F811
    at = _run("photo")
    assert at.radio[0].value == "mtcnn" and len(at.radio[0].options) >= 2
    photo, truth = _group_photo()
    at.file_uploader[0].set_value(("group.png", photo, "image/png"))
    at.run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert len(table) == 5 and set(table["detector"]) == {"mtcnn"} and (table["face_score"] > 0.9).all()
    assert not any("Grad-CAM" in c.value for c in at.caption)
    at.toggle[0].set_value(True).run()  # what the network looked at
    assert not at.exception
    assert any(c.value.startswith("Grad-CAM:") for c in at.caption)
    assert len(at.get("image")) == 6  # the annotated photo and one heat map per face
    at.radio[0].set_value("haar").run()  # the paper's detector misses the tilted and smaller faces
    assert not at.exception
    haar = at.dataframe[0].value
    found, false = score_detections(list(haar[["x", "y", "w", "h"]].itertuples(index=False, name=None)), truth)
    assert set(haar["detector"]) == {"haar"} and found < 5 and false >= 1


def test_pages_explain_a_missing_model(monkeypatch, tmp_path, no_webrtc_session):
    monkeypatch.setenv("FER_WEIGHTS", str(tmp_path / "nothing.safetensors"))
    for page in ("photo", "video", "webcam"):
        at = _run(page)
        assert "No usable model" in at.error[0].value


# ----------------------------------------------------------------------------- video


def test_video_page_renders(tiny_weights):  # noqa: F811
    at = _run("video")
    assert at.title[0].value == "Video" and "Drop a video" in at.info[0].value


def test_video_page_reports_a_bad_video(tiny_weights):  # noqa: F811
    at = _run("video")
    at.file_uploader[0].set_value(("clip.mp4", b"\x00\x00\x00\x18ftypmp42 but then garbage" * 10, "video/mp4"))
    at.run()
    assert not at.exception
    assert "Cannot use **clip.mp4**" in at.error[0].value


def test_video_page_without_faces_says_so(tiny_weights, tmp_path):  # noqa: F811
    path = tmp_path / "plain.mp4"
    write_test_video(path, [np.full((96, 128), 90, np.uint8)] * 6, codec="mpeg4")
    at = _run("video")
    at.file_uploader[0].set_value(("plain.mp4", path.read_bytes(), "video/mp4"))
    at.run()
    assert not at.exception and "No face found" in at.warning[0].value


@pytest.mark.data
def test_video_page_charts_each_tracked_face(tiny_weights, real_data, tmp_path):  # noqa: F811
    frame, _ = compose_frame(real_layout(real_data, 2))
    path = tmp_path / "faces.mp4"
    write_test_video(path, [np.roll(frame, 2 * i, axis=1) for i in range(10)], codec="mpeg4")
    at = _run("video")
    at.file_uploader[0].set_value(("faces.mp4", path.read_bytes(), "video/mp4"))
    at.run()
    assert not at.exception and not at.error
    assert "2 face tracks found" in at.success[0].value
    assert len(at.get("plotly_chart")) == 2
    assert set(at.dataframe[0].value["track_id"]) == {1, 2}


def test_video_page_follows_real_faces_with_the_chosen_detector(tiny_weights, tmp_path):  # noqa: F811
    from fer_core.recognition.scenes import load_pictures, photo_group

    scene = photo_group(load_pictures(FIXTURES))
    path = tmp_path / "group.mp4"
    write_test_video(path, [np.roll(scene.image, 2 * i, axis=1) for i in range(6)], codec="mpeg4")
    at = _run("video")
    assert at.radio[0].value == "mtcnn"
    at.number_input[0].set_value(2)
    at.file_uploader[0].set_value(("group.mp4", path.read_bytes(), "video/mp4"))
    at.run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert "5 face tracks found" in at.success[0].value
    assert set(table["detector"]) == {"mtcnn"} and sorted(set(table["frame"])) == [0, 2, 4]


# ----------------------------------------------------------------------------- webcam


def test_webcam_page_renders_idle(tiny_weights, no_webrtc_session):  # noqa: F811
    at = _run("webcam")
    assert at.title[0].value == "Webcam"
    assert "Camera off" in at.info[0].value
    assert "none (direct connection" in at.caption[-1].value
    assert at.slider[0].value == 0.6
    assert at.session_state["webcam_processor"].smoothing == 0.6
    at.slider[0].set_value(0.2).run()
    assert at.session_state["webcam_processor"].smoothing == 0.2


def test_webcam_page_uses_configured_ice_servers(tiny_weights, no_webrtc_session, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FER_ICE_SERVERS", '[{"urls": ["stun:stun.example.org:3478"]}]')
    at = _run("webcam")
    assert "stun:stun.example.org:3478" in at.caption[-1].value
    monkeypatch.setenv("FER_ICE_SERVERS", "not json")
    at = _run("webcam")
    assert "FER_ICE_SERVERS is not valid JSON" in at.error[0].value


def test_pages_are_listed_in_the_app():
    app = (Path(__file__).resolve().parents[1] / "streamlit_app.py").read_text()
    for page in ("photo", "video", "webcam"):
        assert f'"pages/{page}.py"' in app


def test_photo_page_caps_files_per_upload_and_names_the_cap(tiny_weights, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FER_MAX_FILES", "2")
    at = _run("photo")
    crops = [(f"crop{i}.png", _png(make_face(i, np.random.default_rng(i))), "image/png") for i in range(3)]
    at.file_uploader[0].set_value(crops)
    at.run()
    assert not at.exception
    assert any("FER_MAX_FILES" in w.value and "first 2 of 3" in w.value for w in at.warning)
    assert len(at.dataframe[-1].value) == 2  # all results: the first two photos only


def test_photo_page_analyses_an_upload_once(tiny_weights, monkeypatch):  # noqa: F811
    """Reruns for other widgets reuse the result of an upload (cached by its content)."""
    from fer_core.recognition.recognizer import Recognizer

    calls = []
    real = Recognizer.find_faces

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Recognizer, "find_faces", counting)
    at = _run("photo")
    photo, _ = _group_photo()
    at.file_uploader[0].set_value(("group.png", photo, "image/png"))
    at.run()
    assert len(calls) == 1 and len(at.dataframe[0].value) == 5
    at.toggle[0].set_value(True).run()  # Grad-CAM on: a rerun that needs no new detection
    at.toggle[0].set_value(False).run()
    assert not at.exception and len(calls) == 1
