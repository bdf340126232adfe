"""Saving and loading weights: safetensors only, never pickle.

A checkpoint is ``<name>.safetensors`` whose metadata carries the ``ModelConfig`` (so the
file alone is enough to rebuild the network), plus ``<name>_config.json`` beside it for
people and tools that read JSON. A user-supplied file is never unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fer_core.atomic import write_atomic, write_json
from fer_core.models import ModelConfig, create_model

CONFIG_KEY = "fer_model_config"


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message says which and why."""


def _stored_in_half(tensor: torch.Tensor) -> bool:
    """Conv and dense weights: nearly all of the bytes. BatchNorm statistics stay fp32 (their
    variances can fall below float16's normal range)."""
    return tensor.is_floating_point() and tensor.ndim > 1


def round_to_half(model: nn.Module) -> nn.Module:
    """Give ``model`` exactly the values a ``half=True`` checkpoint of it will load with, so
    what is measured before shipping is what ships."""
    with torch.no_grad():
        for t in model.state_dict().values():
            if _stored_in_half(t):
                t.copy_(t.half())
    return model


def save_checkpoint(model: nn.Module, config: ModelConfig, path: str | os.PathLike, half: bool = False) -> Path:
    """``half`` stores the weight tensors as float16: half the file, for models kept in git.
    Loading casts back to float32; inference runs in bf16 or fp32 either way."""
    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if _stored_in_half(v) else v for k, v in state.items()}
    meta = {CONFIG_KEY: json.dumps(config.to_dict())}
    write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
    write_json(path.with_name(path.stem + "_config.json"), config.to_dict())
    return path


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
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{p}: not a readable safetensors file ({exc})") from None
    if CONFIG_KEY not in meta:
        raise CheckpointError(f"{p}: no model config in its metadata; it was not saved by fer_core")
    try:
        config = ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]))
        model = create_model(config.arch, config.num_classes)
        model.load_state_dict(state)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{p}: weights do not fit their config ({exc})") from None
    return model.to(device).eval(), config
