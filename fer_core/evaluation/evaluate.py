"""Scoring a model on a split: accuracy, the per-class report of the paper's Table 1, and
the confusion matrix of its Fig. 3. The same function backs the CLI, training runs and
the app's metrics page, so every number the project shows comes from one place.

    fer-evaluate --data data/fer2013 --split test [--weights PATH] [--tta]
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix, f1_score
from torch import nn

from fer_core.common.formatting import percent
from fer_core.common.labels import EMOTIONS, FERPLUS_EMOTIONS, to_label_space
from fer_core.data.dataset import Split
from fer_core.data.votes import annotator_agreement, vote_cross_entropy
from fer_core.models.quantize import Int8Calibration


@dataclass
class Evaluation:
    probs: np.ndarray  # (N, len(classes)) the model's probabilities in the data's classes (to_label_space)
    labels: np.ndarray  # (N,)
    tta: bool
    classes: tuple[str, ...] = EMOTIONS  # the data's label space
    votes: np.ndarray | None = None  # (N, 10) FER+ vote counts, when the data has them

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.labels).mean()) if self.n else 0.0

    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.labels, self.preds, labels=list(range(len(self.classes))))

    def report_dict(self) -> dict:
        return classification_report(self.labels, self.preds, labels=list(range(len(self.classes))),
                                     target_names=list(self.classes), output_dict=True, zero_division=0)

    def metrics(self) -> dict:
        rep = self.report_dict()
        return {
            "accuracy": self.accuracy,
            "macro_f1": float(f1_score(self.labels, self.preds, average="macro",
                                       labels=list(range(len(self.classes))), zero_division=0)),
            "weighted_f1": float(rep["weighted avg"]["f1-score"]),
            "per_class": {c: {"precision": rep[c]["precision"], "recall": rep[c]["recall"],
                              "f1": rep[c]["f1-score"], "support": int(rep[c]["support"])} for c in self.classes},
            "confusion_matrix": self.confusion().tolist(),
            "n": self.n,
            "tta": self.tta,
            "classes": list(self.classes),
            **self.vote_metrics(),
        }

    def vote_metrics(self) -> dict:
        """FER+'s measures beyond the majority label: the mean share of a face's annotators who chose the
        label we show, and the cross-entropy (nats) of our probabilities against their vote distribution."""
        if self.votes is None or not self.n:
            return {}
        probs, votes = torch.from_numpy(self.probs).float(), torch.from_numpy(self.votes)
        return {"agreement": float(annotator_agreement(probs, votes).mean()),
                "vote_cross_entropy": float(vote_cross_entropy(probs, votes).mean())}

    def format(self) -> str:
        report = classification_report(self.labels, self.preds, labels=list(range(len(self.classes))),
                                       target_names=list(self.classes), digits=4, zero_division=0)
        cm = self.confusion()
        width = max(len(c) for c in self.classes) + 2
        rows = ["confusion matrix (rows: true, columns: predicted)",
                " " * width + "".join(f"{c[:7]:>9}" for c in self.classes)]
        rows += [f"{c:<{width}}" + "".join(f"{v:>9}" for v in cm[i]) for i, c in enumerate(self.classes)]
        m = self.metrics()
        head = (f"accuracy {percent(m['accuracy'], 2)}  macro-F1 {m['macro_f1']:.4f}  "
                f"weighted-F1 {m['weighted_f1']:.4f}  n={self.n}  tta={'on' if self.tta else 'off'}")
        if "agreement" in m:
            head += (f"\nFER+ (majority protocol): accuracy {percent(m['accuracy'], 2)}  annotator agreement "
                     f"{m['agreement']:.3f}  cross-entropy vs votes {m['vote_cross_entropy']:.3f} nats")
        return "\n".join([head, "", report, *rows])


@torch.inference_mode()
def predict_probs(model: nn.Module, images: torch.Tensor, tta: bool = False, batch_size: int = 512,
                  precision: str = "auto", progress: callable | None = None,
                  calibration: Int8Calibration | None = None) -> np.ndarray:
    """uint8 (N,1,48,48) -> softmax probabilities (N,7); ``tta`` averages the views of ``fer_core.evaluation.tta``.

    Every score of the project goes through here, and it runs the network as the app does: its
    inference form (BatchNorm folded, dropout gone; ``fer_core.models.inference``) in bf16 where the
    hardware has it ("auto"). On the shipped models bf16 and fp32 agree within 0.1 point of accuracy
    (``tests/test_evaluate.py``) at about 4x the speed on a CPU with AMX. ``precision`` "int8" scores
    its static int8 form from ``calibration`` (``fer_core.models.quantize``).
    """
    from fer_core.common.device import autocast, resolve_precision
    from fer_core.evaluation import tta as tta_views
    from fer_core.models.inference import for_inference

    device = next(model.parameters()).device
    precision = precision if precision == "int8" else resolve_precision(precision, device)
    model = for_inference(model, precision, calibration)
    out = []
    step = max(1, batch_size // tta_views.N_VIEWS) if tta else batch_size  # same memory either way
    for start in range(0, len(images), step):
        x = images[start:start + step].to(device).float().div_(255)
        with autocast(device, precision):
            if tta:
                p = tta_views.average(model(tta_views.views(x)).float().softmax(1), len(x))
            else:
                p = model(x).float().softmax(1)
        out.append(p.cpu())
        if progress:
            progress(min(start + step, len(images)), len(images))
    return torch.cat(out).numpy() if out else np.zeros((0, _output_width(model)), np.float32)


def _output_width(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else len(EMOTIONS)


def evaluate(model: nn.Module, split: Split, tta: bool = False, precision: str = "auto",
             progress: callable | None = None, classes: tuple[str, ...] | list[str] | None = None,
             calibration: Int8Calibration | None = None) -> Evaluation:
    """Score ``model`` (answering ``classes``; by default FER+'s first N, which are FER-2013's seven for
    a 7-class model) on ``split`` in the split's own label space (``to_label_space``)."""
    probs = predict_probs(model, split.images, tta=tta, precision=precision, progress=progress,
                          calibration=calibration)
    model_classes = classes if classes is not None else FERPLUS_EMOTIONS[:probs.shape[1]]
    return Evaluation(probs=to_label_space(probs, model_classes, split.classes), labels=split.labels.numpy(),
                      tta=tta, classes=tuple(split.classes),
                      votes=None if split.votes is None else split.votes.numpy())


