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
