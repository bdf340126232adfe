"""AppTest of the Training and Optimizer-study pages on a tiny generated data set."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from fer_core.common.paths import runs_dir
from fer_core.common.process import pid_alive
from fer_core.models.active import DEFAULT_WEIGHTS, active_weights
from fer_core.runs.lock import read_lock
from fer_core.runs.store import LAUNCH_NAME, load_run
from fer_core.training.loop import TrainConfig
from fer_core.training.resume import STATE_FILE
from fer_core.training.study import Cell, StudyConfig, write_summary
from tests.conftest import write_folder_dataset
from tests.test_runs import dead_pid, failed_resume, fake_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = write_folder_dataset(tmp_path / "fer", {"train": 20, "test": 5})
    monkeypatch.setenv("FER_DATA", str(data))
    for var in ("FER_ALLOW_TRAINING", "FER_MAX_EPOCHS", "FER_MAX_SUBSET"):
        monkeypatch.delenv(var, raising=False)
    return data


def training_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "training.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_launcher_defaults_to_the_configured_data_and_estimates(tiny_data: Path) -> None:
    at = training_page()
    assert at.text_input(key="data").value == str(tiny_data)
    assert at.selectbox(key="optimizer").value == "amsgrad" and "amsgrad" in at.selectbox(key="optimizer").options
    assert at.selectbox(key="lr").options[:4] == ["0.1", "0.01", "0.001", "0.0001"]
    at.selectbox(key="arch").set_value("tiny").run()
    assert not at.error
    assert any("Estimated duration" in c.value and "126 training images" in c.value for c in at.caption)
    assert not at.button(key="start").disabled


@pytest.mark.parametrize(("widget", "value", "message"), [
    ("data", "/no/such/fer2013", "does not exist"),
    ("lr-custom", "fast", "learning rate 'fast' is not a number"),
    ("lr-custom", "-0.5", "learning rate must be a positive number"),
])
def test_invalid_inputs_are_refused_before_starting(tiny_data: Path, widget: str, value: str, message: str) -> None:
    at = training_page()
    if widget == "lr-custom":
        at.selectbox(key="lr").set_value("custom…").run()
    at.text_input(key=widget).set_value(value).run()
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert at.button(key="start").disabled


def test_deployment_caps_apply(tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_MAX_EPOCHS", "3")
    monkeypatch.setenv("FER_MAX_SUBSET", "10")
    at = training_page()
    assert at.number_input(key="epochs").max == 3
    assert at.number_input(key="subset").max == 10 and at.number_input(key="subset").value == 10
    at.number_input(key="subset").set_value(0).run()
    assert any("full data set is not allowed" in e.value for e in at.error)
    assert at.button(key="start").disabled


def test_bad_cap_setting_is_a_clear_error(tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_MAX_EPOCHS", "lots")
    at = training_page()
    assert "FER_MAX_EPOCHS must be a whole number" in at.error[0].value


def test_training_can_be_switched_off(tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_ALLOW_TRAINING", "0")
    at = training_page()
    assert "disabled" in at.info[0].value
    assert not at.button
    app = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    assert not app.exception  # the hidden page is still registered, so links to it do not break


def test_runs_list_compare_and_promote(tiny_data: Path) -> None:
    done = fake_run("20260101-done", "finished", started="2026-01-01T00:00:00+00:00", test_acc=0.42,
                    best_val_acc=0.4)
    crashed = fake_run("20260102-crashed", "running", pid=dead_pid(), started="2026-01-02T00:00:00+00:00")
    (crashed / STATE_FILE).write_bytes(b"saved after epoch 1")
    fake_run("20260103-failed", "failed", started="2026-01-03T00:00:00+00:00", with_model=False,
             error="TrainingError: loss became nan")
    at = training_page()
    table = at.dataframe[0].value
    assert list(table["run"]) == ["20260103-failed", "20260102-crashed", "20260101-done"]
    assert [s.split()[-1] for s in table["status"]] == ["failed", "interrupted", "finished"]
    assert "loss became nan" in table["error"][0] and table["test acc"][2] == "42.0%"
    assert at.multiselect(key="compare").value == ["20260103-failed", "20260102-crashed"]
    at.multiselect(key="compare").set_value(["20260101-done", "20260102-crashed"]).run()
    assert len(at.get("plotly_chart")) == 1
    assert at.selectbox(key="promote-run").options == ["20260101-done"]  # only finished runs
    at.button(key="promote").click().run()
    assert not at.exception and "now uses" in at.success[0].value
    assert active_weights() == (done / "model.safetensors").resolve()
    at.button(key="restore").click().run()
    assert active_weights() == DEFAULT_WEIGHTS
    assert at.selectbox(key="resume-run").options == ["20260102-crashed"]  # stopped after an epoch


def test_no_resume_section_without_a_stopped_run(tiny_data: Path) -> None:
    fake_run("20260101-done", "finished")
    fake_run("20260103-failed", "failed", with_model=False)  # failed before its first epoch ended
    at = training_page()
    assert not [s for s in at.subheader if s.value == "Resume a stopped run"]


def test_a_failed_resume_is_shown_with_its_reason(tiny_data: Path) -> None:
    run = failed_resume()
    at = training_page()
    table = at.dataframe[0].value
    assert "failed" in table["status"][0] and "saved training state is unreadable" in table["error"][0]
    assert at.selectbox(key="resume-run").options == [run.name]  # it may be tried again
    assert any("The last attempt failed" in w.value and "unreadable" in w.value for w in at.warning)


def test_settings_are_validated_when_they_change_not_on_every_rerun(tiny_data: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``TrainConfig.validate`` reads the data set; clicks elsewhere on the page must not repeat it."""
    calls = []
    validate = TrainConfig.validate
    monkeypatch.setattr(TrainConfig, "validate", lambda cfg: calls.append(cfg.epochs) or validate(cfg))
    at = training_page()
    assert len(calls) == 1
    at.run()
    at.button(key="restore").click().run()
    assert len(calls) == 1
    at.number_input(key="epochs").set_value(2).run()
    assert calls == [1, 2] and not at.error


