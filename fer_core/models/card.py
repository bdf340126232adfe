"""Model cards: the measured facts about a shipped model, beside its weights.

``weights/<name>.safetensors`` has ``weights/<name>.json`` (machine-readable: architecture,
training command and config, data hash, wall time and hardware, test metrics, latency)
and ``weights/MODEL_CARD.md`` for people. Runs have ``config.json`` + ``metrics.json``
instead; ``load_card`` reads either, so pages can show any model the same way.
"""

from __future__ import annotations

import json
import os

from fer_core.models.checkpoint import resolve_weights


def load_card(weights: str | os.PathLike) -> dict | None:
    """The card of a shipped model, or one assembled from a run folder; None when there is none."""
    try:
        p = resolve_weights(weights)
    except ValueError:
        return None
    card = p.with_suffix(".json")
    if card.is_file():
        try:
            return json.loads(card.read_text())
        except (OSError, ValueError):
            return None
    run = p.parent
    try:
        config = json.loads((run / "config.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return {"name": run.name, "arch": config["model"]["arch"], "params": config.get("params"),
            "config": config["train"], "data": config.get("data"), "test": metrics, "source": "run"}
