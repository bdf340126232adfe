"""Model cards: the measured facts about a shipped model, beside its weights.

``weights/<name>.safetensors`` has ``weights/<name>.json`` (machine-readable: architecture,
training command and config, data hash, wall time and hardware, test metrics, latency)
and ``weights/MODEL_CARD.md`` for people. Runs have ``config.json`` + ``metrics.json``
instead; ``load_card`` reads either, so pages can show any model the same way.

Every writer (``fer_core.runs.ship``) and reader (the pages, ``fer_core.tools.unship``) goes
through ``ModelCard``, so a field has one name and one type. The JSON form is the one cards
have always had: ``ModelCard.from_dict(d).to_dict() == d`` for every card in ``weights/``.
Rules of that round trip:

- A field that is None is left out of the dict (older cards lack ``storage`` and ``members``;
  cards assembled from a run lack most fields), except ``val`` (ship writes ``null`` when the
  networks held out different validation slices) and the fields of ``DataSummary`` (train.py
  always writes all six; ``test_hash`` is ``null`` without a test split).
- Keys a part does not know are kept in its ``extra`` and written back after the known ones,
  so a card from a newer writer neither crashes a reader nor loses anything when rewritten.
- Structure is checked (a part where a part belongs, required fields present, a number where a
  number belongs: ``CardError``); the numbers are stored as written, never converted, so a
  rewritten card is byte-identical.
- A model answers its own classes (``classes``: FER-2013's seven, or FER+'s eight); a card without
  them is FER-2013's. Each ``TestMetrics`` names the classes of the data it was measured on, which
  may differ from the model's (``fer_core.common.labels.to_label_space``).
- The training configs (``config``) stay plain dicts: they are ``TrainConfig``s of the training
  layer, which this layer cannot import, and their keys changed over time (``teacher``,
  ``init``, ``val_seed`` came later), so typing them here would reject old cards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

from fer_core.common.labels import EMOTIONS
from fer_core.common.values import is_count, is_number
from fer_core.models.checkpoint import resolve_weights
from fer_core.models.quantize import Int8Calibration, keeps_accuracy
from fer_core.models.zoo import ENSEMBLE, architecture_label, legacy_members

LEGACY_TEST_SET = "FER-2013 PublicTest"
"""What every card shipped before cards named their test split was scored on."""


class CardError(ValueError):
    """A model card whose structure is not a card's; the message says which part and why."""


def _plain(value: Any) -> Any:
    """The JSON form of a field: parts as their dicts, containers element-wise, scalars as they are."""
    if isinstance(value, _Part):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class _Part:
    """Shared ``from_dict``/``to_dict`` of every part of a card (see the module's rules)."""

    _nested: ClassVar[dict[str, Callable[[Any], Any]]] = {}  # field -> how to read its JSON value
    _always: ClassVar[tuple[str, ...]] = ()  # fields written even when None

    @classmethod
    def from_dict(cls, d: Any) -> Self:
        if not isinstance(d, dict):
            raise CardError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls) if f.name != "extra"}
        known = {k: v for k, v in d.items() if k in names}
        for name, read in cls._nested.items():
            if known.get(name) is not None:
                known[name] = read(known[name])
        for f in fields(cls):  # a number field holding text would crash every page that formats it
            value = known.get(f.name)
            if str(f.type).removesuffix(" | None") in ("int", "float") and value is not None and not is_number(value):
                raise CardError(f"{cls.__name__}.{f.name}: expected a number, got {value!r}")
        try:
            return cls(**known, extra={k: v for k, v in d.items() if k not in names})
        except TypeError as exc:  # a required field is missing
            raise CardError(f"{cls.__name__}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self)
               if f.name != "extra" and (getattr(self, f.name) is not None or f.name in self._always)}
        return {**out, **self.extra}


def _list_of(part: type[_Part]) -> Callable[[Any], list]:
    def read(value: Any) -> list:
        if not isinstance(value, list):
            raise CardError(f"expected a list of {part.__name__}, got {type(value).__name__}")
        return [part.from_dict(v) for v in value]

    return read


def _dict_of(part: type[_Part]) -> Callable[[Any], dict]:
    def read(value: Any) -> dict:
        if not isinstance(value, dict):
            raise CardError(f"expected an object of {part.__name__} by name, got {type(value).__name__}")
        return {k: part.from_dict(v) for k, v in value.items()}

    return read


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise CardError(f"expected a list, got {type(value).__name__}")
    return value


