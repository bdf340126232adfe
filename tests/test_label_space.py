"""Every surface answers in the model's own classes: an 8-class FER+ model says contempt in the API,
fer-predict's CSV and JSON, the webcam's rows, the drawing colours and Grad-CAM."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fer_core.common.labels import FERPLUS_EMOTIONS
from fer_core.models.checkpoint import save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model
from fer_core.recognition.annotate import EMOTION_COLORS
from fer_core.recognition.recognizer import Recognizer
from fer_core.recognition.webcam import WebcamProcessor

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "faces"


@pytest.fixture
def eight(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("tiny", 8).eval()
    with torch.no_grad():
        model[-1].bias[FERPLUS_EMOTIONS.index("contempt")] = 20.0  # it answers contempt for every face
    return save_checkpoint(model, ModelConfig("tiny", 8, list(FERPLUS_EMOTIONS)), tmp_path / "eight.safetensors")


def test_the_api_answers_in_the_models_classes(eight: Path) -> None:
    rec = Recognizer(eight)
    assert rec.classes == FERPLUS_EMOTIONS
    (face,) = rec.predict(np.full((48, 48), 128, np.uint8))
    assert face.label == "contempt" and list(face.scores) == list(FERPLUS_EMOTIONS)
    assert all(c in EMOTION_COLORS for c in FERPLUS_EMOTIONS)  # every class has its colour on boxes and charts


def test_fer_predict_writes_the_models_columns(eight: Path, capsys: pytest.CaptureFixture) -> None:
    from fer_core.recognition.predict import main

    photo = str(FIXTURES / "grace_hopper.jpg")
    assert main([photo, "--csv", "--weights", str(eight)]) == 0
    header, first = capsys.readouterr().out.splitlines()[:2]
    assert header.split(",")[-10:-2] == list(FERPLUS_EMOTIONS) and "contempt" in first
    assert main([photo, "--json", "--weights", str(eight)]) == 0
    faces = json.loads(capsys.readouterr().out)
    found = faces[0]["faces"] if isinstance(faces, list) and "faces" in faces[0] else faces
    assert json.dumps(found).count("contempt") >= 2  # the label and its score


def test_the_webcam_rows_carry_the_models_classes(eight: Path) -> None:
    rec = Recognizer(eight)
    bgr = cv2.imread(str(FIXTURES / "grace_hopper.jpg"))
    proc = WebcamProcessor(rec, asynchronous=False)
    try:
        proc.process(bgr)
        rows = proc.drain()
        assert rows and rows[0]["label"] == "contempt" and "contempt" in rows[0]
    finally:
        proc.close()


def test_grad_cam_explains_the_eighth_class(eight: Path) -> None:
    from fer_core.recognition.explain import explainer_for, gradcam

    crops = np.random.default_rng(0).integers(0, 255, (2, 48, 48), dtype=np.uint8)
    maps, classes = gradcam(explainer_for(eight), crops, [7, 7])
    assert maps.shape[0] == 2 and list(classes) == [7, 7]
