"""The recognition pipeline: detection, one-batch classification, TTA, sharing, tracking,
drawing, the webcam callback and video analysis. Real faces come from FER-2013 test
images pasted on a plain frame (skipped without the data); the rest is generated."""

from __future__ import annotations

import threading
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fer_core import EMOTIONS
from fer_core.evaluation import tta
from fer_core.models.checkpoint import CheckpointError, save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model
from fer_core.recognition.align import expand_box
from fer_core.recognition.annotate import EMOTION_COLORS, draw_faces, rgb_color
from fer_core.recognition.detect import DetectorSettings, iou, suppress_overlaps
from fer_core.recognition.pipeline_bench import compose_frame, detectable_faces
from fer_core.recognition.recognizer import Face, Recognizer
from fer_core.recognition.scenes import load_pictures
from fer_core.recognition.tracking import IoUTracker
from fer_core.recognition.video import VideoError, VideoLimitError, VideoLimits, VideoResult, analyse_video
from fer_core.recognition.webcam import WEBCAM_SETTINGS, WebcamProcessor, ice_servers
from tests.conftest import make_face, write_test_video


def save_tiny(path: Path, seed: int = 0) -> Path:
    torch_seed = __import__("torch").manual_seed
    torch_seed(seed)
    model = create_model("tiny").eval()
    return save_checkpoint(model, ModelConfig(arch="tiny"), path)


@pytest.fixture
def tiny_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny random model, also made the app's active model through FER_WEIGHTS."""
    path = save_tiny(tmp_path / "tiny.safetensors")
    monkeypatch.setenv("FER_WEIGHTS", str(path))
    return path


@pytest.fixture
def rec(tiny_weights: Path) -> Recognizer:
    return Recognizer.load()


_LAYOUTS: dict[tuple, list[np.ndarray]] = {}


def real_layout(real_data: Path, n: int, settings: DetectorSettings | None = None) -> list[np.ndarray]:
    """``n`` FER-2013 test faces that both detectors find in ``compose_frame``'s n-face layout (cached)."""
    key = (str(real_data), n, settings)
    if key not in _LAYOUTS:
        _LAYOUTS[key] = detectable_faces(real_data / "test", n, settings=settings, detectors=("haar", "mtcnn"))
    if len(_LAYOUTS[key]) < n:
        pytest.skip(f"fewer than {n} detectable faces in the test data")
    return _LAYOUTS[key]


# ----------------------------------------------------------------------------- results and inputs


def _check_face(face: Face, classes=EMOTIONS) -> None:
    assert set(face.scores) == set(classes)
    assert abs(sum(face.scores.values()) - 1) < 1e-6
    assert face.label == max(face.scores, key=face.scores.get)
    assert face.confidence == face.scores[face.label]


def test_load_defaults_to_the_active_model_and_refuses_missing(rec, tiny_weights, monkeypatch, tmp_path):
    assert rec.weights == tiny_weights
    monkeypatch.setenv("FER_WEIGHTS", str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError):
        Recognizer.load()


def test_small_image_is_one_whole_face(rec):
    img = make_face(3, np.random.default_rng(0))
    faces = rec.predict(img)
    assert len(faces) == 1 and faces[0].box == (0, 0, 48, 48)
    _check_face(faces[0])


def test_accepts_arrays_pil_and_paths_alike(rec, tmp_path):
    gray = make_face(2, np.random.default_rng(1))
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), gray)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    results = [rec.predict(x)[0].scores for x in (gray, rgb, Image.fromarray(gray), path, str(path),
                                                 gray.astype(np.float32) / 255)]
    for s in results[1:]:
        assert np.allclose([s[c] for c in EMOTIONS], [results[0][c] for c in EMOTIONS], atol=2e-3)


def test_bgr_and_rgb_orders_are_respected(rec):
    img = np.zeros((48, 48, 3), np.uint8)
    img[:, :, 0] = 255  # red in RGB, blue in BGR: different gray levels
    a = rec.predict(img, order="rgb")[0].scores
    b = rec.predict(img, order="bgr")[0].scores
    assert a != b


