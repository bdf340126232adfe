"""Static int8: the network's form for CPUs that lack bf16 arithmetic.

Most laptops and cloud machines have AVX2 and no bf16: there the networks run in fp32 unless a
cheaper form keeps their answers. Post-training static quantization does: every convolution and
dense layer runs on 8-bit weights (one scale per output channel) and 8-bit activations (one scale
per tensor), through PyTorch's x86 engine (FBGEMM and oneDNN, which pick their AVX2 or AVX-512
kernels per CPU). Measured figures are in ``docs/benchmarks.md``.

An activation's scale must be set on real faces (calibration), and the user who loads a model
may have no faces at hand, so calibration happens once, where the data is (``fer_core.tools.int8``
or shipping), and what it found is saved in the weights file's metadata (``CALIBRATION_KEY``):
each activation's scale and zero point, plus the model's accuracy on its validation slice in fp32
and in int8. ``fer_core.models.inference.choose_form`` takes int8 only where that loss is at most
``MAX_LOSS_POINTS``. The weights' own int8 values are recomputed from the float weights at load
time (deterministic), so a file holds only a few hundred numbers more.

Activations use 7 of their 8 bits (``reduce_range``): without VNNI, AVX2's int8 multiply adds
pairs of products into 16 bits, which would saturate on full-range inputs and give another answer
than on a VNNI CPU; with 7 bits every CPU computes the same thing.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from fer_core.models.zoo import Ensemble

CALIBRATION_KEY = "fer_int8_calibration"
ENGINE = "x86"
MAX_LOSS_POINTS = 0.3
"""The most validation accuracy (percentage points) int8 may cost and still be chosen."""
CALIBRATION_FACES = 2048


def keeps_accuracy(val_faces: int, fp32: float, int8: float) -> bool:
    """Whether int8 kept a model's accuracy on its validation slice (lost at most ``MAX_LOSS_POINTS``):
    the condition for the app to run it."""
    return val_faces > 0 and 100 * (fp32 - int8) <= MAX_LOSS_POINTS + 1e-9


@dataclass(frozen=True)
class Int8Calibration:
    """What calibration found: per quantized network (``""`` for a single one, ``members.K`` in an
    ensemble) each activation observer's (scale, zero point), plus the validation check."""

    qparams: dict[str, dict[str, tuple[float, int]]]
    val_faces: int
    val_accuracy_fp32: float
    val_accuracy_int8: float

    @property
    def loss_points(self) -> float:
        return 100 * (self.val_accuracy_fp32 - self.val_accuracy_int8)

    @property
    def eligible(self) -> bool:
        return keeps_accuracy(self.val_faces, self.val_accuracy_fp32, self.val_accuracy_int8)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Int8Calibration:
        d = json.loads(text)
        qparams = {net: {k: (float(s), int(z)) for k, (s, z) in obs.items()} for net, obs in d["qparams"].items()}
        return cls(qparams, int(d["val_faces"]), float(d["val_accuracy_fp32"]), float(d["val_accuracy_int8"]))


def _networks(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The networks quantized one by one: an ensemble's members (its averaging stays float), or the model."""
    if isinstance(model, Ensemble):
        for i, member in enumerate(model.members):
            yield f"members.{i}", member
    else:
        yield "", model


def _prepared(net: nn.Module, observe: bool) -> torch.fx.GraphModule:
    """``net`` traced with an observer after each quantized operation; ``prepare_fx`` also folds every
    BatchNorm into its convolution and fuses the ReLUs, as ``for_inference`` does for fp32.

    ``observe``: observers that learn each activation's range from data (a histogram, which clips
    rare outliers); otherwise plain min/max observers, whose range is then set from saved qparams."""
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.backends.quantized.engine = ENGINE
    activation = (HistogramObserver if observe else MinMaxObserver).with_args(dtype=torch.quint8, reduce_range=True)
    weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    mapping = QConfigMapping().set_global(QConfig(activation=activation, weight=weight))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_fx(copy.deepcopy(net).eval(), mapping, example_inputs=(torch.zeros(1, 1, 48, 48),))


def _observers(prepared: nn.Module) -> dict[str, nn.Module]:
    from torch.ao.quantization.observer import ObserverBase

    return {name: m for name, m in prepared.named_modules()
            if isinstance(m, ObserverBase) and "activation_post_process" in name}


@torch.no_grad()
def observe(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> dict[str, dict[str, tuple[float, int]]]:
    """Each activation's (scale, zero point) over ``images`` (uint8 or float (N,1,48,48) faces)."""
    x_all = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    found: dict[str, dict[str, tuple[float, int]]] = {}
    for net_name, net in _networks(model):
        prepared = _prepared(net, observe=True)
        for x in x_all.split(batch_size):
            prepared(x)
        found[net_name] = {}
        for name, obs in _observers(prepared).items():
            scale, zero_point = obs.calculate_qparams()
            found[net_name][name] = (float(scale), int(zero_point))
    return found


def _from_qparams(net: nn.Module, qparams: dict[str, tuple[float, int]]) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    prepared = _prepared(net, observe=False)
    observers = _observers(prepared)
    if set(observers) != set(qparams):
        raise ValueError("the int8 calibration does not fit this network (its operations differ); calibrate it again")
    for name, obs in observers.items():
        scale, zero_point = qparams[name]
        # MinMaxObserver gives back exactly this (scale, zero point) from this range
        obs.min_val.fill_((obs.quant_min - zero_point) * scale)
        obs.max_val.fill_((obs.quant_max - zero_point) * scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared)


def to_int8(model: nn.Module, qparams: dict[str, dict[str, tuple[float, int]]]) -> nn.Module:
    """The int8 form of ``model`` (float logits out, as the model's own), from ``observe``'s findings."""
    nets = dict(_networks(model))
    if set(nets) != set(qparams):
        raise ValueError("the int8 calibration was made for another model (its networks differ); calibrate it again")
    if isinstance(model, Ensemble):
        return Ensemble([_from_qparams(net, qparams[name]) for name, net in nets.items()]).eval()
    return _from_qparams(model, qparams[""]).eval()
