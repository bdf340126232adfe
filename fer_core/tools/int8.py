"""Give shipped models their int8 form: calibrate on training faces, check on the validation slice,
save the calibration into the weights file, measure every form, and record it all on the card.

    python -m fer_core.tools.int8 weights/model.safetensors --data data/fer2013
    python -m fer_core.tools.int8 weights/ferplus_fast.safetensors --data data/ferplus

The data must be what the model trained on (its validation slice's hash is checked against the card).
Shipping (``fer_core.runs.ship``) does the same for every new model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fer_core.common.atomic import write_json
from fer_core.data.dataset import DatasetError
from fer_core.evaluation.bench import format_forms, measure_forms
from fer_core.evaluation.int8 import calibrate_int8
from fer_core.models.card import InferenceForm, Int8Check, ModelCard, read_card
from fer_core.models.checkpoint import CheckpointError, load_checkpoint, save_int8_calibration


def give_int8(weights: Path, data: str) -> ModelCard:
    """Calibrate, check, save and measure one shipped model; returns its updated card (also written)."""
    card_path = weights.with_suffix(".json")
    card = read_card(card_path)
    if card is None or not card.config or card.data is None:
        raise ValueError(f"{card_path}: no model card with the training settings; int8 is given to shipped models")
    model, cfg = load_checkpoint(weights)
    calibration = calibrate_int8(model, data, card.config[0], tuple(cfg.classes), card.data.val_hash)
    save_int8_calibration(weights, calibration)
    rows = measure_forms(str(weights))
    card.int8 = Int8Check.from_calibration(calibration)
    card.forms = [InferenceForm.from_dict(r) for r in rows]
    write_json(card_path, card.to_dict())
    print(format_forms(str(weights), rows, calibration), end="\n\n")
    return card


def main(argv: list[str] | None = None) -> int:
    from fer_core.runs.ship import write_model_card_md

    ap = argparse.ArgumentParser(prog="python -m fer_core.tools.int8", description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", type=Path, nargs="+", help="shipped weights files (each with its card beside it)")
    ap.add_argument("--data", required=True, help="the data the models trained on (FER-2013 or FER+)")
    args = ap.parse_args(argv)
    try:
        for w in args.weights:
            give_int8(w, args.data)
    except (DatasetError, CheckpointError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_model_card_md()
    return 0


if __name__ == "__main__":
    sys.exit(main())
