"""The int8 form: calibrated once where the data is, saved in the weights file, picked per CPU at load time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fer_core.evaluation.bench import format_forms, measure_forms
from fer_core.evaluation.int8 import calibrate_int8
from fer_core.models import inference
from fer_core.models.checkpoint import (
    load_checkpoint,
    read_config,
    read_int8_calibration,
    save_checkpoint,
    save_int8_calibration,
)
from fer_core.models.inference import choose_form, for_inference
from fer_core.models.quantize import CALIBRATION_KEY, Int8Calibration, observe, to_int8
from fer_core.models.zoo import ModelConfig
from fer_core.training.loop import TrainConfig, train
from tests.conftest import make_face, write_folder_dataset
from tests.test_inference_model import _trained_looking

SHIPPED_FAST = Path(__file__).resolve().parents[1] / "weights" / "model.safetensors"


def _faces(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([make_face(i % 7, rng) for i in range(n)])).reshape(n, 1, 48, 48)


def _calibration(model: torch.nn.Module, eligible: bool = True) -> Int8Calibration:
    return Int8Calibration(observe(model, _faces(64)), 100, 0.70, 0.70 if eligible else 0.69)


@pytest.mark.parametrize("members", [["fernet_s"], ["fernet_s", "tiny"]])
@torch.inference_mode()
def test_the_int8_form_computes_nearly_what_the_float_network_computes(members: list[str]) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig.ensemble(members) if len(members) > 1 else ModelConfig(members[0])
    model = _trained_looking(cfg.create())
    q = for_inference(model, "int8", _calibration(model))
    x = _faces(32, seed=1).float() / 255
    fp32 = for_inference(model)(x)
    int8 = q(x.contiguous(memory_format=torch.channels_last))
    assert int8.dtype == torch.float32 and int8.shape == fp32.shape
    # an untrained network's answers are near ties, so compare what it computes, not its argmax
    spread = (fp32 - fp32.mean(1, keepdim=True)).abs().max()
    assert (int8 - fp32).abs().max() < 0.1 * spread
    assert torch.corrcoef(torch.stack([int8.flatten(), fp32.flatten()]))[0, 1] > 0.98


@torch.inference_mode()
def test_the_shipped_live_model_in_int8_reads_faces_as_in_fp32() -> None:
    model, _ = load_checkpoint(SHIPPED_FAST)
    calibration = read_int8_calibration(SHIPPED_FAST)
    assert calibration is not None and calibration.eligible, "the live model ships with a kept int8 form"
    x = _faces(64, seed=2).float() / 255
    fp32 = for_inference(model)(x).softmax(1)
    int8 = for_inference(model, "int8", calibration)(x).softmax(1)
    assert (int8.argmax(1) == fp32.argmax(1)).float().mean() >= 0.95
    assert (int8 - fp32).abs().mean() < 0.02


def test_a_calibration_for_another_network_is_refused() -> None:
    s, tiny = _trained_looking(ModelConfig("fernet_s").create()), _trained_looking(ModelConfig("tiny").create())
    with pytest.raises(ValueError, match="calibrat"):
        to_int8(s, observe(tiny, _faces(8)))
    with pytest.raises(ValueError, match="calibrat"):
        to_int8(ModelConfig.ensemble(["tiny", "tiny"]).create(), observe(tiny, _faces(8)))


def test_the_form_is_picked_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _trained_looking(ModelConfig("tiny").create())
    kept, lost = _calibration(model), _calibration(model, eligible=False)
    assert kept.eligible and not lost.eligible and lost.loss_points == pytest.approx(1.0)
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    assert choose_form("auto", kept) == "bf16"  # bf16 hardware runs bf16 whatever the file holds
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    assert choose_form("auto", kept) == "int8"
    assert choose_form("auto", lost) == "fp32"  # int8 cost more than 0.3 points on the validation slice
    assert choose_form("auto", None) == "fp32"
    assert choose_form("fp32", kept) == "fp32" and choose_form("int8", lost) == "int8"  # asked for explicitly
    with pytest.raises(ValueError, match="calibration"):
        choose_form("int8", None)
    with pytest.raises(ValueError, match="unknown precision"):
        choose_form("int4", kept)


def test_the_calibration_is_saved_in_the_file_without_touching_its_tensors(tmp_path: Path) -> None:
    model = _trained_looking(ModelConfig("fernet_s").create())
    cfg = ModelConfig("fernet_s")
    path = save_checkpoint(model, cfg, tmp_path / "m.safetensors", storage="int8")
    before = load_file(str(path))
    assert read_int8_calibration(path) is None
    calibration = _calibration(model)
    save_int8_calibration(path, calibration)
    assert read_int8_calibration(path) == calibration
    after = load_file(str(path))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert read_config(path) == cfg
    save_int8_calibration(path, None)
    assert read_int8_calibration(path) is None
    # save_checkpoint can write it at once, as shipping does
    again = save_checkpoint(model, cfg, tmp_path / "n.safetensors", storage="float16", int8=calibration)
    assert read_int8_calibration(again) == calibration


def test_an_unreadable_calibration_leaves_the_model_in_float(tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import save_file

    from fer_core.recognition.recognizer import Recognizer

    model = _trained_looking(ModelConfig("tiny").create())
    path = save_checkpoint(model, ModelConfig("tiny"), tmp_path / "m.safetensors")
    meta = {"fer_model_config": json.dumps(ModelConfig("tiny").to_dict()), CALIBRATION_KEY: "{not json"}
    save_file(load_file(str(path)), str(path), metadata=meta)
    assert read_int8_calibration(path) is None
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    assert Recognizer(path).precision == "fp32"


def test_the_recognizer_runs_int8_on_a_cpu_without_bf16(tmp_path: Path, monkeypatch) -> None:
    from fer_core.recognition.recognizer import Recognizer

    model = _trained_looking(ModelConfig("fernet_s").create())
    path = save_checkpoint(model, ModelConfig("fernet_s"), tmp_path / "m.safetensors", int8=_calibration(model))
    crops = _faces(5, seed=3).numpy().reshape(5, 48, 48)
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    rec = Recognizer(path)
    assert rec.precision == "int8"
    p = rec.classify(crops)
    assert p.shape == (5, 7) and np.allclose(p.sum(1), 1, atol=1e-5)
    fp32 = Recognizer(path, precision="fp32").classify(crops)
    assert np.abs(p - fp32).max() < 0.05


@pytest.mark.slow
def test_calibrating_a_run_checks_it_on_its_own_validation_slice_and_the_bench_reports_every_form(
        tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "fer", {"train": 40})
    out = train(TrainConfig(data=str(data), arch="tiny", optimizer="adam", lr=0.01, epochs=2, batch_size=32,
                            schedule="none", augment=False, seed=0, out=str(tmp_path / "run"), device="cpu",
                            precision="fp32"), log=lambda _: None, show_bar=False)
    saved = json.loads((out / "config.json").read_text())
    model, cfg = load_checkpoint(out)
    calibration = calibrate_int8(model, str(data), saved["train"], cfg.classes, saved["data"]["val_hash"])
    assert calibration.val_faces == saved["data"]["val"]
    assert 0 <= calibration.val_accuracy_int8 <= 1 and 0 <= calibration.val_accuracy_fp32 <= 1
    with pytest.raises(ValueError, match="not the one this model held out"):
        calibrate_int8(model, str(data), {**saved["train"], "val_seed": 5}, cfg.classes, saved["data"]["val_hash"])

    weights = out / "model.safetensors"
    save_int8_calibration(weights, calibration)
    rows = measure_forms(str(weights), seconds=0.05)
    assert {r["kernels"] for r in rows} == {"native", "avx2"}
    avx2 = {r["form"]: r for r in rows if r["kernels"] == "avx2"}
    assert set(avx2) == {"fp32", "int8"}, "held to AVX2 there is no bf16"
    assert [f for f, r in avx2.items() if r["chosen"]] == ["int8" if calibration.eligible else "fp32"]
    assert all(r["latency_b1_ms"] > 0 and r["throughput_b256_img_s"] > 0 for r in rows)
    assert "int8 on the validation slice" in format_forms(str(weights), rows, calibration)