def test_bad_arrays_raise_clear_errors(rec):
    with pytest.raises(ValueError, match="shape"):
        rec.predict(np.zeros((0, 10), np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        rec.predict(12)


def test_plain_frame_has_no_face_until_whole_is_asked(rec):
    frame = np.full((480, 640), 128, np.uint8)
    assert rec.predict(frame) == []
    whole = rec.predict(frame, whole=True)
    assert len(whole) == 1 and whole[0].box == (0, 0, 640, 480)


def test_one_batch_equals_one_by_one(rec):
    rng = np.random.default_rng(2)
    crops = np.stack([make_face(k % 7, rng) for k in range(5)])
    batch = rec.classify(crops)
    single = np.concatenate([rec.classify(crops[i:i + 1]) for i in range(5)])
    assert batch.shape == (5, 7)
    assert np.allclose(batch.sum(1), 1, atol=1e-5)
    assert np.allclose(batch, single, atol=1e-2)


def test_tta_averages_the_views(rec):
    rng = np.random.default_rng(3)
    crops = np.stack([make_face(k, rng) for k in (1, 4)])
    views = tta.views(torch.from_numpy(crops).float().unsqueeze(1)).round().to(torch.uint8).squeeze(1).numpy()
    expected = rec.classify(views, tta=False).reshape(tta.N_VIEWS, 2, -1).mean(0)
    assert np.allclose(rec.classify(crops, tta=True), expected, atol=1e-2)
    assert not np.allclose(rec.classify(crops, tta=True), rec.classify(crops, tta=False), atol=1e-4)


def test_model_is_loaded_once_and_reloaded_when_replaced(tiny_weights):
    a, b = Recognizer.load(), Recognizer.load(tiny_weights)
    assert a._shared is b._shared
    save_tiny(tiny_weights, seed=1)  # a new version of the same file
    c = Recognizer.load()
    assert c._shared is not a._shared


def test_concurrent_predictions_match_sequential(rec):
    rng = np.random.default_rng(4)
    images = [make_face(k % 7, rng) for k in range(8)]
    expected = [rec.predict(im)[0].scores for im in images]
    got: dict[int, dict] = {}

    def work(i: int) -> None:
        for _ in range(5):
            got[i] = rec.predict(images[i])[0].scores

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert np.allclose(list(got[i].values()), list(expected[i].values()), atol=1e-5)


# ----------------------------------------------------------------------------- detection helpers


def test_suppress_overlaps_keeps_the_largest_of_nested_boxes():
    boxes = [(100, 100, 50, 50), (90, 90, 80, 80), (300, 100, 60, 60), (305, 105, 60, 60)]
    kept = suppress_overlaps(boxes)
    assert kept == [(90, 90, 80, 80), (300, 100, 60, 60)] or kept == [(90, 90, 80, 80), (305, 105, 60, 60)]


def test_expand_box_is_square_and_clipped():
    assert expand_box((10, 10, 100, 80), 0.1, 640, 480) == (0, 0, 120, 110)
    x, y, w, h = expand_box((200, 200, 100, 100), 0.1, 640, 480)
    assert (w, h) == (120, 120) and (x, y) == (190, 190)


def test_settings_are_validated():
    with pytest.raises(ValueError):
        DetectorSettings(scale_factor=1.0)
    with pytest.raises(ValueError):
        DetectorSettings(margin=2)


# ----------------------------------------------------------------------------- real faces


@pytest.mark.data
def test_finds_every_face_in_a_composed_frame(rec, real_data):
    frame, truth = compose_frame(real_layout(real_data, 3))
    faces = rec.predict(frame)
    assert len(faces) == 3
    for t in truth:
        assert max(iou(t, f.box) for f in faces) > 0.5
    for f in faces:
        _check_face(f)


@pytest.mark.data
def test_concurrent_detection_is_consistent(rec, real_data):
    """Sessions and the webcam thread detect at the same time; each borrows its own cascade."""
    frame, _ = compose_frame(real_layout(real_data, 3))
    expected = rec.detect(frame)
    results: list[list] = []

    def work() -> None:
        for _ in range(3):
            results.append(rec.detect(frame))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12 and all(r == expected for r in results)


@pytest.mark.data
def test_composed_frame_in_colour_and_with_webcam_settings(rec, real_data):
    frame, _ = compose_frame(real_layout(real_data, 2, WEBCAM_SETTINGS["haar"]))
    bgr = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    assert len(rec.predict(bgr, settings=WEBCAM_SETTINGS[rec.detector.name])) == 2


@pytest.mark.data
@pytest.mark.parametrize(("detector", "floor"), [("haar", 0.6), ("mtcnn", 0.5)])
def test_default_margin_reproduces_fer_framing(tiny_weights, real_data, detector, floor):
    """Crops cut from the frame look like the original FER-2013 images (median pixel correlation),
    and clearly more so than with a generous margin: the network sees the framing it was trained on."""
    rec = Recognizer(tiny_weights, detector=detector)
    corr: dict[float, list[float]] = {rec.margin(): [], 0.2: []}
    for path in sorted((real_data / "test").glob("*/*.jpg"))[:80]:
        face = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        frame, _ = compose_frame([face])
        for margin, values in corr.items():
            dets, crops = rec.find_faces(frame, whole=False, settings=DetectorSettings(margin=margin, align=False))
            if len(dets) == 1:
                values.append(np.corrcoef(crops[0].ravel().astype(float), face.ravel().astype(float))[0, 1])
    default, wide = (float(np.median(v)) for v in corr.values())
    assert len(corr[0.2]) > 40
    assert default > floor and default > wide + 0.2


# ----------------------------------------------------------------------------- tracking and smoothing


def test_tracker_keeps_ids_and_smooths():
    tr = IoUTracker(smoothing=0.5, max_age=2)
    p1, p2 = np.eye(7)[3], np.eye(7)[4]
    a = tr.update([(100, 100, 80, 80), (400, 100, 80, 80)], np.stack([p1, p2]))
    assert [f.track_id for f in a] == [1, 2]
    b = tr.update([(405, 102, 80, 80), (104, 98, 80, 80)], np.stack([p1, p1]))  # moved a little, order swapped
    assert [f.track_id for f in b] == [2, 1]
    assert b[0].scores["happy"] == pytest.approx(0.5) and b[0].scores["sad"] == pytest.approx(0.5)
    assert b[1].label == "happy" and b[1].confidence == pytest.approx(1.0)
    for _ in range(3):
        tr.update([], np.zeros((0, 7)))
    c = tr.update([(104, 98, 80, 80)], p1[None])
    assert c[0].track_id == 3  # the old tracks expired


def test_tracker_without_smoothing_passes_scores_through():
    tr = IoUTracker(smoothing=0.0)
    tr.update([(0, 0, 50, 50)], np.eye(7)[0][None])
    f = tr.update([(0, 0, 50, 50)], np.eye(7)[6][None])[0]
    assert f.label == "neutral" and f.confidence == pytest.approx(1.0) and f.track_id == 1
    with pytest.raises(ValueError):
        tr.smoothing = 1.0


# ----------------------------------------------------------------------------- drawing


def test_draw_faces_uses_the_emotions_colour():
    img = np.zeros((200, 200, 3), np.uint8)
    face = Face.from_probs((50, 60, 80, 80), np.eye(7)[3])
    out = draw_faces(img, [face], order="rgb")
    assert img.sum() == 0  # the input is untouched
    assert tuple(out[100, 50]) == rgb_color("happy")  # left edge of the box
    bgr = draw_faces(img, [face], order="bgr")
    assert tuple(bgr[100, 50]) == rgb_color("happy")[::-1]
    assert len(set(EMOTION_COLORS.values())) == len(EMOTION_COLORS) >= len(EMOTIONS) + 1  # distinct, contempt too


# ----------------------------------------------------------------------------- webcam callback


def test_webcam_callback_is_frame_to_frame(rec):
    proc = WebcamProcessor(rec)
    frame = av.VideoFrame.from_ndarray(np.full((480, 640, 3), 90, np.uint8), format="bgr24")
    frame.pts = 1234
    out = proc(frame)
    assert isinstance(out, av.VideoFrame) and (out.width, out.height) == (640, 480) and out.pts == 1234
    arr = out.to_ndarray(format="bgr24")
    assert (arr[:40, :200] != 90).any()  # the FPS/latency overlay
    assert (arr[200:, 300:] == 90).all()  # no face, nothing else drawn
    assert proc.frames == 1 and proc.latency_ms > 0 and proc.drain() == []


@pytest.mark.data
def test_webcam_callback_annotates_faces_and_feeds_the_queue(rec, real_data):
    gray, truth = compose_frame(real_layout(real_data, 2, WEBCAM_SETTINGS["haar"]))
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    proc = WebcamProcessor(rec, smoothing=0.5, asynchronous=False)
    for _ in range(3):
        out = proc(av.VideoFrame.from_ndarray(bgr, format="bgr24")).to_ndarray(format="bgr24")
    rows = proc.drain()
    assert len(rows) == 6 and {r["track_id"] for r in rows} == {1, 2}
    assert all(abs(sum(r[c] for c in EMOTIONS) - 1) < 1e-6 for r in rows)
    colours = {rgb_color(r["label"])[::-1] for r in rows[-2:]}
    for x, y, w, h in truth:  # each face's box is drawn (in its emotion's colour) near the true outline
        ring = np.concatenate([out[y - 15:y + h + 15, x - 15:x + 5].reshape(-1, 3),
                               out[y - 15:y + h + 15, x + w - 5:x + w + 15].reshape(-1, 3)])
        assert any((ring == c).all(1).any() for c in colours)
    assert proc.fps > 0


def test_webcam_queue_is_bounded_and_keeps_the_newest(rec):
    proc = WebcamProcessor(rec, history_rows=3)
    for t in range(10):
        proc._push({"t": t})
    assert [r["t"] for r in proc.drain()] == [7, 8, 9]


def test_ice_servers_default_env_and_secrets():
    assert ice_servers({}, {}) == []
    env = {"FER_ICE_SERVERS": '[{"urls": ["stun:stun.example.org:3478"]}]'}
    assert ice_servers({}, env) == [{"urls": ["stun:stun.example.org:3478"]}]
    secrets = {"ice_servers": [{"urls": "turn:t.example.org", "username": "u", "credential": "c"}]}
    assert ice_servers(secrets, env)[0]["username"] == "u"  # secrets win
    with pytest.raises(ValueError, match="JSON"):
        ice_servers({}, {"FER_ICE_SERVERS": "[{"})
    with pytest.raises(ValueError, match="urls"):
        ice_servers({}, {"FER_ICE_SERVERS": '[{"url": "stun:x"}]'})


# ----------------------------------------------------------------------------- video


def test_video_without_faces_and_bad_videos(rec, tmp_path):
    path = tmp_path / "plain.mp4"
    write_test_video(path, [np.full((96, 128), 60 + i, np.uint8) for i in range(12)], codec="mpeg4")
    res = analyse_video(path, rec, every=4)
    assert (res.frames_decoded, res.frames_analysed, res.rows) == (12, 3, [])
    assert (res.width, res.height) == (128, 96)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 50)
    with pytest.raises(VideoError, match="not a video"):
        analyse_video(bad, rec)
    avi = tmp_path / "clip.avi"
    write_test_video(avi, [np.full((64, 64), 100, np.uint8)] * 5, codec="mpeg4")
    data = avi.read_bytes()
    assert b"FMP4" in data
    unknown = tmp_path / "unknown_codec.avi"
    unknown.write_bytes(data.replace(b"FMP4", b"ZZZZ"))  # a codec no decoder knows
    with pytest.raises(VideoError, match="unsupported codec"):
        analyse_video(unknown, rec)


def _plain_clip(path, n: int = 12, size: tuple[int, int] = (96, 128)):
    write_test_video(path, [np.full(size, 60 + i, np.uint8) for i in range(n)], codec="mpeg4")
    return path


def test_video_limits_end_the_analysis_early_and_say_which(rec, tmp_path):
    path = _plain_clip(tmp_path / "plain.mp4")
    res = analyse_video(path, rec, every=2, limits=VideoLimits(max_frames=3))
    assert (res.frames_analysed, res.stopped) == (3, "max_frames")
    res = analyse_video(path, rec, every=1, limits=VideoLimits(max_seconds=0.45))  # write_test_video: 10 fps
    assert res.stopped == "max_seconds" and res.frames_decoded == 5 and res.last_time_s <= 0.45
    res = analyse_video(path, rec, limits=VideoLimits(max_wall_seconds=0.0))
    assert (res.stopped, res.frames_decoded, res.rows) == ("max_wall_seconds", 0, [])  # not "no frames"
    calls = iter(range(100))
    res = analyse_video(path, rec, every=1, should_stop=lambda: next(calls) >= 4)
    assert (res.stopped, res.frames_analysed) == ("stopped", 4)
    res = analyse_video(path, rec, every=1, limits=VideoLimits(max_frames=12))
    assert res.stopped is None and res.frames_analysed == 12  # the clip ended first: nothing was cut


def test_video_over_the_resolution_cap_is_refused_before_decoding(rec, tmp_path):
    path = _plain_clip(tmp_path / "wide.mp4", n=3, size=(96, 128))
    with pytest.raises(VideoLimitError, match=r"128x96 \(0.0 megapixels a frame\)") as refused:
        analyse_video(path, rec, limits=VideoLimits(max_pixels=128 * 96 - 1))
    assert refused.value.limit == "max_pixels"
    assert analyse_video(path, rec, limits=VideoLimits(max_pixels=128 * 96)).frames_decoded == 3


def test_an_interrupted_analysis_keeps_what_it_analysed(rec, tmp_path):
    """A Stop click ends the page's script inside the progress callback: the result passed in holds the rows."""
    path = _plain_clip(tmp_path / "plain.mp4")
    partial = VideoResult()

    def interrupt(fraction: float) -> None:
        if partial.frames_analysed >= 5:
            raise KeyboardInterrupt  # what Streamlit's rerun does to the running script, in effect

    with pytest.raises(KeyboardInterrupt):
        analyse_video(path, rec, every=1, progress=interrupt, into=partial)
    assert partial.frames_analysed == 5 and (partial.width, partial.height, partial.codec) == (128, 96, "mpeg4")


@pytest.mark.data
def test_video_tracks_moving_faces(rec, real_data, tmp_path):
    frame, _ = compose_frame(real_layout(real_data, 2))
    frames = [np.roll(frame, 2 * i, axis=1) for i in range(20)]
    path = tmp_path / "faces.mp4"
    write_test_video(path, frames, fps=10, codec="mpeg4")
    seen: list[float] = []
    res = analyse_video(path, rec, every=2, progress=seen.append)
    assert res.frames_analysed == 10 and seen[-1] == 1.0
    tracks = {r["track_id"] for r in res.rows}
    assert len(tracks) == 2, tracks  # two faces, followed across all analysed frames
    assert len(res.rows) >= 18 and res.preview is not None
    assert {r["frame"] for r in res.rows} <= set(range(0, 20, 2))


# ----------------------------------------------------------------------------- benchmark


@pytest.mark.data
def test_pipeline_bench_times_frames_with_the_faces_it_claims(tiny_weights, real_data, monkeypatch):
    from fer_core.recognition.pipeline_bench import format_table, run

    monkeypatch.setenv("FER_TEST_DATA", str(real_data))
    rows, about = run(tiny_weights, seconds=0.05)
    cases = [r["case"] for r in rows]
    assert any("1 face (found 1)" in c for c in cases) and any("3 faces (found 3)" in c for c in cases)
    assert all(r["ms"] > 0 and r["worst"] >= r["p90"] >= r["ms"] for r in rows)
    live = [r for r in rows if "own thread" in r["case"]]
    assert live and all(r["shown_fps"] > 0 for r in live)
    assert all(r["lag_px"] >= 0 for r in live if "(found 0)" not in r["case"])  # no face, no lag to measure
    table = format_table(rows)
    assert table.startswith("| case | mean ms |") and table.count("\n") == len(rows) + 1
    assert "tiny.safetensors" in about and "avx" in about


def test_webcam_settings_follow_the_frame_width(rec):
    """A busy browser sends 480x360 or 320x240: the smallest face shrinks with the frame."""
    proc = WebcamProcessor(rec)
    full = proc.settings.min_size
    proc.process(np.full((480, 640, 3), 90, np.uint8))
    assert proc.frame_size == (640, 480) and proc._settings_for(640).min_size == full
    proc.process(np.full((240, 320, 3), 90, np.uint8))
    assert proc.frame_size == (320, 240) and proc._settings_for(320).min_size == round(full / 2)
    assert proc._settings_for(1280).min_size == full


def test_webcam_detects_every_nth_frame_and_carries_the_boxes(tiny_weights):
    """Synchronous (as video files are analysed): MTCNN runs on one frame in three; in between, the last
    boxes are reused on the new frame."""
    from fer_core.recognition.scenes import load_pictures, photo_group

    scene = photo_group(load_pictures(Path(__file__).resolve().parent / "fixtures" / "faces"))
    bgr = cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR)
    rec = Recognizer(tiny_weights, detector="mtcnn")
    calls = []
    real = rec.detector.detect

    def counting(image, settings):
        calls.append(1)
        return real(image, settings)

    rec.detector = type("Counting", (), {"name": "mtcnn", "margin": 0.0, "uses_colour": True,
                                         "detect": staticmethod(counting)})()
    proc = WebcamProcessor(rec, asynchronous=False)
    assert proc.detect_every == 3
    for _ in range(6):
        proc.process(bgr)
    rows = proc.drain()
    assert len(calls) == 2 and len(rows) == 30 and {r["track_id"] for r in rows} == {1, 2, 3, 4, 5}


