"""Turn a finished training run into a shipped model: weights in ``weights/`` plus a model
card measured on the spot (test metrics with and without TTA, latency on this machine).
Weights are stored as float16 (half the bytes), or as int8 with per-channel scales where float16
would not fit the 20 MB limit of a file in ``weights/``, and measured after that rounding.

    python -m fer_core.runs.ship RUN_DIR [RUN_DIR ...] --name model --data data/fer2013 --command "python train.py ..."
    python -m fer_core.runs.ship RUN_DIR --name ferplus --data data/ferplus --command "..." \
        --also data/fer2013:test --also /path/ckplus48:test

The card is measured on the data's report split (``fer_core.data.splits``): test/ where the data has
one, else val (FER+ valid, where FER+ models are reported), and names it in words. Each ``--also``
scores the model on other data too, by the cross-label rule (``fer_core.common.labels.to_label_space``:
a class the model lacks is never predicted, a class the data lacks is left out of the model's choice),
recorded in the card's ``also`` and shown under "Also measured on".

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
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch

from fer_core.common.atomic import write_json, write_text
from fer_core.common.device import cpu_name, resolve_precision
from fer_core.common.formatting import percent
from fer_core.common.paths import WEIGHTS_DIR, shown_path
from fer_core.data.dataset import SPLITS, DatasetError, Split, load_split
from fer_core.data.prepare import PreparedData, prepare_as
from fer_core.data.splits import data_name, describe_split, report_split
from fer_core.evaluation.bench import KERNELS, inference_speed, measure_forms
from fer_core.evaluation.evaluate import Evaluation, evaluate
from fer_core.evaluation.int8 import calibrate_on
from fer_core.models.card import (
    DataSummary,
    InferenceForm,
    Int8Check,
    Latency,
    MemberTraining,
    ModelCard,
    TestMetrics,
    ValidationScores,
)
from fer_core.models.checkpoint import (
    SHIPPED_FILE_LIMIT,
    load_checkpoint,
    round_to_storage,
    save_checkpoint,
    shipped_storage,
)
from fer_core.models.quantize import MAX_LOSS_POINTS
from fer_core.models.zoo import ModelConfig, count_macs, count_params
from fer_core.training.history import read_history


def measure_latency(model: torch.nn.Module) -> Latency:
    """Batch-1 latency and batch-256 throughput of the network as the app runs it, in its precision (auto)."""
    precision = resolve_precision("auto", torch.device("cpu"))
    latency_ms, many = inference_speed(model, precision)
    return Latency(precision=precision, latency_b1_ms=round(latency_ms, 3), throughput_b256_img_s=round(many),
                   threads=torch.get_num_threads(), cpu=cpu_name())


STORAGE_WORDS = {"float16": "float16", "int8": "int8 with a float32 scale per output channel (BatchNorm in float32)"}


def _fer_plus_line(t: TestMetrics) -> list[str]:
    """FER+'s measures beyond the majority accuracy, where the data had votes."""
    if t.agreement is None or t.vote_cross_entropy is None:
        return []
    return [f"- FER+ measures (majority protocol): annotator agreement **{t.agreement:.3f}** (the mean share of a "
            f"face's ten annotators who chose the predicted label), cross-entropy vs votes "
            f"**{t.vote_cross_entropy:.3f} nats** (of the probabilities against the vote distribution)"]


def _also_table(card: ModelCard) -> list[str]:
    """The card's extra evaluations as a small table."""
    if not card.also:
        return []
    lines = ["", "Also measured on (no TTA; a class the model lacks counts as never predicted, a class the data "
             "lacks is left out of the model's choice):", "",
             "| data | split | n | accuracy | macro-F1 | recall per class |", "|---|---|---:|---:|---:|---|"]
    for a in card.also:
        pc = a.per_class or {}
        recall = " · ".join(f"{c} {pc[c].recall:.2f}" for c in a.label_space() if c in pc and pc[c].support)
        lines.append(f"| {a.data or '?'} | {a.split or '?'} | {a.n if a.n is not None else '?'} | "
                     f"{percent(a.accuracy, 2)} | "
                     f"{f'{a.macro_f1:.4f}' if a.macro_f1 is not None else '—'} | {recall or '—'} |")
    return lines


