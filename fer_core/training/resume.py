"""Where a run stands after each finished epoch, so an interrupted run goes on exactly where it stopped.

Why: on two CPU cores the recipes that reach the best accuracy take longer than a working
session (or a laptop's battery). A one-cycle schedule is fixed in advance, so a stopped run
must continue the same schedule, the same optimizer momentum and the same random streams
(data order, augmentation, dropout) rather than start again: resumed, it ends with the
same history as if it had never stopped.

One file, ``resume.safetensors``: the tensors (network, optimizer buffers, random
generator states) in safetensors and everything else as JSON in its metadata. Nothing is
ever unpickled. It is written atomically after every epoch and removed when the run finishes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from fer_core.common.atomic import write_atomic

STATE_FILE = "resume.safetensors"
_META_KEY = "fer_resume"


@dataclass
class ResumeState:
    epoch: int  # the last finished epoch
    best_acc: float
    elapsed_s: float
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


def save_state(out: Path, *, epoch: int, best_acc: float, elapsed_s: float, model: nn.Module,
               opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator) -> None:
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in opt_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors["rng/data"] = gen.get_state()
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    meta = {"epoch": epoch, "best_acc": best_acc, "elapsed_s": elapsed_s, "data_device": gen.device.type,
            "param_groups": opt_state["param_groups"], "opt_scalars": scalars,
            "scheduler": sched.state_dict() if sched is not None else None}
    write_atomic(out / STATE_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta)}))


def load_state(out: Path) -> ResumeState | None:
    """The saved state, or None when the run has none (finished, or stopped before its first epoch ended)."""
    path = out / STATE_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})[_META_KEY])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        return ResumeState(int(meta["epoch"]), float(meta["best_acc"]), float(meta["elapsed_s"]), tensors, meta)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: the saved training state is unreadable ({exc})") from None


def restore(state: ResumeState, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
            gen: torch.Generator) -> None:
    """Put model, optimizer, schedule and random generators back exactly as they were after ``state.epoch``."""
    missing = [k for k in ("data_device", "opt_scalars", "param_groups", "scheduler") if k not in state.meta]
    missing += [k for k in ("rng/data", "rng/torch") if k not in state.tensors]
    if missing:  # written by an older version, or by hand: refuse before anything is half-restored
        raise ValueError(f"the saved training state lacks {', '.join(missing)}; start the run again instead")
    if state.meta["data_device"] != gen.device.type:
        raise ValueError(f"this run was trained on {state.meta['data_device']}; resume it there (its random "
                         f"streams cannot be carried over to {gen.device.type})")
    try:
        _restore_tensors(state, model, opt, sched, gen)
    except (RuntimeError, KeyError, TypeError) as exc:  # a state of another network or optimizer
        raise ValueError(f"the saved training state does not fit this run ({exc})") from None


def _restore_tensors(state: ResumeState, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
                     gen: torch.Generator) -> None:
    t = state.tensors
    model.load_state_dict({k.removeprefix("model/"): v for k, v in t.items() if k.startswith("model/")})
    per_param: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in state.meta["opt_scalars"].items()}
    for key, value in t.items():
        if key.startswith("opt/"):
            _, index, name = key.split("/", 2)
            per_param.setdefault(int(index), {})[name] = value
    opt.load_state_dict({"state": per_param, "param_groups": state.meta["param_groups"]})
    if sched is not None and state.meta["scheduler"] is not None:
        sched.load_state_dict(state.meta["scheduler"])
    gen.set_state(t["rng/data"])
    torch.set_rng_state(t["rng/torch"])
    if "rng/cuda" in t and torch.cuda.is_available():
        torch.cuda.set_rng_state(t["rng/cuda"])


def clear_state(out: Path) -> None:
    (out / STATE_FILE).unlink(missing_ok=True)
