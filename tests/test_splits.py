"""The split a dataset's figures are quoted on, and its name in words on cards and pages."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_core.data.dataset import DatasetError
from fer_core.data.splits import data_name, describe_split, report_split
from tests.conftest import write_csv_dataset, write_ferplus_folders, write_folder_dataset


def test_fer2013_reports_on_test_and_names_it_by_layout(tmp_path: Path) -> None:
    kaggle = write_folder_dataset(tmp_path / "fer2013", {"train": 1, "test": 1})
    assert report_split(kaggle) == "test" and describe_split(kaggle, "test") == "FER-2013 PublicTest"
    packed = write_folder_dataset(tmp_path / "packed", {"train": 1, "val": 1, "test": 1})
    assert describe_split(packed, "val") == "FER-2013 PublicTest"
    assert describe_split(packed, "test") == "FER-2013 PrivateTest"
    csv = write_csv_dataset(tmp_path / "fer2013.csv", {"Training": 1, "PublicTest": 1, "PrivateTest": 1})
    assert report_split(csv) == "test" and describe_split(csv, "test") == "FER-2013 PrivateTest"
    assert data_name(kaggle) == "fer2013" and data_name(csv) == "fer2013.csv"


def test_fer_plus_without_its_test_folder_reports_on_valid(tmp_path: Path) -> None:
    ferplus = write_ferplus_folders(tmp_path / "ferplus", {"FER2013Train": 1, "FER2013Valid": 1})
    assert report_split(ferplus) == "val"
    assert describe_split(ferplus, "val") == "FER+ valid (FER-2013 PublicTest, majority protocol)"
    full = write_ferplus_folders(tmp_path / "full", {"FER2013Train": 1, "FER2013Valid": 1, "FER2013Test": 1})
    assert report_split(full) == "test"
    assert describe_split(full, "test") == "FER+ test (FER-2013 PrivateTest, majority protocol)"


def test_data_with_neither_test_nor_val_has_nothing_to_report_on(tmp_path: Path) -> None:
    only_train = write_folder_dataset(tmp_path / "fer", {"train": 1})
    with pytest.raises(DatasetError, match="neither a test nor a val split"):
        report_split(only_train)
