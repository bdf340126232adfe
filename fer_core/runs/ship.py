"""Turn a finished training run into a shipped model: weights in ``weights/`` plus a model
card measured on the spot (test metrics with and without TTA, latency on this machine).
Weights are stored as float16 (half the bytes), or as int8 with per-channel scales where float16
would not fit the 20 MB limit of a file in ``weights/``, and measured after that rounding.

    python -m fer_core.runs.ship RUN_DIR [RUN_DIR ...] --name model --data data/fer2013 --command "python train.py ..."

Several runs ship as one ensemble of their networks: its config says ``"arch": "ensemble"`` and lists
the member architectures (``fer_core.models.zoo.ModelConfig``); any mix of networks makes one.
The card is a ``fer_core.models.card.ModelCard``.

Nothing is copied into ``weights/`` until every measurement succeeded, and each file is
replaced atomically, so a failed ship leaves the previous model in place.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch

from fer_core.common.atomic import write_json, write_text
from fer_core.common.device import cpu_name, resolve_precision
from fer_core.common.formatting import percent
from fer_core.common.labels import EMOTIONS
from fer_core.common.paths import WEIGHTS_DIR
from fer_core.data.dataset import Split, load_split
from fer_core.evaluation.bench import inference_speed
from fer_core.evaluation.evaluate import evaluate
from fer_core.models.card import DataSummary, Latency, MemberTraining, ModelCard, TestMetrics, ValidationScores
from fer_core.models.checkpoint import (
    SHIPPED_FILE_LIMIT,
    load_checkpoint,
    round_to_storage,
    save_checkpoint,
    shipped_storage,
)
from fer_core.models.zoo import ModelConfig, count_macs, count_params
from fer_core.training.history import read_history


def measure_latency(model: torch.nn.Module) -> Latency:
    """Batch-1 latency and batch-256 throughput of the network as the app runs it, in its precision (auto)."""
    precision = resolve_precision("auto", torch.device("cpu"))
    latency_ms, many = inference_speed(model, precision)
    return Latency(precision=precision, latency_b1_ms=round(latency_ms, 3), throughput_b256_img_s=round(many),
                   threads=torch.get_num_threads(), cpu=cpu_name())


STORAGE_WORDS = {"float16": "float16", "int8": "int8 with a float32 scale per output channel (BatchNorm in float32)"}


def card_markdown(card: ModelCard) -> str:
    """One model's section of MODEL_CARD.md; the card must be a shipped one (every measured field present)."""
    t, tt, lat, data = card.test, card.test_tta, card.latency, card.data
    if t is None or tt is None or lat is None or data is None or t.per_class is None or t.confusion_matrix is None:
        raise ValueError(f"the card of {card.name} lacks its test metrics, latency or data: not a shipped card")
    config = card.config or []
    lines = [
        f"## `{card.name}` — {card.architecture}",
        "",
        card.description or "",
        "",
        f"- Parameters: {card.params:,}; forward MACs per face: {(card.macs or 0) / 1e6:.1f} M; weights stored as "
        f"{STORAGE_WORDS[card.stored_as]}",
        f"- Trained with: `{card.train_command}`",
        f"- Training: {card.epochs} epochs, {card.train_minutes or 0:.0f} min on {card.hardware}; "
        "best validation accuracy " + " / ".join(percent(v, 2) for v in card.val_acc or [])
        + " (validation = stratified slice of train/, per trained network)",
        *[f"- Distilled from `{c['teacher']}`: each training target was {1 - c['distill']:g} label + "
          f"{c['distill']:g} that teacher's probabilities (`fer_core/training/distill.py`)"
          for c in config if c.get("teacher")],
        f"- Data: train hash `{data.train_hash}` ({data.train} images after cleaning), "
        + (f"test hash `{data.test_hash}`" if data.test_hash else "trained without test/ beside it (no test hash)"),
        *([f"- Validation slice of train/ (n={v.n}, where choices were made): {percent(v.accuracy, 2)} "
            f"({percent(v.tta_accuracy, 2)} with TTA)"] if (v := card.val) else []),
        f"- **Test (FER-2013 PublicTest, n={t.n})**: accuracy **{percent(t.accuracy, 2)}**, macro-F1 "
        f"**{t.macro_f1:.4f}** (no TTA); with TTA (14 views) {percent(tt.accuracy, 2)} / {tt.macro_f1:.4f}",
        f"- Evaluate: `{card.eval_command}`",
        f"- Latency ({lat.precision}, {lat.cpu}): "
        f"{lat.latency_b1_ms:.2f} ms per face at batch 1, "
        f"{lat.throughput_b256_img_s:,} faces/s at batch 256",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in EMOTIONS:
        pc = t.per_class[c]
        lines.append(f"| {c} | {pc.precision:.3f} | {pc.recall:.3f} | {pc.f1:.3f} | {pc.support} |")
    lines += ["", "Confusion matrix (rows: true, columns: predicted):", "",
              "| | " + " | ".join(EMOTIONS) + " |", "|---|" + "---:|" * len(EMOTIONS)]
    for c, row in zip(EMOTIONS, t.confusion_matrix, strict=True):
        lines.append(f"| **{c}** | " + " | ".join(str(v) for v in row) + " |")
    worst = min(EMOTIONS, key=lambda c: t.per_class[c].recall)
    lines += ["", f"Known weaknesses: lowest recall on **{worst}** "
              f"({percent(t.per_class[worst].recall, 0)}); FER-2013 labels are noisy (human accuracy is "
              "about 65±5%), faces are 48x48 grey crops of mostly frontal, adult faces, so expect lower "
              "accuracy on profile views, children, strong lighting and occlusions.", ""]
    return "\n".join(lines)


def build_model(runs: list[Path]) -> tuple[torch.nn.Module, ModelConfig]:
    """One run's best checkpoint, or several runs as an ensemble of their networks.

    An ensemble's slots are filled by architecture name, runs of one architecture in the order
    given, so the same runs make the same file (and the same weights hash, which the evaluation
    cache keys on) whatever order they are named in; ``fer_core.tools.unship`` reads them back by
    architecture the same way.
    """
    members = [load_checkpoint(r) for r in runs]
    if len(members) == 1:
        return members[0]
    first = members[0][1]
    odd = [str(r) for r, (_, c) in zip(runs, members, strict=True)
           if (c.classes, c.input_size) != (first.classes, first.input_size)]
    if odd:
        raise ValueError(f"{', '.join(odd)} classify other classes or input sizes than {runs[0]}; "
                         "an ensemble averages probabilities over the same classes")
    order = sorted(range(len(members)), key=lambda i: members[i][1].arch)
    cfg = ModelConfig.ensemble([members[i][1].arch for i in order], first.num_classes, first.classes,
                               first.input_size)
    model = cfg.create()
    for slot, i in zip(model.members, order, strict=True):
        slot.load_state_dict(members[i][0].state_dict())
    return model.eval(), cfg


def run_summary(run: Path) -> dict:
    """Epochs, training minutes and best validation accuracy of one run, from its ``history.csv``,
    plus those of the run it started from (``--init``), so a card counts all the training behind
    a network. A member rebuilt from an earlier shipped file has no history left, only what that
    file's card recorded, kept beside it as ``summary.json``."""
    rows = read_history(run)
    if rows:
        summary = {"epochs": len(rows), "minutes": sum(r["seconds"] for r in rows) / 60,
                   "best_val_acc": max(r["val_acc"] for r in rows)}
    elif (run / "summary.json").is_file():
        summary = json.loads((run / "summary.json").read_text())
    else:
        raise ValueError(f"{run}: no history.csv (nor summary.json) says how it was trained")
    init = (json.loads((run / "config.json").read_text()).get("init") or {}).get("weights")
    if init:
        before = run_summary(Path(init).parent)
        summary = {**summary, "epochs": summary["epochs"] + before["epochs"],
                   "minutes": summary["minutes"] + before["minutes"]}
    return summary


def shared_validation_slice(configs: list[dict], data: str) -> Split | None:
    """The validation slice every run (by its saved config) held out of ``data``; None when they
    held out different slices, or ``data`` is not what they saw: then there is no honest figure."""
    from fer_core.data.prepare import validation_slice

    if len({c["data"]["val_hash"] for c in configs}) != 1:
        return None
    val = validation_slice(data, configs[0]["train"])
    return val if val.content_hash() == configs[0]["data"]["val_hash"] else None


def validation_scores(model: torch.nn.Module, configs: list[dict], data: str) -> dict | None:
    """Accuracy on the validation slice every member held out, where an ensemble or TTA is chosen."""
    val = shared_validation_slice(configs, data)
    if val is None:
        return None
    plain, tta = evaluate(model, val), evaluate(model, val, tta=True)
    return {"n": plain.n, "accuracy": plain.accuracy, "macro_f1": plain.metrics()["macro_f1"],
            "tta_accuracy": tta.accuracy, "tta_macro_f1": tta.metrics()["macro_f1"]}


def ship(runs: list[Path], name: str, data: str, command: str, hardware: str) -> dict:
    """Measure, then write ``weights/<name>.safetensors``, its config and its card; returns the card as
    written (``ModelCard.to_dict()``)."""
    model, cfg = build_model(runs)
    storage = shipped_storage(model)
    if storage is None:
        raise ValueError(f"{cfg.label} does not fit a {SHIPPED_FILE_LIMIT / 1e6:.0f} MB file even in int8")
    round_to_storage(model, storage)  # measure exactly what the file below will hold
    configs = [json.loads((r / "config.json").read_text()) for r in runs]
    summaries = [run_summary(r) for r in runs]
    test = load_split(data, "test")
    t0 = time.perf_counter()
    plain, tta = evaluate(model, test), evaluate(model, test, tta=True)
    val = validation_scores(model, configs, data)
    card = ModelCard(
        name=name, arch=cfg.arch, description=cfg.description(),
        params=count_params(model), macs=count_macs(model), storage=storage,
        date=date.today().isoformat(),
        train_command=command, config=[c["train"] for c in configs], data=DataSummary.from_dict(configs[0]["data"]),
        epochs=sum(s["epochs"] for s in summaries),
        train_minutes=sum(s["minutes"] for s in summaries),
        hardware=hardware, val_acc=[s["best_val_acc"] for s in summaries],
        # per network, in run order: what fer_core.tools.unship gives back to a rebuilt folder
        members=[MemberTraining.from_dict(s) for s in summaries],
        # data/fer2013 is where the README keeps the data; the card's hashes say which data it must be
        eval_command=f"fer-evaluate --data data/fer2013 --split test --weights weights/{name}.safetensors",
        val=ValidationScores.from_dict(val) if val is not None else None,
        test=TestMetrics.from_dict({"split": "test", **plain.metrics()}),
        test_tta=TestMetrics.from_dict({"split": "test", **tta.metrics()}),
        latency=measure_latency(model),
        eval_seconds=round(time.perf_counter() - t0, 1),
    )
    save_checkpoint(model, cfg, WEIGHTS_DIR / f"{name}.safetensors", storage=storage)
    written = card.to_dict()
    write_json(WEIGHTS_DIR / f"{name}.json", written)
    return written


def write_model_card_md() -> Path:
    """MODEL_CARD.md covers every shipped model, from their JSON cards."""
    cards = [ModelCard.from_dict(json.loads(p.read_text())) for p in sorted(WEIGHTS_DIR.glob("*.json"))
             if not p.name.endswith("_config.json")]
    cards.sort(key=lambda c: c.name != "model")
    body = "\n".join(card_markdown(c) for c in cards)
    text = ("# Model card\n\nShipped models of fer, measured by `python -m fer_core.runs.ship` (see README). "
            "Every figure below is re-measurable with the commands given.\n\n" + body)
    return write_text(WEIGHTS_DIR / "MODEL_CARD.md", text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fer_core.runs.ship", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="one run folder, or several: an ensemble of their networks")
    ap.add_argument("--name", default="model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--command", required=True, help="the exact training command, for the card")
    ap.add_argument("--hardware", default=cpu_name())
    args = ap.parse_args(argv)
    card = ship(args.runs, args.name, args.data, args.command, args.hardware)
    write_model_card_md()
    print(json.dumps({k: card[k] for k in ("name", "arch", "params", "latency")}, indent=2))
    print(f"test accuracy {card['test']['accuracy']:.4f} (tta {card['test_tta']['accuracy']:.4f}), "
          f"macro-F1 {card['test']['macro_f1']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