@pytest.mark.slow
def test_start_watch_and_cancel_from_the_page(tiny_data: Path) -> None:
    at = training_page()
    at.selectbox(key="arch").set_value("tiny").run()
    at.number_input(key="epochs").set_value(100).run()
    at.button(key="start").click().run()
    assert not at.exception and not at.error
    lock = read_lock()
    assert lock and pid_alive(lock["pid"])
    out = Path(lock["run"])
    assert out.parent == runs_dir() and (out / LAUNCH_NAME).is_file()
    assert at.button(key="start").disabled  # one run at a time
    assert any("A run is in progress" in i.value for i in at.info)
    deadline = time.monotonic() + 60
    while load_run(out).progress.get("status") != "running" and time.monotonic() < deadline:
        time.sleep(0.3)
    at.run()
    assert at.get("progress") and "epoch" in at.get("progress")[0].proto.text
    at.button(key="cancel").click().run()
    assert any("Cancel sent" in w.value for w in at.warning)
    deadline = time.monotonic() + 30
    while pid_alive(lock["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert load_run(out).status == "cancelled"
    assert read_lock() is None
    at.run()
    assert "cancelled" in at.dataframe[0].value["status"][0]
    assert not at.button(key="start").disabled


# --------------------------------------------------------------------------- study page


def fake_study(folder: Path) -> None:
    base = TrainConfig(data=os.environ["FER_DATA"], arch="tiny", epochs=2, subset=10, seed=1)
    cells = [Cell("sgd", 0.1, "failed", error="loss became nan"), Cell("sgd", 0.01, "finished", 0.31, 0.30, 0.2),
             Cell("amsgrad", 0.1, "finished", 0.25, 0.27, 0.1), Cell("amsgrad", 0.01, "finished", 0.45, 0.41, 0.3)]
    write_summary(StudyConfig(base=base, optimizers=["sgd", "amsgrad"], lrs=[0.1, 0.01], out=folder), cells)


def table_with(at: AppTest, column: str):
    tables = [df.value for df in at.dataframe if column in df.value.columns]
    assert len(tables) == 1, f"{len(tables)} tables with a '{column}' column"
    return tables[0]


def study_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "study.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_study_page_shows_any_study_folder(tiny_data: Path) -> None:
    folder = runs_dir() / "my-study"
    fake_study(folder)
    at = study_page()
    assert "runs/my-study" in at.selectbox(key="study").options  # named as the project names it, not by server path
    at.selectbox(key="study").set_value(str(folder)).run()
    assert not at.exception and not at.error
    assert [m.value for m in at.metric] == ["amsgrad", "0.01", "45.0%", "41.0%"]
    assert len(at.get("plotly_chart")) == 1
    table = table_with(at, "status")
    assert list(table["status"]) == ["failed", "finished", "finished", "finished"]
    assert "2 epoch(s), 10 training images per class" in at.caption[0].value
    assert "agrees with the paper" in at.markdown[1].value  # amsgrad lr 0.01 is this study's best cell
    against = {r[""]: r for r in table_with(at, "the paper").to_dict("records")}
    assert against["rank of amsgrad lr 0.01"]["this project"] == "1 of 3"
    paper_row = against["test accuracy of the paper's CNN"]["this project"]
    assert paper_row.startswith("61.5% (the shipped model paper, 30 epochs)")


def test_study_page_refuses_a_folder_that_is_not_a_study(tiny_data: Path, tmp_path: Path) -> None:
    at = study_page()
    at.selectbox(key="study").set_value("another folder…").run()
    at.text_input(key="study-path").set_value(str(tmp_path)).run()
    assert not at.exception
    assert "holds no study" in at.error[0].value


def test_study_page_sets_studies_side_by_side_with_their_budgets_and_spreads(tiny_data: Path) -> None:
    fake_study(runs_dir() / "my-study")
    base = TrainConfig(data=os.environ["FER_DATA"], arch="paper", epochs=8, seed=0)
    twice = Cell("amsgrad", 0.01, "finished", 0.5, 0.48, 0.4, seeds=[0, 1], val_acc_min=0.47, val_acc_max=0.53,
                 runs=[{"seed": seed, "status": "finished", "best_val_acc": acc, "test_acc": 0.48, "macro_f1": 0.4,
                        "final_train_loss": 1.0, "train_seconds": 60.0, "wall_seconds": 61.0, "error": None}
                       for seed, acc in ((0, 0.47), (1, 0.53))])
    write_summary(StudyConfig(base=base, optimizers=["amsgrad"], lrs=[0.01], out=runs_dir() / "paper-scale"),
                  [twice])
    at = study_page()
    overview = table_with(at, "best (on validation)")
    rows = {r["study"]: r for r in overview.to_dict("records")}
    assert {"reports/study", "runs/my-study", "runs/paper-scale"} <= set(rows)
    assert rows["runs/paper-scale"]["network"] == "paper" and rows["runs/paper-scale"]["epochs"] == 8
    assert rows["runs/my-study"]["best (on validation)"] == "amsgrad lr 0.01"
    assert rows["runs/my-study"]["agrees with the paper"] == "yes"
    at.selectbox(key="study").set_value(str(runs_dir() / "paper-scale")).run()
    table = table_with(at, "val over seeds")
    assert list(table["val over seeds"]) == ["47.0–53.0%"] and list(table["seeds"]) == ["0, 1"]


def test_a_malformed_study_beside_good_ones_is_one_message_not_a_broken_page(tiny_data: Path) -> None:
    fake_study(runs_dir() / "good")
    bad = runs_dir() / "bad"
    bad.mkdir(parents=True)
    (bad / "study.json").write_text(json.dumps({"budget": None, "cells": [{"lr": 0.01}]}))
    at = study_page()
    rows = {r["study"] for r in table_with(at, "best (on validation)").to_dict("records")}
    assert "runs/good" in rows and "runs/bad" not in rows  # the overview leaves it out
    at.selectbox(key="study").set_value(str(bad)).run()
    assert not at.exception
    assert "cell 1 has no optimizer name and learning rate" in at.error[0].value