def load_eval_split(data: str | os.PathLike, name: str, run_settings: dict | None = None) -> Split:
    """A split of the data; "val" without a val split is the slice of train/ that a run with these
    training settings held out (``fer_core.data.prepare.validation_slice``: same cleaning, same
    stratified draw), which is where checkpoints and ensembles are chosen, never on test/."""
    from fer_core.data.dataset import available_splits, load_split
    from fer_core.data.prepare import validation_slice

    if name == "val" and "val" not in available_splits(data):
        return validation_slice(str(data), run_settings)
    return load_split(data, name)


def run_settings_of(weights: str | os.PathLike) -> dict | None:
    """The training settings saved beside a run's weights (``config.json``'s ``train``), if any."""
    from fer_core.common.atomic import read_json

    path = Path(weights)
    folder = path if path.is_dir() else path.parent
    return read_json(folder / "config.json").get("train") or None


def _val_seed(settings: dict) -> int:
    return settings["val_seed"] if settings.get("val_seed") is not None else settings.get("seed", 0)


def main(argv: list[str] | None = None) -> int:
    from fer_core.common.paths import default_data_path
    from fer_core.data.dataset import DatasetError
    from fer_core.models.active import accurate_weights
    from fer_core.models.checkpoint import CheckpointError, load_checkpoint

    ap = argparse.ArgumentParser(prog="fer-evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None,
                    help="FER-2013 or FER+ folder, fer2013.csv or fer2013new.csv, or a folder of class folders "
                         "(scored as its test split) (default: $FER_DATA or data/fer2013)")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--weights", default=None,
                    help="a .safetensors file or a run folder (default: the promoted run if any, else the shipped "
                         "accurate model, else the shipped fast model)")
    ap.add_argument("--tta", action="store_true",
                    help="test-time augmentation: average 14 shifted, zoomed and mirrored views of each face")
    ap.add_argument("--seed", type=int, default=None,
                    help="with --split val on data without a val split: the slice of train/ that "
                         "`train.py --seed N` held out (default: the run's own saved settings, else seed 0)")
    ap.add_argument("--unseen", action="store_true",
                    help="score only faces with no pixel-identical copy in train/: the fair measure of a run "
                         "trained without the cleaning against test/")
    ap.add_argument("--label-space", choices=["data", "fer2013"], default="data",
                    help="score in the data's own classes (default), or in FER-2013's seven: faces of other "
                         "classes (contempt) are left out and an 8-class model answers among the seven")
    ap.add_argument("--json", default=None, help="also write the metrics as JSON here")
    args = ap.parse_args(argv)
    if args.unseen and args.split == "train":
        ap.error("--unseen leaves nothing of train/ itself: use it with --split test or val")
    args.weights = args.weights or str(accurate_weights())
    data = args.data or default_data_path()
    try:
        model, cfg = load_checkpoint(args.weights)
        settings = run_settings_of(args.weights) or {}
        if args.seed is not None:
            settings = {**settings, "seed": args.seed, "val_seed": None}
        split = load_eval_split(data, args.split, settings)
        if args.unseen:
            from fer_core.data.cleaning import without_copies_in
            from fer_core.data.dataset import load_split

            total, split = len(split), without_copies_in(split, load_split(data, "train"))
            print(f"--unseen: {total - len(split)} of {total} faces have a copy in train/ and are left out")
            if not len(split):
                raise ValueError(f"every face of {args.split} has a copy in train/ (a validation slice carved "
                                 "from train/ is train/): --unseen applies to test, or to a val split of its own")
        if args.label_space == "fer2013":
            split = split.restricted_to(EMOTIONS)
            if not len(split):
                raise ValueError(f"{args.split} holds no face of FER-2013's seven classes")
    except (DatasetError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    result = evaluate(model, split, tta=args.tta, classes=cfg.classes)
    print(f"model {args.weights} ({cfg.label}) on {split.name} of {data}"
          + (f" (validation slice of train/ for seed {_val_seed(settings)})" if split.name == "val" else ""))
    print(result.format())
    if args.json:
        from fer_core.common.atomic import write_json

        write_json(args.json, result.metrics())
    return 0


if __name__ == "__main__":
    sys.exit(main())
