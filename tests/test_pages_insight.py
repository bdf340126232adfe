"""The Metrics and Dataset pages, run headless with AppTest on a tiny generated dataset and a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from fer_core import EMOTIONS
from fer_core.common.labels import FERPLUS_EMOTIONS
from fer_core.data.cleaning import clean_train
from fer_core.data.dataset import load_split
from fer_core.evaluation.evaluate import evaluate
from fer_core.models.checkpoint import load_checkpoint, save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model
from tests.conftest import write_ferplus_folders, write_folder_dataset

PAGES = Path(__file__).resolve().parents[1] / "pages"


@pytest.fixture(autouse=True)
def _fresh_streamlit_caches() -> None:
    """st.cache_* live for the whole process; each test starts as a fresh server would."""
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    torch.manual_seed(3)
    return save_checkpoint(create_model("tiny"), ModelConfig(arch="tiny"), tmp_path / "tiny.safetensors")


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_folder_dataset(tmp_path / "fer", {"train": 6, "test": 5})


def run_page(name: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / name), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def reference(weights: Path, data: Path, split: str = "test"):
    model, _ = load_checkpoint(weights)
    torch.manual_seed(0)
    return evaluate(model, load_split(data, split))


def frame_with_column(at: AppTest, column: str):
    frames = [df.value for df in at.dataframe if column in df.value.columns]
    assert frames, f"no table with a '{column}' column"
    return frames[0]


# --------------------------------------------------------------------------- metrics page


def test_metrics_report_matches_evaluate(tiny_model: Path, tiny_data: Path, monkeypatch) -> None:
    monkeypatch.setenv("FER_WEIGHTS", str(tiny_model))
    monkeypatch.setenv("FER_DATA", str(tiny_data))
    at = run_page("metrics.py")
    ref = reference(tiny_model, tiny_data)
    table = frame_with_column(at, "f1-score")
    rep = ref.report_dict()
    for row in [*EMOTIONS, "macro avg", "weighted avg"]:
        for col in ("precision", "recall", "f1-score", "support"):
            assert table.loc[row, col] == pytest.approx(rep[row][col]), (row, col)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Accuracy"] == f"{ref.accuracy * 100:.2f}%"
    assert metrics["Macro-F1"] == f"{ref.metrics()['macro_f1']:.4f}"
    assert "Expected calibration error" in metrics


def test_confusion_cell_picker_shows_exactly_that_cells_images(tiny_model: Path, tiny_data: Path,
                                                               monkeypatch) -> None:
    monkeypatch.setenv("FER_WEIGHTS", str(tiny_model))
    monkeypatch.setenv("FER_DATA", str(tiny_data))
    ref = reference(tiny_model, tiny_data)
    split = load_split(tiny_data, "test")
    cm = ref.confusion()
    at = run_page("metrics.py")
    for true, pred in [np.unravel_index(int(cm.argmax()), cm.shape), (1, 5)]:
        at.selectbox(key="cm_true").set_value(EMOTIONS[true])
        at.selectbox(key="cm_pred").set_value(EMOTIONS[pred])
        at.run()
        assert not at.exception
        expected = {split.sources[i] for i in np.flatnonzero((ref.labels == true) & (ref.preds == pred))}
        heading = [md.value for md in at.markdown if "→ predicted" in md.value]
        assert heading and f"{len(expected):,} images" in heading[0]
        if expected:
            assert set(frame_with_column(at, "source")["source"]) == expected
            assert all(s.startswith(f"test/{EMOTIONS[true]}/") for s in expected)
        else:
            assert any("No image" in i.value for i in at.info)


def test_metrics_uses_the_disk_cache_the_second_time(tiny_model: Path, tiny_data: Path, monkeypatch) -> None:
    monkeypatch.setenv("FER_WEIGHTS", str(tiny_model))
    monkeypatch.setenv("FER_DATA", str(tiny_data))
    run_page("metrics.py")
    from fer_core.common.paths import cache_dir

    assert len(list((cache_dir() / "evals").glob("*.npz"))) == 1


def test_metrics_without_data_shows_stored_card_metrics(tiny_model: Path, tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    weights = save_checkpoint(create_model("tiny"), ModelConfig(arch="tiny"), run / "model.safetensors")
    cm = np.arange(49).reshape(7, 7).tolist()
    metrics = {"accuracy": 0.6123, "macro_f1": 0.5432, "n": 1176, "confusion_matrix": cm,
               "per_class": {c: {"precision": 0.5, "recall": 0.25, "f1": 0.333, "support": 168} for c in EMOTIONS}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.json").write_text(json.dumps({"train": {"lr": 0.1}, "model": {"arch": "tiny"}}))
    monkeypatch.setenv("FER_WEIGHTS", str(weights))
    monkeypatch.setenv("FER_DATA", str(tmp_path / "nowhere"))
    at = run_page("metrics.py")
    assert any("FER_DATA" in i.value for i in at.info)
    values = {m.label: m.value for m in at.metric}
    assert values["Accuracy"] == "61.23%" and values["Macro-F1"] == "0.5432"
    assert frame_with_column(at, "f1-score").loc["fear", "support"] == 168


def test_metrics_bad_weights_is_a_clear_error(tmp_path: Path, tiny_data: Path, monkeypatch) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    monkeypatch.setenv("FER_WEIGHTS", str(bad))
    monkeypatch.setenv("FER_DATA", str(tiny_data))
    at = run_page("metrics.py")
    assert any("Could not use this model" in e.value for e in at.error)


def test_metrics_lists_finished_runs_with_curves(tiny_model: Path, tiny_data: Path, monkeypatch) -> None:
    from fer_core.common.paths import runs_dir

    run = runs_dir() / "20260101-tiny"
    run.mkdir(parents=True)
    save_checkpoint(create_model("tiny"), ModelConfig(arch="tiny"), run / "model.safetensors")
    (run / "metrics.json").write_text("{}")
    (run / "config.json").write_text(json.dumps({"train": {"lr": 0.05}, "model": {"arch": "tiny"}}))
    (run / "history.csv").write_text("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n"
                                     "1,1.9,0.2,1.8,0.25,0.05,1.0\n2,1.7,0.3,1.6,0.35,0.02,1.0\n")
    (runs_dir() / "unfinished").mkdir()
    (runs_dir() / "unfinished" / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv("FER_WEIGHTS", str(tiny_model))
    monkeypatch.setenv("FER_DATA", str(tiny_data))
    at = run_page("metrics.py")
    options = at.selectbox(key="model").options
    assert "run: 20260101-tiny" in options and not any("unfinished" in o for o in options)
    at.selectbox(key="model").set_value("run: 20260101-tiny").run()
    assert not at.exception
    assert at.json and json.loads(at.json[0].value)["train"]["lr"] == 0.05


# --------------------------------------------------------------------------- metrics page, FER+ and 8-class models


@pytest.fixture
def model8(tmp_path: Path) -> Path:
    torch.manual_seed(3)
    return save_checkpoint(create_model("tiny", 8),
                           ModelConfig(arch="tiny", num_classes=8, classes=list(FERPLUS_EMOTIONS)),
                           tmp_path / "tiny8.safetensors")


@pytest.fixture
def ferplus_data(tmp_path: Path) -> Path:
    return write_ferplus_folders(tmp_path / "ferplus", {"FER2013Train": 2, "FER2013Valid": 3})


def test_metrics_of_an_eight_class_model_on_fer_plus(model8: Path, ferplus_data: Path, monkeypatch) -> None:
    monkeypatch.setenv("FER_WEIGHTS", str(model8))
    monkeypatch.setenv("FER_DATA", str(ferplus_data))
    at = run_page("metrics.py")
    assert at.selectbox(key="split").value == "val"  # FER+ valid: where FER+ models are reported
    model, cfg = load_checkpoint(model8)
    ref = evaluate(model, load_split(ferplus_data, "val"), classes=cfg.classes)
    m = ref.metrics()
    table = frame_with_column(at, "f1-score")
    assert list(table.index) == [*FERPLUS_EMOTIONS, "macro avg", "weighted avg"]
    rep = ref.report_dict()
    for row in table.index:
        assert table.loc[row, "recall"] == pytest.approx(rep[row]["recall"]), row
    values = {v.label: v.value for v in at.metric}
    assert values["FER+ majority accuracy"] == f"{ref.accuracy * 100:.2f}%" and "Accuracy" not in values
    assert values["annotator agreement"] == f"{m['agreement']:.3f}"
    assert values["cross-entropy vs votes"] == f"{m['vote_cross_entropy']:.3f} nats"
    captions = " ".join(c.value for c in at.caption)
    assert "annotators" in captions and "FER+ valid (FER-2013 PublicTest, majority protocol)" in captions
    assert "contempt" in at.selectbox(key="cm_true").options and "contempt" in at.selectbox(key="cm_pred").options
    at.selectbox(key="cm_true").set_value("contempt")
    at.selectbox(key="cm_pred").set_value("contempt")
    at.run()
    assert not at.exception
    hits = int(((ref.labels == 7) & (ref.preds == 7)).sum())
    heading = [md.value for md in at.markdown if "→ predicted" in md.value]
    assert heading == [f"#### majority **contempt** → predicted **contempt**: {hits:,} images"]


def test_a_seven_class_model_on_fer_plus_never_answers_contempt(tiny_model: Path, ferplus_data: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv("FER_WEIGHTS", str(tiny_model))
    monkeypatch.setenv("FER_DATA", str(ferplus_data))
    at = run_page("metrics.py")
    table = frame_with_column(at, "f1-score")
    assert table.loc["contempt", "recall"] == 0 and table.loc["contempt", "support"] > 0
    assert "does not answer contempt" in " ".join(c.value for c in at.caption)
    assert "annotator agreement" in {v.label for v in at.metric}


def test_an_eight_class_model_on_fer2013_chooses_among_its_seven(model8: Path, tiny_data: Path, monkeypatch) -> None:
    monkeypatch.setenv("FER_WEIGHTS", str(model8))
    monkeypatch.setenv("FER_DATA", str(tiny_data))
    at = run_page("metrics.py")
    model, cfg = load_checkpoint(model8)
    ref = evaluate(model, load_split(tiny_data, "test"), classes=cfg.classes)
    table = frame_with_column(at, "f1-score")
    assert list(table.index) == [*EMOTIONS, "macro avg", "weighted avg"]
    values = {v.label: v.value for v in at.metric}
    assert values["Accuracy"] == f"{ref.accuracy * 100:.2f}%" and "annotator agreement" not in values
    assert "contempt is left out of its choice" in " ".join(c.value for c in at.caption)
    assert "contempt" not in at.selectbox(key="cm_true").options


def test_metrics_of_fer_plus_then_fer2013_drops_a_contempt_pick(model8: Path, ferplus_data: Path, tiny_data: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv("FER_WEIGHTS", str(model8))
    monkeypatch.setenv("FER_DATA", str(ferplus_data))
    at = run_page("metrics.py")
    at.selectbox(key="cm_true").set_value("contempt").run()
    at.text_input(key="metrics_data_path").set_value(str(tiny_data)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="cm_true").value in EMOTIONS


def test_stored_metrics_of_an_eight_class_run_show_contempt_and_fer_plus_measures(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    run = tmp_path / "runs" / "r8"
    run.mkdir(parents=True)
    cfg = ModelConfig(arch="tiny", num_classes=8, classes=list(FERPLUS_EMOTIONS))
    weights = save_checkpoint(create_model("tiny", 8), cfg, run / "model.safetensors")
    metrics = {"split": "test", "accuracy": 0.8123, "macro_f1": 0.6432, "n": 96, "classes": list(FERPLUS_EMOTIONS),
               "confusion_matrix": np.eye(8, dtype=int).tolist(), "agreement": 0.7021, "vote_cross_entropy": 0.9,
               "per_class": {c: {"precision": 0.5, "recall": 0.25, "f1": 0.333, "support": 12}
                             for c in FERPLUS_EMOTIONS}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.json").write_text(json.dumps({"train": {"lr": 0.1}, "model": cfg.to_dict()}))
    monkeypatch.setenv("FER_WEIGHTS", str(weights))
    monkeypatch.setenv("FER_DATA", str(tmp_path / "nowhere"))
    at = run_page("metrics.py")
    values = {m.label: m.value for m in at.metric}
    assert values["FER+ majority accuracy"] == "81.23%" and values["annotator agreement"] == "0.702"
    assert values["cross-entropy vs votes"] == "0.900 nats"
    assert frame_with_column(at, "f1-score").loc["contempt", "support"] == 12
    assert len(at.get("plotly_chart")) == 1  # the 8x8 confusion matrix is drawn


def test_stored_metrics_show_a_cards_extra_evaluations(tmp_path: Path, monkeypatch) -> None:
    weights = save_checkpoint(create_model("tiny", 8),
                              ModelConfig(arch="tiny", num_classes=8, classes=list(FERPLUS_EMOTIONS)),
                              tmp_path / "shipped.safetensors")
    per_class = {c: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 3} for c in FERPLUS_EMOTIONS}
    card = {"name": "shipped", "arch": "tiny", "classes": list(FERPLUS_EMOTIONS),
            "test_set": "FER+ valid (FER-2013 PublicTest, majority protocol)",
            "test": {"split": "val", "accuracy": 0.5, "macro_f1": 0.5, "n": 24, "per_class": per_class,
                     "classes": list(FERPLUS_EMOTIONS), "agreement": 0.6, "vote_cross_entropy": 1.1},
            "also": [{"data": "ckplus48", "split": "test", "n": 981, "accuracy": 0.4, "macro_f1": 0.3,
                      "classes": list(FERPLUS_EMOTIONS), "per_class": per_class}]}
    (tmp_path / "shipped.json").write_text(json.dumps(card))
    monkeypatch.setenv("FER_WEIGHTS", str(weights))
    monkeypatch.setenv("FER_DATA", str(tmp_path / "nowhere"))
    at = run_page("metrics.py")
    also = frame_with_column(at, "recall per class")
    assert also.iloc[0]["data"] == "ckplus48" and "contempt 0.50" in also.iloc[0]["recall per class"]
    assert "Measured on FER+ valid" in " ".join(c.value for c in at.caption)


# --------------------------------------------------------------------------- dataset page


def test_dataset_page_distribution_and_cleaning(tmp_path: Path, monkeypatch) -> None:
    root = write_folder_dataset(tmp_path / "fer", {"train": 5, "test": 3})
    # a blank image, a duplicate and a train/test leak, so every cleaning reason has an example
    import cv2

    cv2.imwrite(str(root / "train" / "sad" / "blank.png"), np.full((48, 48), 128, np.uint8))
    dup = cv2.imread(str(root / "train" / "happy" / "train_3_0.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(root / "train" / "happy" / "zz_dup.png"), dup)
    leak = cv2.imread(str(root / "test" / "fear" / "test_2_0.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(root / "train" / "fear" / "zz_leak.png"), leak)
    monkeypatch.setenv("FER_DATA", str(root))
    at = run_page("dataset.py")
    counts = frame_with_column(at, "train")
    train, test = load_split(root, "train"), load_split(root, "test")
    assert counts["train"].tolist() == train.class_counts()
    assert counts["test"].tolist() == test.class_counts()
    _, report = clean_train(train, [test])
    table = frame_with_column(at, "blank")
    assert table.loc["total", "blank"] == report.total("blank") == 1
    assert table.loc["total", "duplicate"] == report.total("duplicate") == 1
    assert table.loc["total", "leak"] == report.total("leak") == 1
    text = " ".join(c.value for c in at.caption)
    assert "train/sad/blank.png" in text and "train/happy/zz_dup.png" in text and "train/fear/zz_leak.png" in text


def test_dataset_page_missing_data_explains(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FER_DATA", str(tmp_path / "nowhere"))
    at = run_page("dataset.py")
    assert any("FER_DATA" in i.value for i in at.info)


def test_dataset_page_reads_fer2013_csv(csv_data: Path, monkeypatch) -> None:
    monkeypatch.setenv("FER_DATA", str(csv_data))
    at = run_page("dataset.py")
    counts = frame_with_column(at, "val")
    assert counts["train"].tolist() == [12] * 7 and counts["val"].tolist() == [4] * 7
    assert counts["test"].tolist() == [4] * 7
    assert frame_with_column(at, "blank").loc["total"].sum() == 0


@pytest.mark.data
@pytest.mark.slow
def test_metrics_on_real_data_matches_the_cli(real_data: Path, tmp_path: Path, monkeypatch) -> None:
    """The visitor's view of the shipped model equals ``python -m fer_core.evaluation.evaluate --json``."""
    import os

    from fer_core.evaluation.evaluate import main
    from fer_core.models.active import DEFAULT_WEIGHTS

    weights = Path(os.environ.get("FER_TEST_WEIGHTS") or DEFAULT_WEIGHTS)
    if not weights.is_file():
        pytest.skip(f"no model at {weights}")
    out = tmp_path / "cli.json"
    assert main(["--data", str(real_data), "--split", "test", "--weights", str(weights), "--json", str(out)]) == 0
    cli = json.loads(out.read_text())
    monkeypatch.setenv("FER_WEIGHTS", str(weights))
    monkeypatch.setenv("FER_DATA", str(real_data))
    at = run_page("metrics.py")
    table = frame_with_column(at, "f1-score")
    for c in EMOTIONS:
        assert table.loc[c, "f1-score"] == pytest.approx(cli["per_class"][c]["f1"])
        assert table.loc[c, "support"] == cli["per_class"][c]["support"]
    assert {m.label: m.value for m in at.metric}["Accuracy"] == f"{cli['accuracy'] * 100:.2f}%"
    # fear -> sad, the confusion the issue asks about: exactly those faces
    at.selectbox(key="cm_true").set_value("fear")
    at.selectbox(key="cm_pred").set_value("sad")
    at.run()
    n = cli["confusion_matrix"][EMOTIONS.index("fear")][EMOTIONS.index("sad")]
    assert any(f"{n:,} images" in md.value for md in at.markdown if "→ predicted" in md.value)
    if n:
        assert len(frame_with_column(at, "source")) == n
