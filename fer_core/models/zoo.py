"""The model zoo: a small registry of single networks by name, like timm's ``create_model``.

Every model takes float images in [0, 1] of shape (N, 1, 48, 48) and returns logits over
the 7 FER-2013 classes; input normalisation is the model's first layer, so no caller can
get it wrong. Softmax is applied by whoever needs probabilities (the loss wants logits).

Ensembles are not registered: an ensemble is data, the list of its members' architectures
(``ModelConfig(arch="ensemble", members=[...])``), so any mix of registered networks is one
without a name for it. Checkpoints saved before that named their ensemble by a letter code
(``fernet_lmmms``); ``legacy_members`` reads those codes as member lists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fer_core.common.labels import EMOTIONS, IMAGE_SIZE

_REGISTRY: dict[str, Callable[[int], nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}

ENSEMBLE = "ensemble"
"""The ``arch`` of a ``ModelConfig`` whose ``members`` name the networks whose probabilities it averages."""


def register(name: str, description: str) -> Callable[[Callable[[int], nn.Module]], Callable[[int], nn.Module]]:
    def deco(fn: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        _REGISTRY[name] = fn
        _DESCRIPTIONS[name] = description
        return fn

    return deco


def list_models() -> list[str]:
    """Every registered network: what a person trains (``train.py --arch``) or benchmarks. Ensembles are
    built from these by member list, so they are not listed."""
    return sorted(_REGISTRY)


def describe(name: str) -> str:
    return _DESCRIPTIONS[name]


_LETTERS = {"r": "fernet_r", "l": "fernet_l", "m": "fernet_m", "s": "fernet_s"}


def legacy_members(arch: str) -> list[str] | None:
    """The members, in slot order, of an ensemble that an older checkpoint named by code; None for any
    other name.

    Checkpoints and cards written before ensembles were described by their members name them
    ``fernet_s_x2`` (two fernet_s) or ``fernet_`` plus one letter per member in slot order
    (``fernet_lmmms`` = fernet_l, fernet_m, fernet_m, fernet_m, fernet_s). Shipped files keep that code in
    their metadata (rewriting them would change their hash), so it is translated wherever it is read.
    """
    if arch == "fernet_s_x2":
        return ["fernet_s", "fernet_s"]
    code = arch.removeprefix("fernet_")
    if code != arch and len(code) > 1 and set(code) <= set(_LETTERS):
        return [_LETTERS[c] for c in code]
    return None


def members_text(members: Sequence[str]) -> str:
    """``fernet_l + 3 fernet_m + fernet_s``: each architecture once, with its count, in first-seen order."""
    counts = {m: members.count(m) for m in members}
    return " + ".join(f"{n} {m}" if n > 1 else m for m, n in counts.items())


def architecture_label(arch: str, members: Sequence[str] | None = None) -> str:
    """How pages and tables name a model: a single network's name, or ``ensemble of fernet_l + 3 fernet_m +
    fernet_s`` (from ``members``, or from an old letter code)."""
    members = members or legacy_members(arch)
    if arch in _REGISTRY or not members:
        return arch
    return f"ensemble of {members_text(members)}"


@dataclass
class ModelConfig:
    """Saved beside every checkpoint: enough to rebuild the network and read its outputs.

    A single network has ``arch`` = its registered name and no ``members``; an ensemble has
    ``arch`` = ``ENSEMBLE`` and ``members`` = its networks' architectures in slot order (the order of
    ``Ensemble.members``, which is the order of their weights in the file).
    """

    arch: str
    num_classes: int = len(EMOTIONS)
    classes: list[str] = field(default_factory=lambda: list(EMOTIONS))
    input_size: int = IMAGE_SIZE
    members: list[str] | None = None

    @classmethod
    def ensemble(cls, members: Sequence[str], num_classes: int = len(EMOTIONS), classes: Sequence[str] | None = None,
                 input_size: int = IMAGE_SIZE) -> ModelConfig:
        """The config of an ensemble of these registered networks, in this slot order."""
        cfg = cls(ENSEMBLE, num_classes, list(classes) if classes is not None else list(EMOTIONS), input_size,
                  list(members))
        cfg.validate()
        return cfg

    @property
    def is_ensemble(self) -> bool:
        return self.arch == ENSEMBLE

    @property
    def label(self) -> str:
        return architecture_label(self.arch, self.members)

    def description(self) -> str:
        """The registered description of a single network; for an ensemble, what it is made of."""
        if not self.is_ensemble:
            return describe(self.arch)
        return (f"Ensemble of {members_text(self.members or [])}: {len(self.members or [])} networks trained "
                "separately, their probabilities averaged.")

    def validate(self) -> None:
        """Raise ValueError unless ``create`` can build this config."""
        if self.is_ensemble:
            if not self.members or not isinstance(self.members, list):
                raise ValueError("an ensemble config needs the list of its members' architectures")
            unknown = [m for m in self.members if m not in _REGISTRY]
            if unknown:
                raise ValueError(f"unknown member architecture '{unknown[0]}' (an ensemble's members are single "
                                 f"networks: {', '.join(list_models())})")
        elif self.arch not in _REGISTRY:
            raise ValueError(f"unknown architecture '{self.arch}' (known: {', '.join(list_models())}, "
                             f"or '{ENSEMBLE}' with members)")
        elif self.members is not None:
            raise ValueError(f"'{self.arch}' is a single network; only an '{ENSEMBLE}' config has members")
        if self.num_classes != len(self.classes):
            raise ValueError(f"model config lists {len(self.classes)} classes but num_classes={self.num_classes}")

    def create(self) -> nn.Module:
        """A freshly initialised network of this config: the one its checkpoint's weights fit."""
        self.validate()
        if self.is_ensemble:
            return Ensemble([create_model(m, self.num_classes) for m in self.members or []])
        return create_model(self.arch, self.num_classes)

    def to_dict(self) -> dict:
        """``members`` right after ``arch``, and only for an ensemble, so single networks' configs stay as
        they always were."""
        d: dict = {"arch": self.arch}
        if self.members is not None:
            d["members"] = list(self.members)
        return {**d, "num_classes": self.num_classes, "classes": list(self.classes), "input_size": self.input_size}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Reads both forms: ``{"arch": "ensemble", "members": [...]}`` and an old letter code
        (``{"arch": "fernet_lmmms"}``), which becomes the same members config."""
        known = {k: d[k] for k in ("arch", "num_classes", "classes", "input_size", "members") if k in d}
        cfg = cls(**known)
        old = legacy_members(cfg.arch) if cfg.members is None else None
        if old is not None and cfg.arch not in _REGISTRY:
            cfg.arch, cfg.members = ENSEMBLE, old
        cfg.validate()
        return cfg


def create_model(name: str, num_classes: int = len(EMOTIONS)) -> nn.Module:
    """A registered single network; ensembles are built from their members with
    ``ModelConfig.ensemble([...]).create()``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture '{name}' (known: {', '.join(list_models())})")
    return _REGISTRY[name](num_classes)