def _forms_lines(card: ModelCard) -> list[str]:
    """How the model runs per CPU: each form's speed, the int8 check, and the form the app picks."""
    if not card.forms:
        return []
    lines = ["", "Inference forms (`fer-bench --forms`; the app picks one per CPU when it loads the model):", "",
             "| kernels | form | ms per face (batch 1, 1 thread) | faces/s (batch 256) | picked |",
             "|---|---|---:|---:|---|"]
    lines += [f"| {KERNELS.get(f.kernels, f.kernels)} | {f.form} | {f.latency_b1_ms:.2f} | "
              f"{f.throughput_b256_img_s:,.0f} | {'**yes**' if f.chosen else ''} |" for f in card.forms]
    if (c := card.int8) is not None:
        change = 100 * (c.val_accuracy_int8 - c.val_accuracy_fp32)
        verdict = (f"within the {MAX_LOSS_POINTS} points allowed, so CPUs without bf16 run it" if c.eligible else
                   f"more than the {MAX_LOSS_POINTS} points allowed, so CPUs without bf16 run fp32")
        lines += ["", f"int8 on the validation slice (n={c.val_faces}): {percent(c.val_accuracy_int8, 2)} against "
                  f"{percent(c.val_accuracy_fp32, 2)} in fp32 ({change:+.2f} points); {verdict}"]
    return lines


