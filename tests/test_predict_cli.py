"""``python -m fer_core.predict``: text, JSON and CSV output, folders in batches, bad files reported."""

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
from fer_core.pipeline_bench import compose_frame
from fer_core.predict import main
from fer_core.recognizer import Recognizer
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
    proc = subprocess.run([sys.executable, "-m", "fer_core.predict", str(folder / "face_1.png")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "face_1.png: face 1 at (0, 0, 48, 48):" in proc.stdout
