"""Where the data is looked for: FER_DATA, else data/fer2013 in the project, and nowhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_core.common import paths


def test_configured_path_wins_even_before_it_exists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FER_DATA", str(tmp_path / "mine"))
    assert paths.default_data_path() == tmp_path / "mine"


def test_project_data_and_no_guessing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FER_DATA", raising=False)
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path / "project")
    (tmp_path / "shared" / "fer2013").mkdir(parents=True)  # a copy beside the checkout is not used
    assert paths.default_data_path() == tmp_path / "project" / "data" / "fer2013"


def test_shown_path_names_files_as_the_project_does(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert paths.shown_path(paths.WEIGHTS_DIR / "model.safetensors") == "weights/model.safetensors"
    assert paths.shown_path(tmp_path / "elsewhere" / "run-1" / "model.safetensors") == "runs/run-1/model.safetensors"
    assert paths.shown_path(tmp_path / "mine.safetensors") == str(tmp_path / "mine.safetensors")  # a user's own file
    assert paths.shown_path("relative/x") == "relative/x"


def test_shown_paths_rewrites_every_path_inside_a_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path))
    config = {"train": {"data": str(paths.PROJECT_ROOT / "data" / "fer2013"), "out": str(tmp_path / "r1"),
                        "lr": 0.01, "optimizer": "amsgrad"}, "members": [str(tmp_path / "r2")]}
    assert paths.shown_paths(config) == {"train": {"data": "data/fer2013", "out": "runs/r1", "lr": 0.01,
                                                   "optimizer": "amsgrad"}, "members": ["runs/r2"]}


def test_shown_message_hides_the_server_layout_in_error_texts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path / "runs"))
    text = f"{paths.WEIGHTS_DIR}/x.safetensors: unreadable; {tmp_path}/runs/r1/model.safetensors"
    assert paths.shown_message(text) == "weights/x.safetensors: unreadable; runs/r1/model.safetensors"


def test_outside_paths_are_cut_to_their_name_for_visitors(tmp_path: Path) -> None:
    config = {"data": "/srv/fer2013", "out": str(paths.PROJECT_ROOT / "runs" / "r1")}
    assert paths.shown_paths(config) == {"data": "/srv/fer2013", "out": "runs/r1"}  # a local user's own paths
    assert paths.shown_paths(config, hide_outside=True) == {"data": "…/fer2013", "out": "runs/r1"}