def _matrix(value: Any) -> list:
    """A confusion matrix: square, of counts (pages draw it as it is)."""
    rows = _list(value)
    if not all(isinstance(r, list) and len(r) == len(rows) for r in rows) or not all(
            is_count(v) for r in rows for v in r):
        raise CardError("confusion_matrix: expected a square matrix of counts")
    return rows


@dataclass
class ClassScores(_Part):
    """One class of a classification report."""

    precision: float
    recall: float
    f1: float
    support: int
    extra: dict[str, Any] = field(default_factory=dict)


def _names(value: Any) -> list:
    """A label space: a list of class names."""
    names = _list(value)
    if not all(isinstance(c, str) for c in names):
        raise CardError("classes: expected a list of class names")
    return names


@dataclass
class TestMetrics(_Part):
    """``Evaluation.metrics()`` on a split, plus which split (and, for a card's ``also``, which data).
    A run's ``metrics.json`` adds its ``train_seconds`` and ``best_val_acc`` (kept in ``extra``);
    every field may be missing from a run killed or written by hand, so readers check for None.

    ``classes`` is the label space of the data scored (of ``per_class`` and the confusion matrix);
    cards written before models had their own label space lack it: FER-2013's seven.
    ``agreement`` and ``vote_cross_entropy`` are FER+'s measures, present where the data had votes."""

    __test__ = False  # not a pytest test class, despite its name

    data: str | None = None  # the data's name, on the extra evaluations of a card (``ModelCard.also``)
    split: str | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    weighted_f1: float | None = None
    per_class: dict[str, ClassScores] | None = None
    confusion_matrix: list[list[int]] | None = None
    n: int | None = None
    tta: bool | None = None
    classes: list[str] | None = None
    agreement: float | None = None  # mean share of a face's annotators who chose the predicted label
    vote_cross_entropy: float | None = None  # nats, of the probabilities against the vote distribution
    extra: dict[str, Any] = field(default_factory=dict)

    _nested: ClassVar = {"per_class": _dict_of(ClassScores), "confusion_matrix": _matrix, "classes": _names}

    def label_space(self, default: tuple[str, ...] | list[str] = EMOTIONS) -> tuple[str, ...]:
        """The classes ``per_class`` and the confusion matrix are in: the stored ones, else ``default``."""
        return tuple(self.classes) if self.classes else tuple(default)


@dataclass
class DataSummary(_Part):
    """The data a model was trained on, as train.py records it: content hashes and sizes after cleaning."""

    train_hash: str
    val_hash: str
    test_hash: str | None
    train: int
    val: int
    test: int
    extra: dict[str, Any] = field(default_factory=dict)

    _always: ClassVar = ("train_hash", "val_hash", "test_hash", "train", "val", "test")


@dataclass
class ValidationScores(_Part):
    """The model on the validation slice all its networks held out: where ensembles and TTA are chosen."""

    n: int
    accuracy: float
    macro_f1: float
    tta_accuracy: float
    tta_macro_f1: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Latency(_Part):
    """Speed on the CPU that shipped it, as the app runs the model (``fer_core.evaluation.bench``)."""

    precision: str
    latency_b1_ms: float
    throughput_b256_img_s: float
    threads: int
    cpu: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferenceForm(_Part):
    """One form the model can run in (``fer_core.models.inference.FORMS``) under one set of kernels
    (``native``: the shipping CPU's own; ``avx2``: held to AVX2, as a CPU without bf16), measured by
    ``fer-bench --forms``; ``chosen``: the form the app picks there (``choose_form``)."""

    kernels: str
    form: str
    latency_b1_ms: float
    throughput_b256_img_s: float
    chosen: bool
    cpu_flags: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Int8Check(_Part):
    """The model's static int8 form against fp32 on its validation slice (``fer_core.evaluation.int8``)."""

    val_faces: int
    val_accuracy_fp32: float
    val_accuracy_int8: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def eligible(self) -> bool:
        """Whether the app may run the int8 form (``fer_core.models.quantize.keeps_accuracy``)."""
        return keeps_accuracy(self.val_faces, self.val_accuracy_fp32, self.val_accuracy_int8)

    @classmethod
    def from_calibration(cls, c: Int8Calibration) -> Int8Check:
        return cls(c.val_faces, c.val_accuracy_fp32, c.val_accuracy_int8)