def card_markdown(card: ModelCard) -> str:
    """One model's section of MODEL_CARD.md; the card must be a shipped one (every measured field present)."""
    t, tt, lat, data = card.test, card.test_tta, card.latency, card.data
    if t is None or tt is None or lat is None or data is None or t.per_class is None or t.confusion_matrix is None:
        raise ValueError(f"the card of {card.name} lacks its test metrics, latency or data: not a shipped card")
    classes = [c for c in card.test_classes if c in t.per_class]  # a card written by hand may leave one out
    if len(t.confusion_matrix) != len(card.test_classes):
        raise ValueError(f"the card of {card.name} has a {len(t.confusion_matrix)}-row confusion matrix for "
                         f"{len(card.test_classes)} classes")
    config = card.config or []
    ferplus = t.agreement is not None
    lines = [
        f"## `{card.name}` — {card.architecture}",
        "",
        card.description or "",
        "",
        f"- Parameters: {card.params:,}; forward MACs per face: {(card.macs or 0) / 1e6:.1f} M; weights stored as "
        f"{STORAGE_WORDS[card.stored_as]}",
        *([f"- Classes ({len(card.model_classes)}): {', '.join(card.model_classes)}"] if card.classes else []),
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
        f"- **Test ({card.test_words}, n={t.n})**: {'FER+ majority accuracy' if ferplus else 'accuracy'} "
        f"**{percent(t.accuracy, 2)}**, macro-F1 "
        f"**{t.macro_f1:.4f}** (no TTA); with TTA (14 views) {percent(tt.accuracy, 2)} / {tt.macro_f1:.4f}",
        *_fer_plus_line(t),
        f"- Evaluate: `{card.eval_command}`",
        f"- Latency ({lat.precision}, {lat.cpu}): "
        f"{lat.latency_b1_ms:.2f} ms per face at batch 1, "
        f"{lat.throughput_b256_img_s:,} faces/s at batch 256",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in classes:
        pc = t.per_class[c]
        lines.append(f"| {c} | {pc.precision:.3f} | {pc.recall:.3f} | {pc.f1:.3f} | {pc.support} |")
    lines += ["", "Confusion matrix (rows: true" + (" majority label" if ferplus else "") + ", columns: predicted):",
              "", "| | " + " | ".join(card.test_classes) + " |", "|---|" + "---:|" * len(card.test_classes)]
    for c, row in zip(card.test_classes, t.confusion_matrix, strict=True):
        lines.append(f"| **{c}** | " + " | ".join(str(v) for v in row) + " |")
    lines += _also_table(card)
    lines += _forms_lines(card)
    present = [c for c in classes if t.per_class[c].support] or classes
    worst = min(present, key=lambda c: t.per_class[c].recall)
    missing = [c for c in card.test_classes if c not in card.model_classes]
    labels = ("FER+ labels are the majority of ten annotators per face (faces without a clear majority are left "
              "out), yet many faces stay ambiguous" if ferplus else
              "FER-2013 labels are noisy (human accuracy is about 65±5%)")
    lines += ["", f"Known weaknesses: lowest recall on **{worst}** ({percent(t.per_class[worst].recall, 0)})"
              + (f"; the model does not answer {', '.join(missing)}, so it misses every such face" if missing else "")
              + f"; {labels}, faces are 48x48 grey crops of mostly frontal, adult faces, so expect lower "
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
        before = _started_from(Path(init))
        summary = {**summary, "epochs": summary["epochs"] + before["epochs"],
                   "minutes": summary["minutes"] + before["minutes"]}
    return summary


def _started_from(weights: Path) -> dict:
    """The training behind ``--init`` weights: their run's, or, for a shipped single network (a FER-2013
    model fine-tuned on FER+), what its model card records."""
    card = weights.with_suffix(".json")
    if weights.parent.resolve() == WEIGHTS_DIR.resolve() and card.is_file():
        recorded = json.loads(card.read_text())
        return {"epochs": recorded["epochs"], "minutes": recorded["train_minutes"]}
    return run_summary(weights.parent)


def shared_preparation(configs: list[dict], data: str) -> PreparedData | None:
    """``data`` as every run (by its saved config) had it, training faces and validation slice; None
    when they held out different slices, or ``data`` is not what they saw: then there is no honest figure."""
    if len({c["data"]["val_hash"] for c in configs}) != 1:
        return None
    prepared = prepare_as(data, configs[0]["train"])
    return prepared if prepared.val.content_hash() == configs[0]["data"]["val_hash"] else None


def shared_validation_slice(configs: list[dict], data: str) -> Split | None:
    """The validation slice every run held out of ``data`` (``shared_preparation``), or None."""
    prepared = shared_preparation(configs, data)
    return None if prepared is None else prepared.val


def validation_scores(model: torch.nn.Module, val: Split | None,
                      classes: Sequence[str] | None = None) -> dict | None:
    """Accuracy on the validation slice every member held out (``shared_validation_slice``), where an
    ensemble or TTA is chosen; None without one."""
    if val is None:
        return None
    plain, tta = evaluate(model, val, classes=classes), evaluate(model, val, tta=True, classes=classes)
    return {"n": plain.n, "accuracy": plain.accuracy, "macro_f1": plain.metrics()["macro_f1"],
            "tta_accuracy": tta.accuracy, "tta_macro_f1": tta.metrics()["macro_f1"]}


@dataclass(frozen=True)
class Also:
    """One ``--also``: other data to measure the model on, by name, path and split."""

    name: str
    path: str
    split: str | None  # None: the data's report split


def parse_also(spec: str) -> Also:
    """``[NAME=]PATH[:SPLIT]``: ``data/fer2013:test``, ``ck=/data/ckplus48:test``, ``data/ferplus``
    (its report split). NAME defaults to the folder's (or file's) name."""
    name, eq, rest = spec.partition("=")
    if not eq or not name or "/" in name:
        name, rest = "", spec
    path, colon, split = rest.rpartition(":")
    if not colon or split not in SPLITS:
        path, split = rest, None
    if not path:
        raise ValueError(f"--also {spec!r}: expected [NAME=]PATH[:SPLIT] with SPLIT one of {', '.join(SPLITS)}")
    return Also(name or data_name(path), path, split)


def eval_data_arg(data: str) -> str:
    """The ``--data`` of a card's commands: the path as the project names it where the data is inside it, else
    ``data/<its name>``, where the README keeps data (the card's hashes say which data it must be)."""
    shown = shown_path(Path(data).expanduser().resolve())
    return shown if not Path(shown).is_absolute() else f"data/{data_name(data)}"


def also_metrics(ev: Evaluation, name: str, split: str) -> TestMetrics:
    """An extra evaluation as a card records it: the data, the split and the headline figures per class."""
    m = ev.metrics()
    keep = ("n", "accuracy", "macro_f1", "per_class", "classes", "agreement", "vote_cross_entropy")
    return TestMetrics.from_dict({"data": name, "split": split, **{k: m[k] for k in keep if k in m}})


def ship(runs: list[Path], name: str, data: str, command: str, hardware: str,
         also: Sequence[str | Also] = ()) -> dict:
    """Measure, then write ``weights/<name>.safetensors``, its config and its card; returns the card as
    written (``ModelCard.to_dict()``). ``also``: other data to measure the model on (``parse_also``)."""
    extras = [a if isinstance(a, Also) else parse_also(a) for a in also]
    model, cfg = build_model(runs)
    storage = shipped_storage(model)
    if storage is None:
        raise ValueError(f"{cfg.label} does not fit a {SHIPPED_FILE_LIMIT / 1e6:.0f} MB file even in int8")
    round_to_storage(model, storage)  # measure exactly what the file below will hold
    configs = [json.loads((r / "config.json").read_text()) for r in runs]
    summaries = [run_summary(r) for r in runs]
    split_name = report_split(data)
    test = load_split(data, split_name)
    others = [(a, load_split(a.path, a.split or report_split(a.path))) for a in extras]  # fail before measuring
    t0 = time.perf_counter()
    plain = evaluate(model, test, classes=cfg.classes)
    tta = evaluate(model, test, tta=True, classes=cfg.classes)
    prepared = shared_preparation(configs, data)
    val = validation_scores(model, None if prepared is None else prepared.val, cfg.classes)
    eval_seconds = round(time.perf_counter() - t0, 1)
    also_measured = [also_metrics(evaluate(model, s, classes=cfg.classes), a.name, s.name) for a, s in others]
    int8 = (calibrate_on(model, prepared.train, prepared.val, cfg.classes)
            if prepared is not None else None)  # no honest check without the slice every network held out
    with tempfile.TemporaryDirectory() as tmp:  # the forms are measured in fresh processes, on the file
        draft = save_checkpoint(model, cfg, Path(tmp) / f"{name}.safetensors", storage=storage, int8=int8)
        forms = [InferenceForm.from_dict(r) for r in measure_forms(str(draft))]
    card = ModelCard(
        name=name, arch=cfg.arch, description=cfg.description(),
        params=count_params(model), macs=count_macs(model), storage=storage, classes=list(cfg.classes),
        date=date.today().isoformat(),
        train_command=command, config=[c["train"] for c in configs], data=DataSummary.from_dict(configs[0]["data"]),
        epochs=sum(s["epochs"] for s in summaries),
        train_minutes=sum(s["minutes"] for s in summaries),
        hardware=hardware, val_acc=[s["best_val_acc"] for s in summaries],
        # per network, in run order: what fer_core.tools.unship gives back to a rebuilt folder
        members=[MemberTraining.from_dict(s) for s in summaries],
        eval_command=f"fer-evaluate --data {eval_data_arg(data)} --split {split_name} "
                     f"--weights weights/{name}.safetensors",
        val=ValidationScores.from_dict(val) if val is not None else None,
        test_set=describe_split(data, split_name),
        test=TestMetrics.from_dict({"split": split_name, **plain.metrics()}),
        test_tta=TestMetrics.from_dict({"split": split_name, **tta.metrics()}),
        also=also_measured or None,
        latency=measure_latency(model),
        forms=forms,
        int8=None if int8 is None else Int8Check.from_calibration(int8),
        eval_seconds=eval_seconds,
    )
    save_checkpoint(model, cfg, WEIGHTS_DIR / f"{name}.safetensors", storage=storage, int8=int8)
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
    ap.add_argument("--also", action="append", default=[], metavar="[NAME=]PATH[:SPLIT]",
                    help="also measure the model on this data (repeatable), e.g. data/fer2013:test or "
                         "/path/ckplus48:test; SPLIT defaults to the data's test split, else its val split")
    args = ap.parse_args(argv)
    try:
        also = [parse_also(a) for a in args.also]
    except ValueError as exc:
        ap.error(str(exc))
    try:
        card = ship(args.runs, args.name, args.data, args.command, args.hardware, also)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_model_card_md()
    print(json.dumps({k: card[k] for k in ("name", "arch", "params", "latency")}, indent=2))
    test = card["test"]
    print(f"{card['test_set']} accuracy {test['accuracy']:.4f} (tta {card['test_tta']['accuracy']:.4f}), "
          f"macro-F1 {test['macro_f1']:.4f}"
          + (f", annotator agreement {test['agreement']:.3f}, cross-entropy vs votes "
             f"{test['vote_cross_entropy']:.3f} nats" if "agreement" in test else ""))
    for a in card.get("also", []):
        print(f"also {a['data']} {a['split']} (n={a['n']}): accuracy {a['accuracy']:.4f}, macro-F1 {a['macro_f1']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
