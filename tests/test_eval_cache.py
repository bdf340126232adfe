"""The evaluation cache: same numbers as evaluate(), hit the second time, never stale."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fer_core.common.paths import cache_dir
from fer_core.data.dataset import load_split
from fer_core.evaluation.cache import cache_path, cached_evaluate, weights_hash
from fer_core.evaluation.evaluate import evaluate
from fer_core.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fer_core.models.zoo import ModelConfig, create_model
from tests.conftest import write_folder_dataset


def tiny(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(create_model("tiny"), ModelConfig(arch="tiny"), path)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_folder_dataset(tmp_path / "fer", {"test": 4})


def test_first_computes_then_hits_with_identical_numbers(tmp_path: Path, data: Path) -> None:
    weights = tiny(tmp_path / "m.safetensors", 0)
    split = load_split(data, "test")
    calls: list[tuple[int, int]] = []
    first, hit1 = cached_evaluate(weights, split, progress=lambda d, t: calls.append((d, t)))
    second, hit2 = cached_evaluate(weights, split)
    assert (hit1, hit2) == (False, True)
    assert calls and calls[-1] == (len(split), len(split))
    model, _ = load_checkpoint(weights)
    ref = evaluate(model, split)
    np.testing.assert_array_equal(second.probs, ref.probs)
    np.testing.assert_array_equal(second.labels, ref.labels)
    assert second.metrics() == ref.metrics() == first.metrics()


def test_new_weights_invalidate(tmp_path: Path, data: Path) -> None:
    weights = tiny(tmp_path / "m.safetensors", 0)
    split = load_split(data, "test")
    before, _ = cached_evaluate(weights, split)
    h0 = weights_hash(weights)
    tiny(weights, 1)  # retrained in place: same path, different bytes
    assert weights_hash(weights) != h0
    after, hit = cached_evaluate(weights, split)
    assert not hit
    assert not np.allclose(before.probs, after.probs)
    assert len(list((cache_dir() / "evals").glob("*.npz"))) == 2


def test_changed_data_invalidates(tmp_path: Path, data: Path) -> None:
    weights = tiny(tmp_path / "m.safetensors", 0)
    cached_evaluate(weights, load_split(data, "test"))
    img = next((data / "test" / "fear").iterdir())
    cv2.imwrite(str(img), np.full((48, 48), 7, np.uint8))
    changed = load_split(data, "test")
    result, hit = cached_evaluate(weights, changed)
    assert not hit
    model, _ = load_checkpoint(weights)
    np.testing.assert_array_equal(result.probs, evaluate(model, changed).probs)


def test_tta_and_split_are_separate_entries(tmp_path: Path, data: Path) -> None:
    weights = tiny(tmp_path / "m.safetensors", 0)
    split = load_split(data, "test")
    cached_evaluate(weights, split)
    flipped, hit = cached_evaluate(weights, split, tta=True)
    assert not hit and flipped.tta
    assert cached_evaluate(weights, split, tta=True)[1]
    sha, dh = weights_hash(weights), split.content_hash()
    assert len({cache_path(sha, dh, "test", False), cache_path(sha, dh, "test", True),
                cache_path(sha, dh, "train", False)}) == 3


def test_corrupt_entry_is_recomputed(tmp_path: Path, data: Path) -> None:
    weights = tiny(tmp_path / "m.safetensors", 0)
    split = load_split(data, "test")
    cached_evaluate(weights, split)
    entry = cache_path(weights_hash(weights), split.content_hash(), "test", False)
    entry.write_bytes(b"garbage")
    result, hit = cached_evaluate(weights, split)
    assert not hit and result.n == len(split)
    assert cached_evaluate(weights, split)[1]


def test_unusable_weights_raise_checkpoint_error(tmp_path: Path, data: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    with pytest.raises(CheckpointError):
        cached_evaluate(bad, load_split(data, "test"))
    with pytest.raises(CheckpointError):
        cached_evaluate(tmp_path / "missing.safetensors", load_split(data, "test"))


def test_an_eight_class_model_is_cached_in_each_datas_classes(tmp_path: Path, data: Path) -> None:
    from fer_core.common.labels import EMOTIONS, FERPLUS_EMOTIONS
    from fer_core.evaluation.cache import load_cached
    from tests.conftest import write_ferplus_folders

    torch.manual_seed(0)
    weights = save_checkpoint(create_model("tiny", 8),
                              ModelConfig(arch="tiny", num_classes=8, classes=list(FERPLUS_EMOTIONS)),
                              tmp_path / "m8.safetensors")
    model, cfg = load_checkpoint(weights)
    ferplus = load_split(write_ferplus_folders(tmp_path / "ferplus", {"FER2013Valid": 3}), "val")
    fer2013 = load_split(data, "test")
    for split, classes in ((ferplus, FERPLUS_EMOTIONS), (fer2013, EMOTIONS)):
        first, hit1 = cached_evaluate(weights, split)
        second, hit2 = cached_evaluate(weights, split)
        assert (hit1, hit2) == (False, True)
        ref = evaluate(model, split, classes=cfg.classes)
        assert second.classes == first.classes == classes and second.probs.shape == (len(split), len(classes))
        np.testing.assert_array_equal(second.probs, ref.probs)
        assert second.metrics() == ref.metrics()
    assert "agreement" in cached_evaluate(weights, ferplus)[0].metrics()  # the votes come back with a hit
    entry = cache_path(weights_hash(weights), ferplus.content_hash(), "val", False, ferplus.classes)
    assert entry.is_file() and load_cached(entry, len(ferplus), EMOTIONS) is None  # other classes: not served
    assert not entry.exists()
