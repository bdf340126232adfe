"""Speed of every registered architecture on this machine: the figures in the README come from here.

    fer-bench [--arch NAME ...] [--weights FILE ...] [--precision auto|fp32|bf16]
    fer-bench --forms [--weights FILE ...]   # each form a model can run in (fp32, bf16, int8), on this
                                             # CPU's own kernels and held to AVX2, and which one the app picks
    fer-bench --pipeline        # the whole recognition pipeline (fer_core.recognition.pipeline_bench)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from fer_core.common.device import (
    AVX2_ONLY,
    autocast,
    cpu_flags,
    cpu_has_native_bf16,
    cpu_name,
    resolve_precision,
    torch_threads,
)
from fer_core.models.checkpoint import load_checkpoint, read_int8_calibration
from fer_core.models.inference import choose_form, for_inference
from fer_core.models.quantize import Int8Calibration
from fer_core.models.zoo import count_macs, count_params, create_model, list_models

TRAIN_IMAGES = 28709  # FER-2013 Training split


def images_per_second(fn: Callable[[], object], n_images: int, min_seconds: float = 2.0) -> float:
    """Calls ``fn`` (which handles ``n_images``) repeatedly for ``min_seconds`` after two warm-up calls."""
    fn()
    fn()  # warm-up: oneDNN picks its kernels on the first calls
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        fn()
        done += n_images
    return done / (time.perf_counter() - t0)


def training_step(model: torch.nn.Module, precision: str, batch: int,
                  device: torch.device = torch.device("cpu")) -> Callable[[], None]:
    """One SGD step of ``model`` on a random batch, as the training loop runs it (channels-last,
    autocast): the unit every training-throughput figure of the project is made of."""
    model = model.to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 1, 48, 48, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch,), device=device)

    def step() -> None:
        with autocast(device, precision):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def inference_speed(model: torch.nn.Module, precision: str, calibration: Int8Calibration | None = None,
                    seconds: float = 2.0, b1_threads: int | None = None) -> tuple[float, float]:
    """(ms per face at batch 1, faces/s at batch 256) of ``model`` on the CPU as the app runs it:
    the figures of this bench and of every model card. ``b1_threads``: threads for batch 1 (None:
    the process's), e.g. 1, as the app runs a few faces (``fer_core.recognition.recognizer``)."""
    model = for_inference(model, precision, calibration)
    x = torch.rand(256, 1, 48, 48).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(torch.device("cpu"), precision):
        many = images_per_second(lambda: model(x), 256, seconds)
        with torch_threads(b1_threads):
            one = images_per_second(lambda: model(x[:1]), 1, seconds)
    return 1000 / one, many


def bench_arch(name: str, precision: str, batch: int = 128) -> dict:
    return bench_model(name, create_model(name), precision, batch)


def bench_weights(path: str, precision: str, batch: int = 128) -> dict:
    """A saved model, e.g. the shipped ensemble (an ensemble is described by its file, not by a name)."""
    model, cfg = load_checkpoint(path)
    return bench_model(cfg.label, model, precision, batch)


def bench_model(label: str, model: torch.nn.Module, precision: str, batch: int = 128) -> dict:
    device = torch.device("cpu")
    params, macs = count_params(model), count_macs(model)
    train_rate = images_per_second(training_step(model, precision, batch, device), batch)
    latency_ms, infer_rate = inference_speed(model, precision)
    return {"arch": label, "params": params, "macs": macs, "train_img_s": train_rate,
            "infer_b256_img_s": infer_rate, "latency_b1_ms": latency_ms,
            "epoch_minutes": TRAIN_IMAGES / train_rate / 60, "precision": precision}


KERNELS = {"native": "this CPU's own kernels", "avx2": "kernels held to AVX2 (a CPU without bf16)"}
"""This CPU's own kernels, and kernels held to AVX2 (``AVX2_ONLY``), with their names for people."""


def forms_here(weights: str, seconds: float = 2.0) -> list[dict]:
    """Each form ``weights`` can run in under this process's kernels: speed (batch 1 on one thread, as the
    app classifies a frame's few faces), and which one the app picks."""
    model, _ = load_checkpoint(weights)
    calibration = read_int8_calibration(weights)
    forms = ["fp32", *(["bf16"] if cpu_has_native_bf16() else []), *(["int8"] if calibration else [])]
    chosen = choose_form("auto", calibration)
    rows = []
    for form in forms:
        latency_ms, many = inference_speed(model, form, calibration, seconds, b1_threads=1)
        rows.append({"form": form, "latency_b1_ms": round(latency_ms, 3), "throughput_b256_img_s": round(many),
                     "chosen": form == chosen, "cpu_flags": cpu_flags()})
    return rows


def measure_forms(weights: str, seconds: float = 2.0) -> list[dict]:
    """``forms_here`` under each of ``KERNELS``, each in a fresh process (the kernel switches are read
    at start-up): rows with ``kernels`` added. ``seconds``: of timing per form and batch size."""
    rows = []
    for kernels in KERNELS:
        env = {k: v for k, v in os.environ.items() if k not in AVX2_ONLY}
        if kernels == "avx2":
            env.update(AVX2_ONLY)
        out = subprocess.run([sys.executable, "-m", "fer_core.evaluation.bench", "--forms-here", str(weights),
                              "--seconds", str(seconds)],
                             env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"measuring the forms of {weights} failed: {out.stderr.strip()[-500:]}")
        rows += [{"kernels": kernels, **r} for r in json.loads(out.stdout.strip().splitlines()[-1])]
    return rows


def format_forms(weights: str, rows: list[dict], calibration: Int8Calibration | None) -> str:
    check = ("no int8 calibration in the file" if calibration is None else
             f"int8 on the validation slice (n={calibration.val_faces}): {100 * calibration.val_accuracy_int8:.2f}% "
             f"against {100 * calibration.val_accuracy_fp32:.2f}% in fp32 ({-calibration.loss_points:+.2f} points)")
    lines = [f"{weights}: {check}", "",
             "| kernels | form | latency b1, 1 thread (ms) | infer img/s (b256) | chosen by the app |",
             "|---|---|---:|---:|---|"]
    lines += [f"| {r['kernels']} ({r['cpu_flags']}) | {r['form']} | {r['latency_b1_ms']:.2f} | "
              f"{r['throughput_b256_img_s']} | {'yes' if r['chosen'] else ''} |" for r in rows]
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    head = ("| arch | params | MACs/img | train img/s | infer img/s (b256) | latency b1 (ms) "
            "| min/epoch (28,709 imgs) |\n|---|---:|---:|---:|---:|---:|---:|")
    body = [f"| {r['arch']} | {r['params'] / 1e6:.2f} M | {r['macs'] / 1e6:.1f} M | {r['train_img_s']:.0f} | "
            f"{r['infer_b256_img_s']:.0f} | {r['latency_b1_ms']:.2f} | {r['epoch_minutes']:.1f} |" for r in rows]
    return "\n".join([head, *body])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fer-bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", nargs="*", default=None, choices=list_models(), metavar="NAME",
                    help="registered networks (default: every one but tiny, unless --weights is given)")
    ap.add_argument("--weights", nargs="*", default=[], metavar="FILE",
                    help="saved models to add, e.g. weights/accurate.safetensors for the shipped ensemble")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--forms", action="store_true",
                    help="each form the --weights can run in (default: the shipped models), on this CPU's own "
                         "kernels and held to AVX2, with the one the app picks")
    ap.add_argument("--forms-here", metavar="FILE", help=argparse.SUPPRESS)  # one process of --forms
    ap.add_argument("--seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.forms_here:
        print(json.dumps(forms_here(args.forms_here, args.seconds)))
        return 0
    if args.forms:
        from fer_core.common.paths import WEIGHTS_DIR

        print(f"torch {torch.__version__}, {cpu_name()}")
        for w in args.weights or [str(p) for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))]:
            print(format_forms(w, measure_forms(w), read_int8_calibration(w)), end="\n\n")
        return 0
    archs = args.arch if args.arch is not None else [] if args.weights else [a for a in list_models() if a != "tiny"]
    precision = resolve_precision(args.precision, torch.device("cpu"))
    print(f"torch {torch.__version__}, {cpu_name()}, precision {precision}")
    print(format_table([bench_arch(a, precision) for a in archs] + [bench_weights(w, precision) for w in args.weights]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