def test_webcam_detects_again_when_the_frame_size_changes(tiny_weights):
    """Carried boxes belong to the frame they were found in: a browser that drops to 320x240
    between detection frames gets a fresh detection, not a crop outside its frame."""
    from fer_core.recognition.scenes import load_pictures, photo_group

    scene = photo_group(load_pictures(Path(__file__).resolve().parent / "fixtures" / "faces"))
    big = cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR)
    proc = WebcamProcessor(Recognizer(tiny_weights, detector="mtcnn"), asynchronous=False)
    proc.process(big)  # a detection frame at 640x480: five faces, some right of x = 320
    assert len(proc._carried) == 5 and max(d.box[0] for d in proc._carried) > 320
    out = proc.process(cv2.resize(big, (320, 240), interpolation=cv2.INTER_AREA))  # not a detection frame
    assert out.shape == (240, 320, 3)
    assert all(d.box[0] + d.box[2] <= 320 and d.box[1] + d.box[3] <= 240 for d in proc._carried)


def test_a_face_at_the_edge_keeps_its_proportions():
    from fer_core.recognition.align import crop_face
    from fer_core.recognition.detect import Detection

    gray = np.zeros((100, 100), np.uint8)
    gray[:, :50] = 200  # left half bright
    crop = crop_face(gray, Detection((0, 20, 60, 60)), 0.2, 48)  # the grown square runs off the left edge
    assert crop.shape == (48, 48)
    bright = (crop > 100).mean(axis=0)
    assert bright[:20].min() > 0.9 and bright[-12:].max() < 0.1  # repeated edge, not a squashed image


