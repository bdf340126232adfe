"""``python -m fer_core.recognition.predict``: text, JSON and CSV output, folders in batches, bad files reported."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_core import EMOTIONS
from fer_core.recognition.pipeline_bench import compose_frame
from fer_core.recognition.predict import main
from fer_core.recognition.recognizer import Recognizer
from tests.conftest import make_face
from tests.test_recognizer import real_layout, tiny_weights  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for i in range(7):
        cv2.imwrite(str((d if i % 2 else d / "sub") / f"face_{i}.png"), make_face(i, rng))
    (d / "notes.txt").write_text("not an image, and not picked up from a folder")
    return d


def test_folder_in_batches_matches_one_by_one(tiny_weights, folder, capsys):  # noqa: F811
    assert main([str(folder), "--json", "--batch", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 7 and all(len(r["faces"]) == 1 for r in lines)
    assert sorted(Path(r["path"]).name for r in lines) == [f"face_{i}.png" for i in range(7)]
    assert [r["path"] for r in lines] == sorted(r["path"] for r in lines)  # folder order, across batches
    rec = Recognizer.load()
    for r in lines:
        face = r["faces"][0]
        assert abs(sum(face[c] for c in EMOTIONS) - 1) < 1e-3
        one = rec.predict(cv2.imread(r["path"], cv2.IMREAD_GRAYSCALE))[0]
        assert face["label"] == one.label
        assert face["confidence"] == pytest.approx(one.confidence, abs=1e-2)


def test_csv_output_and_bad_files(tiny_weights, folder, tmp_path, capsys):  # noqa: F811
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    rc = main([str(folder / "face_1.png"), str(bad), str(empty), str(tmp_path / "missing.png"), "--csv"])
    out, err = capsys.readouterr()
    assert rc == 1
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1 and rows[0]["face"] == "1" and rows[0]["label"] in EMOTIONS
    assert abs(sum(float(rows[0][c]) for c in EMOTIONS) - 1) < 1e-3
    assert "broken.jpg: error: not an image" in err
    assert "empty.png: error: the file is empty" in err
    assert "missing.png: error: cannot read" in err


def test_text_output_and_whole_mode(tiny_weights, tmp_path, capsys):  # noqa: F811
    plain = tmp_path / "plain.png"
    cv2.imwrite(str(plain), np.full((300, 400), 128, np.uint8))
    assert main([str(plain)]) == 0
    assert "no face found (try --whole)" in capsys.readouterr().out
    assert main([str(plain), "--whole"]) == 0
    out = capsys.readouterr().out
    assert "face 1 at (0, 0, 400, 300)" in out and "%" in out


def test_usage_errors(tiny_weights, tmp_path, capsys):  # noqa: F811
    (tmp_path / "empty_dir").mkdir()
    assert main([str(tmp_path / "empty_dir")]) == 2
    assert "no images found" in capsys.readouterr().err
    assert main([str(tmp_path), "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.data
def test_detects_faces_in_a_composed_photo(tiny_weights, real_data, tmp_path, capsys):  # noqa: F811
    frame, _ = compose_frame(real_layout(real_data, 3))
    path = tmp_path / "group.jpg"
    cv2.imwrite(str(path), frame)
    assert main([str(path), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["faces"]) == 3


def test_runs_as_a_module(tiny_weights, folder):  # noqa: F811
    proc = subprocess.run([sys.executable, "-m", "fer_core.recognition.predict", str(folder / "face_1.png")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "face_1.png: face 1 at (0, 0, 48, 48):" in proc.stdout


FIXTURES = ROOT / "tests" / "fixtures" / "faces"


def _group_scene():
    from fer_core.recognition.scenes import load_pictures, photo_group

    return photo_group(load_pictures(FIXTURES))


def test_detector_choice_is_recorded(tiny_weights, tmp_path, capsys):  # noqa: F811
    scene = _group_scene()
    path = tmp_path / "group.png"
    cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    assert main([str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["detector"] == "mtcnn" and len(record["faces"]) == 5
    assert all(len(f["landmarks"]) == 5 and f["face_score"] >= 0.9 for f in record["faces"])
    assert main([str(path), "--csv", "--detector", "haar"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and {r["detector"] for r in rows} == {"haar"} and {r["face_score"] for r in rows} == {""}
    with pytest.raises(SystemExit):  # argparse rejects an unknown detector
        main([str(path), "--detector", "nope"])


def test_video_streams_one_row_per_face_per_analysed_frame(tiny_weights, tmp_path, capsys):  # noqa: F811
    from tests.conftest import write_test_video

    scene = _group_scene()
    clip = tmp_path / "clip.mp4"
    write_test_video(clip, [np.roll(scene.image, 3 * i, axis=1) for i in range(9)], fps=10, codec="mpeg4")
    photo = tmp_path / "still.png"
    cv2.imwrite(str(photo), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    assert main([str(clip), str(photo), "--csv", "--every", "4"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    video = [r for r in rows if r["path"] == str(clip)]
    assert sorted({int(r["frame"]) for r in video}) == [0, 4, 8]
    assert [float(r["time_s"]) for r in video if r["face"] == "1"] == [0.0, 0.4, 0.8]
    assert len(video) == 15 and len({r["track_id"] for r in video}) == 5  # 5 faces followed over 3 frames
    assert all(r["detector"] == "mtcnn" and abs(sum(float(r[c]) for c in EMOTIONS) - 1) < 1e-3 for r in video)
    still = [r for r in rows if r["path"] == str(photo)]
    assert len(still) == 5 and {r["frame"] for r in still} == {""}
    assert "clip.mp4" in err  # the progress bar, on stderr


def test_video_rows_stream_before_the_clip_ends(tiny_weights, tmp_path, monkeypatch):  # noqa: F811
    """Rows leave as frames are analysed: nothing accumulates, however long the clip."""
    from fer_core.recognition import predict
    from fer_core.recognition.video import VideoAnalysis
    from tests.conftest import write_test_video

    clip = tmp_path / "long.mp4"
    write_test_video(clip, [np.full((96, 128), 60 + i, np.uint8) for i in range(30)], codec="mpeg4")
    seen: list[int] = []
    opened: list[VideoAnalysis] = []

    class Spy(predict.Output):
        def video_frame(self, path, frame):
            seen.append(opened[0].frames_decoded)  # how far decoding had got when this row left
            super().video_frame(path, frame)

    real_init = VideoAnalysis.__init__

    def remember(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(VideoAnalysis, "__init__", remember)
    monkeypatch.setattr(predict, "Output", Spy)
    assert main([str(clip), "--csv", "--every", "10"]) == 0
    assert seen == [1, 11, 21]


def test_bad_video_is_reported_and_skipped(tiny_weights, tmp_path, capsys):  # noqa: F811
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    assert main([str(bad), "--csv"]) == 1
    assert "bad.mp4: error: not a video file" in capsys.readouterr().err
    assert main([str(bad), "--every", "0"]) == 2


def test_explain_writes_one_heat_map_per_face(tiny_weights, tmp_path, capsys):  # noqa: F811
    photo = tmp_path / "astronaut.png"
    photo.write_bytes((FIXTURES / "astronaut.png").read_bytes())
    out_dir = tmp_path / "why"
    assert main([str(photo), "--explain", str(out_dir)]) == 0
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == ["astronaut_face1.png"]
    img = cv2.imread(str(out_dir / written[0]))
    assert img.shape == (192, 192, 3) and img.std() > 10


def test_explain_keeps_every_face_of_same_named_images_and_refuses_a_bad_folder(tiny_weights, tmp_path,  # noqa: F811
                                                                                capsys):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.png").write_bytes((FIXTURES / "astronaut.png").read_bytes())
    (tmp_path / "b" / "x-2.png").write_bytes((FIXTURES / "astronaut.png").read_bytes())
    out_dir = tmp_path / "why"
    images = [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), str(tmp_path / "b" / "x-2.png")]
    assert main([*images, "--explain", str(out_dir)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["x-2-2_face1.png", "x-2_face1.png", "x_face1.png"]
    a_file = tmp_path / "a" / "x.png"
    assert main([str(a_file), "--explain", str(a_file)]) == 2  # a file where the folder should be
    assert "error: --explain" in capsys.readouterr().err and a_file.stat().st_size > 0


def test_a_path_the_os_refuses_is_reported_in_its_place(tiny_weights, tmp_path, capsys):  # noqa: F811
    good = tmp_path / "astronaut.png"
    good.write_bytes((FIXTURES / "astronaut.png").read_bytes())
    assert main(["--csv", str(good), str(tmp_path / ("a" * 300 + ".jpg"))]) == 1
    captured = capsys.readouterr()
    assert "astronaut.png" in captured.out and "File name too long" in captured.err
    assert main(["--weights", str(tmp_path / ("w" * 300)), str(good)]) == 2
