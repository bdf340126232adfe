"""The network as the app runs it: the same function as the trained one, with less work per face.

Training needs BatchNorm, dropout and ``nn.MaxPool2d`` as they are; inference needs none of
their bookkeeping. Measured on these 2 CPU cores (bf16, batch 256, fernet_s), the forward pass
spent 11% of its time in BatchNorm and 12% in max-pooling (most of it in the first 2x2 pool at
48x48, which PyTorch's CPU kernel runs about 3x slower than four strided views and three
``maximum`` calls). So, for inference only:

- every BatchNorm after a convolution or dense layer is folded into that layer's weights and bias;
- dropout, the identity in eval mode, is dropped;
- 2x2 max-pools with stride 2 become ``StridedMaxPool2x2``, which gives bit-identical outputs;
- for bf16 inference the weights are stored in bf16: autocast casts weights that need no gradient
  again on every call, which at batch 1 cost 10-20% of the latency (the outputs are bit-identical);
- a ReLU followed by a 2x2 max-pool becomes the pool followed by the ReLU (the two commute exactly;
  the ReLU then touches a quarter of the values);
- the weights are laid out channels-last, as training lays them out, the layout oneDNN's CPU
  convolutions run fastest on (feed it channels-last input too);
- a batch larger than ``CHUNK`` faces runs ``CHUNK`` faces at a time. glibc serves every allocation
  of 32 MB or more with a fresh ``mmap``, so a batch-256 activation (fernet_s's first one is 38 MB
  in bf16) was page-faulted in anew on every call: 25% of fernet_s's batch-256 time here
  (medians of 5 alternating runs of ``bench``'s measurement: 1,607 faces/s in one piece, 1,872
  in chunks of 32, 1,953 in chunks of 64). In bf16, 64 faces keep every registered network's
  activations under that size (the widest, 64 channels at 48x48, is 19 MB), so the allocator
  reuses its memory; in fp32 the 64-channel ones (fernet_l, paper) still exceed it.

Where the CPU has no bf16 arithmetic, a model whose file carries an int8 calibration runs in static
int8 instead (``fer_core.models.quantize``), if that cost at most 0.3 points on its validation slice:
``choose_form`` decides, once, when the model is loaded.

The float forms compute the same function as the trained network up to float rounding
(``tests/test_inference_model.py`` checks every registered architecture), so accuracy measured
on the trained network holds for it: on test/, the shipped networks score the same in fp32 and
within 3 faces of it in bf16, folded or not.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from fer_core.common.device import cpu_has_native_bf16, resolve_precision
from fer_core.models.quantize import Int8Calibration, to_int8

FORMS = ("auto", "fp32", "bf16", "int8")
"""How a loaded network can run: ``auto`` lets ``choose_form`` pick for this CPU."""


def choose_form(requested: str = "auto", calibration: Int8Calibration | None = None) -> str:
    """The form a model runs in on this CPU: bf16 where the CPU computes in bf16 natively (2-4x fp32
    there); else int8 where the model's file carries a calibration that kept its validation accuracy
    (``Int8Calibration.eligible``); else fp32. An explicit ``requested`` form is honoured, int8 only
    with a calibration."""
    if requested not in FORMS:
        raise ValueError(f"unknown precision '{requested}': use one of {', '.join(FORMS)}")
    if requested == "int8":
        if calibration is None:
            raise ValueError("int8 needs the model's int8 calibration, and its file has none "
                             "(python -m fer_core.tools.int8 WEIGHTS --data DATA adds it)")
        return "int8"
    if requested != "auto":
        return resolve_precision(requested, torch.device("cpu"))
    if cpu_has_native_bf16():
        return "bf16"
    return "int8" if calibration is not None and calibration.eligible else "fp32"


class StridedMaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)``, as the maximum of the four strided views of the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2  # MaxPool2d drops an odd last row/column
        x = x[..., :h, :w]
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                             torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


def _is_plain_2x2_pool(m: nn.Module) -> bool:
    def pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
        return tuple(v) if isinstance(v, tuple | list) else (v, v)

    return (isinstance(m, nn.MaxPool2d) and pair(m.kernel_size) == (2, 2) and pair(m.stride) == (2, 2)
            and pair(m.padding) == (0, 0) and pair(m.dilation) == (1, 1) and not m.ceil_mode
            and not m.return_indices)


CHUNK = 64


class InChunks(nn.Module):
    """``net`` applied to at most ``CHUNK`` faces at a time, so its activations stay small enough to reuse."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) <= CHUNK:
            return self.net(x)
        return torch.cat([self.net(part) for part in x.split(CHUNK)])


def _simplify(seq: nn.Sequential) -> nn.Sequential:
    layers: list[nn.Module] = []
    for m in seq:
        if isinstance(m, nn.BatchNorm2d) and layers and isinstance(layers[-1], nn.Conv2d):
            layers[-1] = fuse_conv_bn_eval(layers[-1], m)
        elif isinstance(m, nn.BatchNorm1d) and layers and isinstance(layers[-1], nn.Linear):
            layers[-1] = fuse_linear_bn_eval(layers[-1], m)
        elif isinstance(m, nn.Dropout):
            continue
        elif _is_plain_2x2_pool(m):
            if layers and isinstance(layers[-1], nn.ReLU):
                layers.insert(len(layers) - 1, StridedMaxPool2x2())
            else:
                layers.append(StridedMaxPool2x2())
        else:
            layers.append(_simplify_children(m))
    return nn.Sequential(*layers)


def _simplify_children(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.Sequential):
        return _simplify(module)
    for name, child in module.named_children():
        setattr(module, name, _simplify_children(child))
    return module


@torch.no_grad()
def for_inference(model: nn.Module, precision: str = "fp32", calibration: Int8Calibration | None = None) -> nn.Module:
    """An eval-mode copy of ``model`` with its BatchNorms folded, dropout dropped, 2x2 pools made
    cheap, channels-last weights, large batches run in chunks and, for ``precision`` "bf16" (run it
    under ``fer_core.common.device.autocast``), bf16 weights; for "int8", its static int8 form from
    ``calibration``. ``model`` itself is left as it is (it may still be trained or saved)."""
    if precision == "int8":
        if calibration is None:
            raise ValueError("the int8 form needs the model's int8 calibration")
        return InChunks(to_int8(model, calibration.qparams)).eval()
    folded = _simplify_children(copy.deepcopy(model).eval())
    for p in folded.parameters():
        p.requires_grad_(False)
    if precision == "bf16":
        folded = folded.to(torch.bfloat16)
    # .eval() again: the Sequentials built by _simplify start in training mode
    return InChunks(folded.to(memory_format=torch.channels_last)).eval()