def _face_clip(path: Path, frame: np.ndarray, n: int = 5, first_pts: int = 0) -> Path:
    """``n`` copies of an RGB frame at 10 fps, the first stamped ``first_pts`` tenths of a second in."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.height, stream.width = frame.shape[:2]
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = first_pts + i
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_a_clip_that_does_not_start_at_zero_is_analysed_from_its_first_frame(rec, tmp_path):
    """A clip cut from a longer recording keeps its time stamps (here from 700 s on)."""
    face = load_pictures(Path(__file__).resolve().parent / "fixtures" / "faces")["astronaut.png"].image
    res = analyse_video(_face_clip(tmp_path / "late.mkv", face, first_pts=7000), rec, every=1)
    assert res.stopped is None and res.frames_analysed == 5 and res.rows
    assert [r["time_s"] for r in res.rows] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_a_phone_clip_stored_sideways_is_analysed_upright(rec, tmp_path):
    """Phones store portrait video sideways with a rotation in the file's display matrix (tkhd)."""
    import struct

    face = load_pictures(Path(__file__).resolve().parent / "fixtures" / "faces")["astronaut.png"].image[:, 64:448]
    path = _face_clip(tmp_path / "portrait.mp4", np.rot90(face, 1))  # 384x512 portrait, stored 512x384
    data = bytearray(path.read_bytes())
    identity = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.rfind(identity)  # the track's matrix (the movie header's comes first)
    data[at:at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)  # show it turned back
    path.write_bytes(bytes(data))
    with av.open(str(path)) as c:
        assert next(c.decode(c.streams.video[0])).rotation == -90
    res = analyse_video(path, rec, every=1)
    assert res.frames_analysed == 5 and len({r["frame"] for r in res.rows}) == 5  # the face, in every frame
    assert (res.width, res.height) == (face.shape[1], face.shape[0])  # its size as a player shows it


def test_a_big_batch_gets_the_default_threads_even_in_a_thread_started_at_one():
    """torch copies a thread's count into the threads it starts: a Streamlit run started while MTCNN
    held one thread must not classify a folder of photos on one."""
    from fer_core.common.device import DEFAULT_THREADS, torch_threads

    seen = []
    with torch_threads(1):
        t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()) or _run_default(seen))
        t.start()
        t.join()
    assert seen == [1, DEFAULT_THREADS]


def _run_default(seen: list) -> None:
    from fer_core.common.device import torch_threads

    with torch_threads(None):
        seen.append(torch.get_num_threads())
