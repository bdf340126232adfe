"""Calibrating a model's int8 form and checking it on the model's own validation slice.

Calibration needs faces the model was trained on, so it runs where the data is, once per model,
and its findings go into the weights file (``fer_core.models.quantize``). The check scores the
float and the int8 forms on the validation slice the model's training held out, the same images
its epochs and ensembles were chosen on, so the loss stated beside int8 is the one the app's
choice (``fer_core.models.inference.choose_form``) relies on.
"""

from __future__ import annotations

import torch
from torch import nn

from fer_core.data.dataset import Split
from fer_core.data.prepare import prepare_as
from fer_core.evaluation.evaluate import evaluate
from fer_core.models.quantize import CALIBRATION_FACES, Int8Calibration, observe


def calibrate_int8(model: nn.Module, data: str, train_settings: dict, classes: tuple[str, ...],
                   expected_val_hash: str | None = None, faces: int = CALIBRATION_FACES) -> Int8Calibration:
    """``calibrate_on`` the faces of ``data`` that ``train_settings`` (a run's saved ``train`` config)
    trained on and held out. ``expected_val_hash``: refuse when the slice is not the one the model held out."""
    prepared = prepare_as(data, train_settings)
    if expected_val_hash is not None and prepared.val.content_hash() != expected_val_hash:
        raise ValueError(f"the validation slice of {data} is not the one this model held out "
                         f"(hash {prepared.val.content_hash()}, expected {expected_val_hash}): is it the same data?")
    return calibrate_on(model, prepared.train, prepared.val, classes, faces)


def calibrate_on(model: nn.Module, train: Split, val: Split, classes: tuple[str, ...],
                 faces: int = CALIBRATION_FACES) -> Int8Calibration:
    """Observe ``faces`` of the training faces (drawn with seed 0; the validation slice is not among
    them), then score fp32 and int8 on the validation slice."""
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:faces]
    qparams = observe(model, train.images[pick])
    draft = Int8Calibration(qparams, 0, 0.0, 0.0)
    fp32 = evaluate(model, val, precision="fp32", classes=classes).accuracy
    int8 = evaluate(model, val, precision="int8", classes=classes, calibration=draft).accuracy
    return Int8Calibration(qparams, len(val), fp32, int8)
