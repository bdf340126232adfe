"""Where the data is looked for: FER_DATA, else data/fer2013, else the development copy beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_core import paths


def test_configured_path_wins_even_before_it_exists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FER_DATA", str(tmp_path / "mine"))
    assert paths.default_data_path() == tmp_path / "mine"


def test_project_data_then_development_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FER_DATA", raising=False)
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path / "project")
    monkeypatch.setattr(paths, "DEV_DATA", tmp_path / "shared")
    assert paths.default_data_path() == tmp_path / "project" / "data" / "fer2013"  # neither exists
    (tmp_path / "shared").mkdir()
    assert paths.default_data_path() == tmp_path / "shared"
    (tmp_path / "project" / "data" / "fer2013").mkdir(parents=True)
    assert paths.default_data_path() == tmp_path / "project" / "data" / "fer2013"
