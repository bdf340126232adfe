"""Saving and loading weights: safetensors only, never pickle.

A checkpoint is ``<name>.safetensors`` whose metadata carries the ``ModelConfig`` (so the
file alone is enough to rebuild the network, an ensemble from its member list), plus
``<name>_config.json`` beside it for people and tools that read JSON. Loading reads the
metadata, so files saved with an old ensemble code keep loading (``zoo.legacy_members``).
A user-supplied file is never unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fer_core.common.atomic import write_atomic, write_json
from fer_core.models.quantize import CALIBRATION_KEY, Int8Calibration
from fer_core.models.zoo import ModelConfig

CONFIG_KEY = "fer_model_config"


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message says which and why."""


STORAGES = ("float32", "float16", "int8")
SHIPPED_FILE_LIMIT = 20_000_000  # bytes: the most any file in weights/ may hold, so git stays small
SCALE_SUFFIX = ".int8_scale"


def _compact(tensor: torch.Tensor) -> bool:
    """Conv and dense weights: nearly all of the bytes, and the only tensors stored compactly.
    BatchNorm statistics stay fp32 (their variances can fall below float16's normal range)."""
    return tensor.is_floating_point() and tensor.ndim > 1


def _int8(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one float32 scale per output channel: each filter keeps its own range,
    which is what keeps a convolution's accuracy within noise of float32."""
    scale = tensor.float().abs().amax(dim=tuple(range(1, tensor.ndim)), keepdim=True).clamp_min(1e-12) / 127
    return (tensor.float() / scale).round().clamp(-127, 127).to(torch.int8), scale


def stored_value(tensor: torch.Tensor, storage: str) -> torch.Tensor:
    """The float32 values a file in ``storage`` gives back for ``tensor``."""
    if storage == "float32" or not _compact(tensor):
        return tensor.float()
    if storage == "float16":
        return tensor.half().float()
    q, scale = _int8(tensor)
    return q.float() * scale


def round_to_storage(model: nn.Module, storage: str) -> nn.Module:
    """Give ``model`` exactly the values a checkpoint of it in ``storage`` will load with, so
    what is measured before shipping is what ships."""
    with torch.no_grad():
        for t in model.state_dict().values():
            if _compact(t):
                t.copy_(stored_value(t, storage))
    return model


def stored_bytes(model: nn.Module, storage: str) -> int:
    """The tensor bytes of a checkpoint of ``model`` in ``storage`` (the header adds a few kB)."""
    per_value = {"float32": 4, "float16": 2, "int8": 1}[storage]
    return sum(t.numel() * per_value + (4 * t.shape[0] if storage == "int8" else 0) if _compact(t)
               else t.numel() * t.element_size() for t in model.state_dict().values())


def storage_for(sizes: dict[str, int]) -> str | None:
    """Given a model's stored bytes per storage: float16 where it fits the weights/ limit, else int8
    where that fits, else None (too big)."""
    return next((s for s in ("float16", "int8") if sizes[s] <= SHIPPED_FILE_LIMIT), None)


def shipped_storage(model: nn.Module) -> str | None:
    return storage_for({s: stored_bytes(model, s) for s in ("float16", "int8")})


def save_checkpoint(model: nn.Module, config: ModelConfig, path: str | os.PathLike,
                    storage: str = "float32", int8: Int8Calibration | None = None) -> Path:
    """``storage`` float16 halves the file, int8 quarters it (per-channel scales), for models kept in
    git. Loading always gives float32 back; inference runs in bf16 or fp32 either way, or in the static
    int8 form that ``int8`` (saved in the metadata) describes."""
    if storage not in STORAGES:
        raise ValueError(f"unknown storage '{storage}' (known: {', '.join(STORAGES)})")
    path = Path(path)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu").contiguous()
        if _compact(v) and storage == "float16":
            v = v.half()
        elif _compact(v) and storage == "int8":
            v, state[k + SCALE_SUFFIX] = _int8(v)
        state[k] = v
    meta = {CONFIG_KEY: json.dumps(config.to_dict())}
    if int8 is not None:
        meta[CALIBRATION_KEY] = int8.to_json()
    write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
    write_json(path.with_name(path.stem + "_config.json"), config.to_dict())
    return path


def _dequantized(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """int8 tensors back to float32 with their scales; any other tensor as stored."""
    out = {k: v for k, v in state.items() if not k.endswith(SCALE_SUFFIX)}
    for k, scale in state.items():
        if k.endswith(SCALE_SUFFIX):
            base = k[: -len(SCALE_SUFFIX)]
            if out.get(base) is None or out[base].dtype != torch.int8:
                raise ValueError(f"scale {k} has no int8 tensor {base} beside it")
            out[base] = out[base].float() * scale.float()
    unscaled = [k for k, v in out.items() if v.dtype == torch.int8]
    if unscaled:
        raise ValueError(f"int8 tensor {unscaled[0]} has no {SCALE_SUFFIX} beside it")
    return out


def resolve_weights(path: str | os.PathLike) -> Path:
    """A .safetensors file, or a run/weights folder holding ``model.safetensors``."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise CheckpointError(f"no weights file at {p}")
    if p.suffix != ".safetensors":
        raise CheckpointError(f"{p}: weights must be a .safetensors file (pickled checkpoints are refused)")
    return p


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Rebuild the network from the file's own config and load its weights, in eval mode."""
    p = resolve_weights(path)
    meta, state = _metadata(p), _tensors(p)
    if CONFIG_KEY not in meta:
        raise CheckpointError(f"{p}: no model config in its metadata; it was not saved by fer_core")
    try:
        config = ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]))
        model = config.create()
        model.load_state_dict(_dequantized(state))
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{p}: weights do not fit their config ({exc})") from None
    return model.to(device).eval(), config


def _metadata(path: Path) -> dict[str, str]:
    """A weights file's metadata (its config, its int8 calibration), read from its header alone."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    """A weights file's tensors, as stored."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def read_int8_calibration(path: str | os.PathLike) -> Int8Calibration | None:
    """The int8 calibration saved in a weights file (``fer_core.models.quantize``); None where it has none
    or it cannot be read (the model then runs in float, as before)."""
    text = _metadata(resolve_weights(path)).get(CALIBRATION_KEY)
    if text is None:
        return None
    try:
        return Int8Calibration.from_json(text)
    except (ValueError, KeyError, TypeError):
        return None


def save_int8_calibration(path: str | os.PathLike, calibration: Int8Calibration | None) -> Path:
    """Add (or, with None, remove) the int8 calibration of a weights file in place; its tensors are
    written back byte for byte, and the file is replaced atomically."""
    p = resolve_weights(path)
    meta, state = _metadata(p), _tensors(p)
    meta.pop(CALIBRATION_KEY, None)
    if calibration is not None:
        meta[CALIBRATION_KEY] = calibration.to_json()
    write_atomic(p, lambda tmp: save_file(state, str(tmp), metadata=meta))
    return p


def read_config(path: str | os.PathLike) -> ModelConfig:
    """The config a weights file carries (architecture, classes), read from its metadata without
    loading a tensor: what a page needs to name a model's classes before (or without) scoring it."""
    p = resolve_weights(path)
    try:
        return ModelConfig.from_dict(json.loads(_metadata(p)[CONFIG_KEY]))
    except (KeyError, ValueError, TypeError) as exc:  # CheckpointError is a ValueError
        raise CheckpointError(f"{p}: no readable model config ({exc})") from None
