"""A packed training set trains and validates, on a machine with nothing else, on exactly the local faces."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from fer_core.data.dataset import Split
from fer_core.tools.pack import main, pack_clean_train
from fer_core.training.loop import TrainConfig, prepare_data


def _hashes(data: Path) -> tuple[str, str, int]:
    prepared = prepare_data(TrainConfig(data=str(data), seed=0))
    return prepared.train.content_hash(), prepared.val.content_hash(), len(prepared.train)


def _unpack(archive: Path, where: Path) -> Path:
    with zipfile.ZipFile(archive) as z:
        z.extractall(where)
    return where


def test_folder_pack_leaves_out_test_copies_and_keeps_the_validation_slice(folder_data: Path, tmp_path: Path) -> None:
    leaked = sorted((folder_data / "test").rglob("*.*"))[:2]
    for i, face in enumerate(leaked):
        shutil.copy(face, folder_data / "train" / face.parent.name / f"leak{i}{face.suffix}")
    counts = pack_clean_train(folder_data, tmp_path / "p.zip")
    unpacked = _unpack(tmp_path / "p.zip", tmp_path / "remote")
    assert not (unpacked / "test").exists() and not list(unpacked.rglob("leak*"))
    assert _hashes(unpacked) == _hashes(folder_data)
    assert counts == {"train": 280}  # 7 classes x 40, the two copies dropped
    # the naive way, train/ alone, is what this guards against: the copies stay and the slice moves
    naive = tmp_path / "naive"
    shutil.copytree(folder_data / "train", naive / "train")
    assert _hashes(naive) != _hashes(folder_data)
    assert "fer_core.tools.pack" in prepare_data(TrainConfig(data=str(naive))).cleaning.format()
    assert "fer_core.tools.pack" not in prepare_data(TrainConfig(data=str(folder_data))).cleaning.format()


def test_csv_pack_carries_the_same_faces_and_its_validation_split_as_lossless_pngs(csv_data: Path,
                                                                                  tmp_path: Path) -> None:
    from fer_core.data.cleaning import image_hashes

    assert main(["--data", str(csv_data), "--out", str(tmp_path / "p.zip")]) == 0
    unpacked = _unpack(tmp_path / "p.zip", tmp_path / "remote")
    assert sorted(p.name for p in unpacked.iterdir()) == ["train", "val"]
    here, there = prepare_data(TrainConfig(data=str(csv_data))), prepare_data(TrainConfig(data=str(unpacked)))
    def faces(split: Split) -> list[tuple[bytes, int]]:
        return sorted(zip(image_hashes(split), split.labels.tolist(), strict=True))

    # the same faces and labels, read back in class order
    assert faces(here.train) == faces(there.train) and faces(here.val) == faces(there.val)


def test_bad_data_is_a_message_and_no_file(tmp_path: Path, capsys) -> None:
    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.zip")]) == 2
    assert "error:" in capsys.readouterr().err and not list(tmp_path.iterdir())
