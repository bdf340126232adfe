"""Grad-CAM per face: which parts of a 48x48 crop the network's decision rests on.

    from fer_core.recognition.explain import explainer_for, gradcam, overlay
    net = explainer_for("weights/model.safetensors")
    maps, classes = gradcam(net, crops)          # crops: uint8 (N, 48, 48), as the recognizer feeds them
    picture = overlay(crops[0], maps[0])         # uint8 RGB (192, 192, 3)

Grad-CAM weighs each channel of a convolutional feature map by how much the class score
rises with it (its spatially averaged gradient) and sums the weighted channels, giving a
coarse map of where the evidence for that class lies. Captum computes it
(``LayerGradCam``); this module only chooses the layer, handles ensembles and the shipped
file formats, and makes the call safe to share between threads.

The layer is each network's last ``nn.Conv2d`` (in the order a forward pass runs them, so
any registered architecture works): the highest-level features there are, i.e. those
closest to the decision, that still have a spatial layout (6x6 for the FerNets and the
ResNet); after it the head flattens or pools and "where" is gone.

Caveat, measured on the shipped networks: their heads flatten the 3x3 map (each position its
own weights), which Grad-CAM's spatially averaged gradient ignores, and they were trained on
centred faces; on a face pasted off-centre on a blank canvas their maps often light up the
blank band rather than follow the face. The map is a hint of where the evidence lies, not a
precise localisation.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from fer_core.common.device import torch_threads
from fer_core.common.labels import IMAGE_SIZE
from fer_core.models.zoo import Ensemble
from fer_core.recognition.recognizer import SMALL_BATCH

EXPLAINED = (
    "The heat map shows which parts of the face crop most raised the network's score for the emotion it reports "
    "(Grad-CAM of its last convolutional layer, a coarse 6x6 grid); for an ensemble it explains the averaged "
    "probability that is shown, with the evidence of all its member networks combined, not any one member."
)
"""One sentence for users: what the coloured regions mean."""

_ATTRIBUTION_LOCK = threading.Lock()
"""Captum attaches forward hooks to the explained layer for the duration of a call: two threads
explaining the same network at once would each catch the other's activations. One lock for all
networks is enough: on a CPU two attributions in parallel would only fight over the cores."""

_EXPLAINERS: dict[tuple[str, int, int], nn.Module] = {}
_EXPLAINERS_LOCK = threading.Lock()


def explainer_for(weights: str | os.PathLike) -> nn.Module:
    """The fp32 training-form network of a weights file, in eval mode, shared per process per file version.

    Not the recognizer's inference form (``for_inference``): that folds BatchNorm into the
    convolutions, may run in bf16 and runs under ``inference_mode``, while Grad-CAM needs
    the convolution activations as they are and gradients through them. Int8 files need
    nothing special: ``load_checkpoint`` dequantises them (int8 x per-channel scale) into
    ordinary float32 parameters, so the loaded network is differentiable like any other.
    Parameters are frozen: Grad-CAM needs gradients w.r.t. activations only.
    """
    from fer_core.models.checkpoint import load_checkpoint, resolve_weights

    p = resolve_weights(weights).resolve()
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size)
    with _EXPLAINERS_LOCK:
        if key not in _EXPLAINERS:
            model, _cfg = load_checkpoint(p)
            model = model.float().eval().requires_grad_(False)
            for k in [k for k in _EXPLAINERS if k[0] == key[0]]:
                del _EXPLAINERS[k]  # an older version of the same file
            _EXPLAINERS[key] = model
        return _EXPLAINERS[key]


_LAST_CONV: weakref.WeakKeyDictionary[nn.Module, nn.Conv2d] = weakref.WeakKeyDictionary()


def last_conv(net: nn.Module) -> nn.Conv2d:
    """The last ``nn.Conv2d`` a forward pass of ``net`` runs (see the module docstring for why this layer).

    Found by running one blank face rather than by module order, because registration order
    need not be execution order (a residual block may register its shortcut after its body).
    Found once per network: every later explanation reuses it.
    """
    if net not in _LAST_CONV:
        _LAST_CONV[net] = _find_last_conv(net)
    return _LAST_CONV[net]


def _find_last_conv(net: nn.Module) -> nn.Conv2d:
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(net).__name__} has no Conv2d layer to explain")
    called: list[nn.Conv2d] = []
    handles = [c.register_forward_hook(lambda mod, _i, _o: called.append(mod)) for c in convs]
    try:
        with torch.no_grad():
            net(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, device=_device(net)))
    finally:
        for h in handles:
            h.remove()
    return called[-1] if called else convs[-1]


def _device(net: nn.Module) -> torch.device:
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_crops(crops: np.ndarray) -> np.ndarray:
    if not isinstance(crops, np.ndarray):
        raise ValueError(f"crops must be a numpy array, got {type(crops).__name__}")
    if crops.dtype != np.uint8:
        raise ValueError(f"crops must be uint8 grey levels (0-255), got dtype {crops.dtype}")
    if crops.ndim != 3 or crops.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"crops must have shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {crops.shape}")
    return crops


def _targets(target: int | Sequence[int] | None, n: int, predicted: torch.Tensor | None,
             num_classes: int) -> torch.Tensor:
    if target is None:
        assert predicted is not None
        return predicted
    if isinstance(target, int | np.integer):
        t = torch.full((n,), int(target), dtype=torch.long)
    else:
        t = torch.as_tensor(np.asarray(target, dtype=np.int64).reshape(-1))
        if len(t) != n:
            raise ValueError(f"target has {len(t)} entries for {n} faces")
    if len(t) and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"target classes must lie in 0..{num_classes - 1}, got {t.tolist()}")
    return t


def _normalised(maps: torch.Tensor) -> torch.Tensor:
    """Each map divided by its own maximum, so every face uses the full colour scale; an all-zero map
    (no positive evidence anywhere) stays zero instead of dividing by zero."""
    maps = torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp_min(1e-30), torch.zeros_like(maps))


def gradcam(model: nn.Module, crops: np.ndarray,
            target: int | Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 48, 48) face crops -> (maps float32 (N, 48, 48) in [0, 1], explained class per face (N,) int).

    ``target``: one class for all faces, one per face, or None for each face's predicted class
    (the one the app shows). Crops are fed as the recognizer feeds them (/255, the model
    normalises itself). A single network's map is Grad-CAM of its logit for the class.

    For an ``Ensemble`` the explained score is the ensemble's own output, the log of the mean
    of its members' probabilities (the averaged score the app reports; Grad-CAM of a
    log-probability rather than a logit, which is fine: it is still a score that rises with
    the evidence), not any one member's. Each member's last conv is explained in turn with the
    whole ensemble as the forward function, so each member's map is that member's
    contribution to the averaged score; the signed maps are averaged and only then ReLU'd, so
    a region one member counts against the class and another for it nets out as the ensemble
    does. A member that barely moves the average contributes a faint map, unlike averaging
    maps normalised per member, which would give it equal say. Because a probability only rises
    where a class gains on the others, a class that is not among the top ones may get an
    all-zero map (no positive evidence), returned as zeros.
    """
    crops = _check_crops(crops)
    n = len(crops)
    if n == 0:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.float32), np.zeros(0, np.int64)
    device = _device(model)
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device).reshape(n, 1, IMAGE_SIZE, IMAGE_SIZE).float() / 255
    nets = list(model.members) if isinstance(model, Ensemble) else [model]
    threads = 1 if n <= SMALL_BATCH else None  # as the recognizer: measured 7.5 s -> 0.23 s, 1 face, busy cores
    with _ATTRIBUTION_LOCK, torch_threads(threads), torch.inference_mode(False), torch.enable_grad():
        was_training = model.training
        model.eval()  # dropout off, BatchNorm on its running statistics: the network as it predicts
        try:
            with torch.no_grad():
                scores = model(x)
            t = _targets(target, n, scores.argmax(1).cpu() if target is None else None, scores.shape[1])
            raw = torch.zeros(n, 1, IMAGE_SIZE, IMAGE_SIZE, device=device)
            for net in nets:
                cam = LayerGradCam(model, last_conv(net))
                a = cam.attribute(x, target=t.to(device), relu_attributions=len(nets) == 1)
                raw += LayerAttribution.interpolate(a.detach().float(), (IMAGE_SIZE, IMAGE_SIZE), "bilinear")
            raw /= len(nets)
        finally:
            model.train(was_training)
    maps = _normalised(raw[:, 0].relu())
    return maps.cpu().numpy().astype(np.float32), t.numpy().astype(np.int64)


def overlay(crop: np.ndarray, heat: np.ndarray, size: int = 192, alpha: float = 0.45) -> np.ndarray:
    """A uint8 RGB (size, size, 3) picture of the grey face with the heat map (TURBO colours) blended on top.

    Upscaled because a 48x48 crop is too small to read on screen; the face cubic-resampled to stay
    sharp, the map bilinearly, as Grad-CAM's coarse grid has no detail to sharpen.
    """
    crop, heat = np.asarray(crop), np.asarray(heat, dtype=np.float32)
    if crop.ndim != 2 or crop.dtype != np.uint8:
        raise ValueError(f"crop must be a grey uint8 (H, W) image, got {crop.dtype} {crop.shape}")
    if heat.ndim != 2:
        raise ValueError(f"heat must be a 2-D map, got shape {heat.shape}")
    if size < 1 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"need size >= 1 and 0 <= alpha <= 1, got size={size}, alpha={alpha}")
    face = cv2.cvtColor(cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2RGB)
    h = cv2.resize(np.nan_to_num(heat).clip(0, 1), (size, size), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap((h * 255 + 0.5).astype(np.uint8), cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(face, 1.0 - alpha, colour, alpha, 0.0)