@dataclass
class MemberTraining(_Part):
    """What training one network of the model cost (its run, plus the run it started from), in the
    order of the card's ``config``; a folder rebuilt by unship keeps it as ``summary.json``."""

    epochs: int
    minutes: float
    best_val_acc: float
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelCard(_Part):
    """A shipped model's card (``weights/<name>.json``), or the part of one a run folder can give.

    ``arch`` is the checkpoint config's: a network's name, ``"ensemble"`` (its members' architectures
    are those of ``config``), or an old ensemble code (``fernet_lmmms``) on cards shipped before;
    show ``architecture`` to people. ``config``, ``val_acc`` and ``members`` have one entry per
    trained network, in the order the runs were given to ship.
    """

    name: str
    arch: str
    description: str | None = None
    params: int | None = None
    macs: int | None = None
    storage: str | None = None  # None: float16, on cards written before int8 storage existed
    classes: list[str] | None = None  # the model's label space; None: FER-2013's seven, on older cards
    date: str | None = None
    train_command: str | None = None
    config: list[dict[str, Any]] | None = None
    data: DataSummary | None = None
    epochs: int | None = None
    train_minutes: float | None = None
    hardware: str | None = None
    val_acc: list[float] | None = None
    members: list[MemberTraining] | None = None
    eval_command: str | None = None
    val: ValidationScores | None = None
    test_set: str | None = None  # the split ``test`` is on, in words; None: FER-2013 PublicTest on older cards
    test: TestMetrics | None = None
    test_tta: TestMetrics | None = None
    also: list[TestMetrics] | None = None  # the model measured on other data (``TestMetrics.data``)
    latency: Latency | None = None
    forms: list[InferenceForm] | None = None  # every form's speed, and the one the app picks per CPU
    int8: Int8Check | None = None
    eval_seconds: float | None = None
    source: str | None = None  # "run": assembled from a run folder by load_card
    extra: dict[str, Any] = field(default_factory=dict)

    _nested: ClassVar = {"config": _list, "data": DataSummary.from_dict, "val_acc": _list,
                         "members": _list_of(MemberTraining), "val": ValidationScores.from_dict,
                         "test": TestMetrics.from_dict, "test_tta": TestMetrics.from_dict,
                         "latency": Latency.from_dict, "classes": _names, "also": _list_of(TestMetrics),
                         "forms": _list_of(InferenceForm), "int8": Int8Check.from_dict}
    _always: ClassVar = ("val",)

    @property
    def model_classes(self) -> tuple[str, ...]:
        """The classes the model answers."""
        return tuple(self.classes) if self.classes else EMOTIONS

    @property
    def test_classes(self) -> tuple[str, ...]:
        """The classes of the data ``test`` was measured on (its per-class table and confusion matrix)."""
        return (self.test or TestMetrics()).label_space(self.model_classes)

    @property
    def test_words(self) -> str | None:
        """The split ``test`` is on, in words; cards shipped before they said so were all scored on
        FER-2013 PublicTest. None for a card assembled from a run (its split name is all there is)."""
        if self.test_set:
            return self.test_set
        return None if self.source == "run" else LEGACY_TEST_SET

    @property
    def stored_as(self) -> str:
        """How the weights file stores its convolution and dense weights."""
        return self.storage or "float16"

    @property
    def ensemble_members(self) -> list[str] | None:
        """An ensemble's network architectures in slot order (from ``config`` on cards that say
        ``"ensemble"``, from the code on older ones); None for a single network or when unknown."""
        if self.arch == ENSEMBLE:
            # ship fills an ensemble's slots by architecture name, so sorting gives the file's slot order
            archs = [c.get("arch") for c in self.config or [] if isinstance(c, dict)]
            return sorted(map(str, archs)) or None
        return legacy_members(self.arch)

    @property
    def architecture(self) -> str:
        """For people: ``fernet_s``, or ``ensemble of fernet_l + 3 fernet_m + fernet_s``."""
        return architecture_label(self.arch, self.ensemble_members)


def read_card(path: str | os.PathLike) -> ModelCard | None:
    """The card in a JSON file; None when it is missing, unreadable or not a model card."""
    try:
        return ModelCard.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError):  # CardError is a ValueError, as is bad JSON
        return None


def load_card(weights: str | os.PathLike) -> ModelCard | None:
    """The card of a shipped model, or one assembled from a run folder; None when there is none."""
    try:
        p = resolve_weights(weights)
    except ValueError:
        return None
    card = p.with_suffix(".json")
    if card.is_file():
        return read_card(card)
    run = p.parent
    try:
        config = json.loads((run / "config.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        return ModelCard.from_dict({"name": run.name, "arch": config["model"]["arch"], "params": config.get("params"),
                                    "classes": config["model"].get("classes"), "config": [config["train"]],
                                    "data": config.get("data"), "test": metrics, "source": "run"})
    except (OSError, ValueError, KeyError, TypeError):
        return None