class Normalize(nn.Module):
    """Maps [0, 1] grey levels to roughly zero mean, unit variance (FER-2013 statistics)."""

    def __init__(self, mean: float = 0.507, std: float = 0.255) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


# --------------------------------------------------------------------------- the paper


@register(
    "paper",
    "The paper's Sequential CNN (Bodapati et al.), as the widely used Keras FER-2013 model: "
    "Conv64 3x3 / Conv128 5x5 / Conv512 3x3 / Conv512 3x3, each BN-ReLU-MaxPool-Dropout(0.25); "
    "Dense 256 and Dense 512 with BN-ReLU-Dropout(0.25); Dense 7 + softmax.",
)
def paper_cnn(num_classes: int) -> nn.Module:
    layers: list[nn.Module] = [Normalize()]
    for cin, cout, k in ((1, 64, 3), (64, 128, 5), (128, 512, 3), (512, 512, 3)):
        layers += [nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2), nn.Dropout(0.25)]
    layers += [nn.Flatten()]
    for fin, fout in ((512 * 3 * 3, 256), (256, 512)):
        layers += [nn.Linear(fin, fout), nn.BatchNorm1d(fout), nn.ReLU(inplace=True), nn.Dropout(0.25)]
    layers += [nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- our designs


class FerNet(nn.Module):
    """VGG-style stages of 3x3 conv-BN-ReLU, a max-pool after each, then a small MLP head.

    Chosen for accuracy per CPU second: plain 3x3 convolutions are what oneDNN runs
    fastest on a CPU, the first stage is kept thin because it runs at full 48x48
    resolution, and the last feature map is 3x3, flattened, so the head still sees where
    on the face each feature fired (mouth vs eyes), which global pooling would throw away.
    """

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...], head: int, num_classes: int,
                 dropout: float = 0.4) -> None:
        super().__init__()
        layers: list[nn.Module] = [Normalize()]
        cin = 1
        for width, depth in zip(widths, depths, strict=True):
            for _ in range(depth):
                layers += conv_bn_relu(cin, width)
                cin = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = IMAGE_SIZE // 2 ** len(widths)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin * side * side, head, bias=False),
            nn.BatchNorm1d(head), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(head, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register("fernet_s", "Ours, fast: VGG-style 32-64-128-256 (1-2-2-2 convs), 3x3x256 -> 256 -> 7. For live video.")
def fernet_s(num_classes: int) -> nn.Module:
    return FerNet((32, 64, 128, 256), (1, 2, 2, 2), 256, num_classes)


@register("fernet_m", "Ours, accurate: VGG-style 48-96-192-384 (1-2-2-2 convs), 3x3x384 -> 384 -> 7.")
def fernet_m(num_classes: int) -> nn.Module:
    return FerNet((48, 96, 192, 384), (1, 2, 2, 2), 384, num_classes)


@register("fernet_l", "Ours, for GPU training: VGG-style 64-128-256-512 (2-2-2-2 convs), 3x3x512 -> 256 -> 7.")
def fernet_l(num_classes: int) -> nn.Module:
    """Twice the convolutions of fernet_m at full resolution: too slow to train on two CPU cores,
    minutes on a GPU. The head stays at 256 so it still fits a 20 MB file beside a fernet_m."""
    return FerNet((64, 128, 256, 512), (2, 2, 2, 2), 256, num_classes)


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions plus a shortcut; built from Sequentials so inference folds its BatchNorms."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn_relu(cin, cout, stride=stride),
                                  nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class FerResNet(nn.Module):
    """A CIFAR-style ResNet-18 for 48x48 faces: a stride-1 stem, four stages of two basic blocks
    (48, 24, 12, 6 px), global average pooling.

    Not faster or, alone, more accurate than the VGG-style fernet_l; it is here because an
    ensemble gains most from members that err differently, and residual stages with a pooled
    head see a face differently from plain stages with a flattened one.
    """

    def __init__(self, widths: tuple[int, ...], num_classes: int, dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = [Normalize(), *conv_bn_relu(1, widths[0])]
        cin = widths[0]
        for i, width in enumerate(widths):
            layers += [BasicBlock(cin, width, 1 if i == 0 else 2), BasicBlock(width, width, 1)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register("fernet_r", "Ours, for GPU training and ensembles: ResNet-18 (2-2-2-2 basic blocks) 36-72-144-288, "
                      "global pool -> 7.")
def fernet_r(num_classes: int) -> nn.Module:
    """Widths 36-72-144-288 (3.5M params) so that, in int8, it fits a 20 MB file beside a fernet_l,
    a fernet_m and a fernet_s."""
    return FerResNet((36, 72, 144, 288), num_classes)


class Ensemble(nn.Module):
    """Several independently trained networks voting: the mean of their probabilities.

    Returns log-probabilities, so ``softmax`` of the output is exactly that mean and every
    caller treats an ensemble like any single network. Built from a ``ModelConfig`` whose
    ``members`` list the networks' architectures (``ModelConfig.create``).
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).float().softmax(1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()


@register("tiny", "A 3-layer toy network for tests and smoke runs; not for real use.")
def tiny(num_classes: int) -> nn.Module:
    """Has BatchNorm and dropout like the real networks, so tests exercise their state and randomness."""
    return nn.Sequential(
        Normalize(), *conv_bn_relu(1, 8), nn.MaxPool2d(4), *conv_bn_relu(8, 16), nn.MaxPool2d(4),
        nn.Flatten(), nn.Dropout(0.1), nn.Linear(16 * 3 * 3, num_classes),
    )


# --------------------------------------------------------------------------- accounting


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int = IMAGE_SIZE) -> int:
    """Multiply-accumulates of one forward pass on one image (convolutions and dense layers)."""
    total = 0

    def hook(mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total += out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, input_size, input_size))
    model.train(was_training)
    for h in handles:
        h.remove()
    return total
