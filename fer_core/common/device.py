"""Picking the device and numeric precision for a run.

bf16 autocast is the default wherever the hardware does bf16 arithmetic natively (CUDA,
and CPUs with AMX-bf16 or AVX512-bf16): measured here it trains the shipped network 2.5x
faster than fp32 with the same accuracy. Elsewhere bf16 would be emulated and slower,
so fp32 is used.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The fields of /proc/cpuinfo (the same for every core here); empty where there is none."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}


AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
"""PyTorch's, oneDNN's and FBGEMM's (int8) own switches that hold their kernels to AVX2: with these in
the environment a newer CPU runs as an AVX2-only laptop does. They are read when a process starts."""
ISA_CAPS = tuple(AVX2_ONLY)


def isa_capped() -> bool:
    """Whether the kernels are held to AVX2 or less, whatever the CPU could do."""
    caps = [os.environ.get(k, "").lower() for k in ISA_CAPS]
    return any(c and c.startswith(("avx2", "default", "sse")) for c in caps)


def cpu_has_native_bf16() -> bool:
    flags = _cpuinfo().get("flags", "").split()
    return ("amx_bf16" in flags or "avx512_bf16" in flags) and not isa_capped()


def cpu_flags() -> str:
    """The CPU features that decide which kernels run (AVX2, AVX-512, bf16, AMX), and the bf16 ones it
    lacks: a speed figure means little without them."""
    flags = _cpuinfo().get("flags", "").split()
    if not flags:
        return "flags unknown"
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    missing = [f for f in ("avx512_bf16", "amx_bf16") if f not in flags]
    capped = "; kernels held to AVX2 (" + ", ".join(f"{k}={os.environ[k]}" for k in ISA_CAPS if os.environ.get(k)) + ")"
    return " ".join(shown) + (f"; no {', '.join(missing)}" if missing else "") + (capped if isa_capped() else "")


def cpu_name() -> str:
    """The CPU's name with its family and model numbers: a cloud machine's name ("AMD EPYC") stays the
    same when the host under it changes generation, and the speed figures change with it."""
    info = _cpuinfo()
    if "model name" not in info:
        return platform.processor() or platform.machine()
    return (f"{info['model name']}, family {info.get('cpu family', '?')} model {info.get('model', '?')} "
            f"({torch.get_num_threads()} threads)")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError(f"unknown device '{device}': use auto, cpu or cuda")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


DEFAULT_THREADS = torch.get_num_threads()
"""The process's intra-op thread count, as torch chose it at start (or ``OMP_NUM_THREADS`` set it)."""


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (None = the process's default, ``DEFAULT_THREADS``).

    The count is per calling thread and costs nanoseconds to change. Small convolutions (a
    frame's few faces, MTCNN's pyramid) run on one: measured on 2 busy cores, a second thread
    made them up to 30x slower, its OpenMP workers spin-waiting on each other. None restores the
    default rather than keeping the caller's count: a thread started while another held one thread
    starts with one too (torch copies the count), and a page's big batch must not inherit that."""
    n = DEFAULT_THREADS if n is None else n
    old = torch.get_num_threads()
    if n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
